"""Preprocessing and top-k ImageNet classification."""
from __future__ import annotations

import torch
from torch import nn

from .preprocess import Pipeline, open_image, transform
from .weights import categories


def model_transforms(model: nn.Module, image_size: int | None = None) -> Pipeline:
    """The eval transform for this model: the one it carries (a fine-tuned model's), else its weights' metadata
    for its arch; ``image_size`` replaces the crop size (keeping the weights' resize ratio)."""
    own = getattr(model, "transforms", None)
    if own is not None and image_size is None:
        return own
    return transform("eval", image_size, arch=getattr(model, "arch", None))


def model_categories(model: nn.Module) -> list[str]:
    names = getattr(model, "categories", None)
    if names:
        return list(names)
    n = model.fc.out_features
    return categories() if n == 1000 else [f"class {i}" for i in range(n)]


def to_batch(model: nn.Module, image, image_size: int | None = None) -> torch.Tensor:
    """One image (path, bytes or PIL, any mode) → a normalised 1×3×H×W tensor on the model's device."""
    x = model_transforms(model, image_size)(open_image(image)).unsqueeze(0)
    return x.to(next(model.parameters()).device)


@torch.inference_mode()
def classify(model: nn.Module, image, top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` (label, probability) pairs, most likely first."""
    was_training = model.training
    model.eval()
    try:
        probs = model(to_batch(model, image)).float().softmax(-1)[0]
    finally:
        model.train(was_training)
    p, idx = probs.topk(min(top_k, probs.numel()))
    names = model_categories(model)
    return [(names[i], float(v)) for v, i in zip(p.tolist(), idx.tolist())]
