"""What the network sees: each stage's feature maps, and where it looks for a class (Grad-CAM).

Feature maps come from walking the ResNet's stages in order (stem → conv2_x … conv5_x) and keeping
the outputs asked for. We do not use ``torchvision.models.feature_extraction`` here: its FX tracing
patches ``nn.Module.__call__`` for the whole process while it traces, so in a server any other
user's forward pass running at that moment breaks (seen as "module is not installed as a
submodule"). The walk needs no tracing, no hooks, no cache, and leaves the shared model untouched.

Grad-CAM needs a gradient with respect to conv5_x's output, not the weights: we compute that
activation without grad, make *it* require grad, and run only the head (average pool → fc) with
autograd on. Every call keeps its own tensors, so concurrent users never share state.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms as T

from .images import open_image
from .model import build_model
from .predict import model_categories, model_transforms, to_batch

# The paper's stage names → the modules whose outputs they are. conv1 is the 7×7 conv's output after BN and
# ReLU (node "relu", 112×112 at 224 px), i.e. *before* the 3×3 max pool, as in the paper's Table 1.
STAGE_NODES = {"conv1": "relu", "conv2_x": "layer1", "conv3_x": "layer2", "conv4_x": "layer3", "conv5_x": "layer4"}
ALL_STAGES = tuple(STAGE_NODES)

# What each stage tends to respond to in an ImageNet-trained network (data, shown in the UI).
STAGE_MEANING = {
    "conv1": {"en": "edges, colour blobs and simple gradients, at half the image's resolution",
              "zh-CN": "边缘、色块和简单的明暗变化，分辨率是原图的一半"},
    "conv2_x": {"en": "corners, simple textures and repeated patterns",
                "zh-CN": "角点、简单纹理和重复的图案"},
    "conv3_x": {"en": "richer textures and small motifs (fur, mesh, stripes, eyes)",
                "zh-CN": "更丰富的纹理和小图案（毛发、网格、条纹、眼睛）"},
    "conv4_x": {"en": "object parts (faces, wheels, legs), less tied to where they are",
                "zh-CN": "物体的部件（脸、车轮、腿），与位置的关系变弱"},
    "conv5_x": {"en": "whole objects and class evidence; Grad-CAM reads this stage",
                "zh-CN": "整个物体和类别的证据；Grad-CAM 读取的就是这一层"},
}

def _check_stages(stages) -> tuple[str, ...]:
    stages = tuple(stages)
    unknown = [s for s in stages if s not in STAGE_NODES]
    if unknown or not stages:
        raise ValueError(f"unknown stage {unknown[0] if unknown else '(none)'}; choose from {', '.join(ALL_STAGES)}")
    return stages


def stage_outputs(model: nn.Module, x: torch.Tensor, stages=ALL_STAGES) -> dict[str, torch.Tensor]:
    """``{stage: N×C×H×W}`` by running the stem and stages in order, stopping after the last one asked for."""
    wanted = set(_check_stages(stages))
    out = {}
    x = model.relu(model.bn1(model.conv1(x)))
    if "conv1" in wanted:
        out["conv1"] = x
    x = model.maxpool(x)
    for name, layer in model.stages():
        if len(out) == len(wanted):
            break
        x = layer(x)  # blocks add into their own branch output, never into x, so kept outputs stay intact
        if name in wanted:
            out[name] = x
    return out


def to_input(model: nn.Module, image, image_size: int | None = None) -> torch.Tensor:
    """An image (path, bytes, PIL) or a ready 1×3×H×W tensor → the model's normalised input batch.

    ``image_size`` replaces the weights' 224 px crop (resize the short side to size·256/224, crop).
    """
    if isinstance(image, torch.Tensor):
        x = image if image.dim() == 4 else image.unsqueeze(0)
        return x.to(next(model.parameters()).device)
    if image_size is None:
        return to_batch(model, image)
    base = model_transforms(model)
    mean = getattr(base, "mean", (0.485, 0.456, 0.406))
    std = getattr(base, "std", (0.229, 0.224, 0.225))
    tf = T.Compose([T.Resize(round(image_size * 256 / 224), antialias=True), T.CenterCrop(image_size),
                    T.ToTensor(), T.Normalize(mean, std)])
    return tf(open_image(image)).unsqueeze(0).to(next(model.parameters()).device)


def model_view(model: nn.Module, image, image_size: int | None = None):
    """The picture the network actually sees (resized, centre-cropped) as a PIL image, for overlays."""
    x = to_input(model, image, image_size)[0].detach().float().cpu()
    base = model_transforms(model)
    mean = torch.tensor(getattr(base, "mean", (0.485, 0.456, 0.406))).view(3, 1, 1)
    std = torch.tensor(getattr(base, "std", (0.229, 0.224, 0.225))).view(3, 1, 1)
    return T.functional.to_pil_image((x * std + mean).clamp(0, 1))


def feature_maps(model: nn.Module, image, stages=ALL_STAGES, *, image_size: int | None = None) -> dict[str, torch.Tensor]:
    """``{stage: C×H×W tensor}`` for one image, in the paper's stage names, from one forward pass."""
    stages = _check_stages(stages)
    with torch.inference_mode():
        out = stage_outputs(model, to_input(model, image, image_size), stages)
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
    if not (hasattr(model, "avgpool") and hasattr(model, "fc")):
        raise ValueError("Grad-CAM here needs a ResNet-style model ending in avgpool → fc")
    idx = resolve_target(model, target)
    x = to_input(model, image, image_size)
    with torch.inference_mode(False), torch.enable_grad():
        if layer4 is None:
            with torch.no_grad():
                layer4 = stage_outputs(model, x, ("conv5_x",))["conv5_x"]
        a = layer4.reshape(1, *layer4.shape[-3:]).clone().float().requires_grad_(True)  # clone: inference tensors → normal
        fc = model.fc
        logits = F.linear(torch.flatten(model.avgpool(a), 1), fc.weight.float(),
                          None if fc.bias is None else fc.bias.float())
        probs = logits.detach().softmax(-1)[0]
        if idx is None:
            idx = int(probs.argmax())
        (grad,) = torch.autograd.grad(logits[0, idx], a)
    weights = grad.mean(dim=(2, 3), keepdim=True)           # how much each channel pushes the class up
    cam = F.relu((weights * a.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    hi = float(cam.max())
    heat = (cam / hi).clamp(0, 1) if hi > 0 else torch.zeros_like(cam)
    return heat.cpu().numpy(), idx, model_categories(model)[idx], float(probs[idx])


def stage_info(model: nn.Module, image_size: int = 224) -> list[dict]:
    """Per stage: name, graph node, output shape (C, H, W) at ``image_size`` and its meaning (en, zh-CN)."""
    arch = getattr(model, "arch", None)
    if arch is None:
        raise ValueError("stage_info needs a model built by resnet.build_model")
    shapes = _stage_shapes(arch, int(image_size))
    return [{"stage": s, "node": STAGE_NODES[s], "shape": shapes[s], "meaning": STAGE_MEANING[s]} for s in ALL_STAGES]


@lru_cache(maxsize=64)  # building even a weightless ResNet-152 takes ~0.6 s: once per (arch, size), not per request
def _stage_shapes(arch: str, image_size: int) -> dict[str, tuple[int, int, int]]:
    """Exact shapes from a weightless copy (``meta`` device) fed a ``meta`` tensor: no memory, no arithmetic."""
    with torch.device("meta"):
        twin = build_model(arch).eval()
    out = stage_outputs(twin, torch.empty(1, 3, image_size, image_size, device="meta"))
    return {s: tuple(out[s].shape[1:]) for s in ALL_STAGES}


__all__ = ["ALL_STAGES", "STAGE_NODES", "STAGE_MEANING", "feature_maps", "strongest_channels", "grad_cam",
           "stage_info", "model_view", "to_input", "resolve_target", "stage_outputs"]
