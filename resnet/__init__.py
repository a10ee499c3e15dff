"""ResNet Lab's model library: usable without Gradio (only ``resnet.ui`` imports it)."""
from .preprocess import BadImage, open_image
from .models.resnet import ARCHS, STAGES, BasicBlock, Bottleneck, ResNet, build_model
from .predict import classify
from .analysis.summary import layer_table
from .checkpoint import BadCheckpoint, load_checkpoint
from .weights import (WeightsArchMismatch, WeightsCorrupt, WeightsHashMismatch, WeightsNotFound, WeightsOffline,
                      WeightsUnavailable, load_pretrained)

__all__ = ["ARCHS", "STAGES", "BasicBlock", "Bottleneck", "ResNet", "build_model", "layer_table", "load_pretrained",
           "classify", "load_checkpoint", "BadCheckpoint", "open_image", "BadImage", "WeightsUnavailable",
           "WeightsNotFound", "WeightsOffline", "WeightsHashMismatch", "WeightsCorrupt", "WeightsArchMismatch"]
