"""Preprocessing and top-k ImageNet classification."""
from __future__ import annotations

import torch
from torch import nn

from .images import open_image
from .weights import categories, preprocess


def model_transforms(model: nn.Module):
    """The eval transform for this model's weights (torchvision's metadata for its arch)."""
    return getattr(model, "transforms", None) or preprocess(getattr(model, "arch", "resnet18"))


def model_categories(model: nn.Module) -> list[str]:
    names = getattr(model, "categories", None)
    if names:
        return list(names)
    n = model.fc.out_features
    return categories() if n == 1000 else [f"class {i}" for i in range(n)]


def to_batch(model: nn.Module, image) -> torch.Tensor:
    """One image (path, bytes or PIL, any mode) → a normalised 1×3×H×W tensor on the model's device."""
    x = model_transforms(model)(open_image(image)).unsqueeze(0)
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
