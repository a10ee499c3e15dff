"""What the network sees: each stage's feature maps, and where it looks for a class (Grad-CAM).

Feature maps come from the model's own walk over its stages (``ResNet.forward_intermediates``: stem →
conv2_x … conv5_x, keeping the outputs asked for and stopping after the last). Not
``torchvision.models.feature_extraction``: its FX tracing patches ``nn.Module.__call__`` for the whole process
while it traces, so in a server any other user's forward pass running at that moment breaks (seen as "module
is not installed as a submodule"). The walk needs no tracing, no hooks, no cache, and leaves the shared model
untouched.

Grad-CAM needs a gradient with respect to conv5_x's output, not the weights: we compute that
activation without grad, make *it* require grad, and run only the rest of the walk (average pool → fc) with
autograd on. Every call keeps its own tensors, so concurrent users never share state.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..i18n import LANGS, t
from ..models.resnet import build_model
from ..predict import model_categories, model_transforms, to_batch
from ..preprocess import open_image, to_view, transform

# The stages the feature-map view offers, in the paper's names (the model's points): conv1 is the 7×7 conv's
# output after BN and ReLU (112×112 at 224 px), i.e. *before* the 3×3 max pool, as in the paper's Table 1.
ALL_STAGES = ("conv1", "conv2_x", "conv3_x", "conv4_x", "conv5_x")


def _check_stages(stages) -> tuple[str, ...]:
    stages = tuple(stages)
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown or not stages:
        raise ValueError(f"unknown stage {unknown[0] if unknown else '(none)'}; choose from {', '.join(ALL_STAGES)}")
    return stages


def to_input(model: nn.Module, image, image_size: int | None = None) -> torch.Tensor:
    """An image (path, bytes, PIL) or a ready 1×3×H×W tensor → the model's normalised input batch.

    ``image_size`` replaces the weights' 224 px crop (the weights' resize ratio is kept).
    """
    if isinstance(image, torch.Tensor):
        x = image if image.dim() == 4 else image.unsqueeze(0)
        return x.to(next(model.parameters()).device)
    return to_batch(model, image, image_size)


def model_view(model: nn.Module, image, image_size: int | None = None):
    """The picture the network actually sees (resized, centre-cropped) as a PIL image, for overlays; from a
    ready input tensor, the normalisation undone."""
    if isinstance(image, torch.Tensor):
        return to_view(image, arch=getattr(model, "arch", None))
    tf = model_transforms(model, image_size)
    return transform("view", tf.recipe.crop, arch=getattr(model, "arch", None))(open_image(image))


def feature_maps(model: nn.Module, image, stages=ALL_STAGES, *, image_size: int | None = None) -> dict[str, torch.Tensor]:
    """``{stage: C×H×W tensor}`` for one image, in the paper's stage names, from one forward pass."""
    stages = _check_stages(stages)
    with torch.inference_mode():
        out = model.forward_intermediates(to_input(model, image, image_size), stages)
    return {s: out[s][0].float() for s in stages}


def strongest_channels(fmap: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` channels with the largest mean activation (C×H×W or 1×C×H×W), strongest first."""
    if fmap.dim() == 4:
        fmap = fmap[0]
    means = fmap.float().mean(dim=(1, 2))
    k = max(0, min(int(k), means.numel()))
    return means.topk(k).indices.tolist()  # topk is sorted, largest first


def resolve_target(model: nn.Module, target) -> int | None:
    """None/""/"top class" → None (the top class); an int or digit string → that index; else a class name (any case)."""
    if target is None or (isinstance(target, str) and target.strip().lower() in ("", "top", "top class")):
        return None
    names = model_categories(model)
    if isinstance(target, (int, np.integer)) or (isinstance(target, str) and target.strip().isdigit()):
        idx = int(target)
        if not 0 <= idx < len(names):
            raise ValueError(f"class index {idx} is out of range (0–{len(names) - 1})")
        return idx
    wanted = str(target).strip().lower()
    for i, name in enumerate(names):
        if name.lower() == wanted:
            return i
    raise ValueError(f"unknown class {str(target)!r}; type an ImageNet class name such as 'tabby' or an index 0–{len(names) - 1}")


def grad_cam(model: nn.Module, image, target=None, *, image_size: int | None = None,
             layer4: torch.Tensor | None = None) -> tuple[np.ndarray, int, str, float]:
    """Grad-CAM on conv5_x: (heatmap H×W in [0, 1] at the input's resolution, class index, name, probability).

    ``target`` is None (the top class), an index or a class name. ``layer4`` may be a conv5_x output
    (C×H×W) already computed by ``feature_maps`` for the same input, to skip the forward pass.
    The model's parameters are never asked for gradients; only the activation is.
    """
    if not hasattr(model, "forward_intermediates"):
        raise ValueError("Grad-CAM here needs a ResNet built by resnet.build_model (conv5_x → avgpool → fc)")
    idx = resolve_target(model, target)
    x = to_input(model, image, image_size)
    with torch.inference_mode(False), torch.enable_grad():
        if layer4 is None:
            with torch.no_grad():
                layer4 = model.forward_intermediates(x, ("conv5_x",))["conv5_x"]
        weight = next(model.parameters())
        # clone: inference tensors → normal ones that autograd may record
        a = layer4.reshape(1, *layer4.shape[-3:]).to(weight.device, weight.dtype).clone().requires_grad_(True)
        logits = model.forward_intermediates(a, ("fc",), after="conv5_x")["fc"].float()
        probs = logits.detach().softmax(-1)[0]
        if idx is None:
            idx = int(probs.argmax())
        (grad,) = torch.autograd.grad(logits[0, idx], a)
    weights = grad.float().mean(dim=(2, 3), keepdim=True)   # how much each channel pushes the class up
    cam = F.relu((weights * a.detach().float()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    hi = float(cam.max())
    heat = (cam / hi).clamp(0, 1) if hi > 0 else torch.zeros_like(cam)
    return heat.cpu().numpy(), idx, model_categories(model)[idx], float(probs[idx])


def stage_info(model: nn.Module, image_size: int = 224) -> list[dict]:
    """Per stage: name, output shape (C, H, W) at ``image_size``, and what its channels tend to respond to in an
    ImageNet-trained network: ``meaning_key`` (look it up with ``resnet.i18n.t(key, lang)``) and ``meaning``, that
    sentence in every language (``{lang: text}``)."""
    arch = getattr(model, "arch", None)
    if arch is None:
        raise ValueError("stage_info needs a model built by resnet.build_model")
    shapes = _stage_shapes(arch, int(image_size))
    return [{"stage": s, "shape": shapes[s], "meaning_key": f"stage.{s}.meaning",
             "meaning": {L: t(f"stage.{s}.meaning", L) for L in LANGS}} for s in ALL_STAGES]


@lru_cache(maxsize=64)  # building even a weightless ResNet-152 takes ~0.6 s: once per (arch, size), not per request
def _stage_shapes(arch: str, image_size: int) -> dict[str, tuple[int, int, int]]:
    """Exact shapes from a weightless copy (``meta`` device) fed a ``meta`` tensor: no memory, no arithmetic."""
    twin = build_model(arch, device="meta").eval()
    out = twin.forward_intermediates(torch.empty(1, 3, image_size, image_size, device="meta"), ALL_STAGES)
    return {s: tuple(out[s].shape[1:]) for s in ALL_STAGES}


__all__ = ["ALL_STAGES", "feature_maps", "strongest_channels", "grad_cam", "stage_info", "model_view", "to_input",
           "resolve_target"]
