"""What a network keeps, its widest output and its multiply-adds per image, counted on the meta device.

Why: a job's memory and work must be known before it starts, in milliseconds, for any setting the page or the API
allows. One pass on the meta device (no memory, no arithmetic) with forward hooks counts, per top-level part of
the network: the elements of every leaf module's output (what autograd keeps for the backward pass, an
over-count on the safe side: ResNet-18 and -50 at 64-128 px keep 0.67-0.75x of it), the widest single output (the
working set of a pass without gradients), the multiply-adds and the parameters. Jobs scale these per-image counts
by their batch and the bytes per element they use (``act_bytes``).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from . import device as devices
from .models.resnet import build_model

ADAM_BYTES = 16             # fp32 weight, gradient and AdamW's two moments per trainable parameter
SGD_BYTES = 12              # weight, gradient, momentum
TRANSIENT = 3               # widest activation x this: gradients in and out of a layer, or a no-grad pass's in/out


@dataclass(frozen=True)
class Profile:
    """Per-image counts of one network at one input size, per top-level part (``conv1`` … ``layer4``, ``fc``)."""

    saved: dict      # part → elements of its leaf modules' outputs (what a backward pass keeps)
    widest: dict     # part → the largest single leaf output (elements)
    macs: dict       # part → multiply-adds
    params: dict     # part → parameters
    out: dict        # part → elements of the part's own output

    def scaled(self, factor: float) -> "Profile":
        """Roughly this network at ``factor`` times the input side: maps scale by its square, vectors stay (a
        first guess for a size that fits, checked with an exact count before it is offered)."""
        f2 = factor * factor
        grow = lambda d: {k: (v if k in ("avgpool", "fc") else int(v * f2)) for k, v in d.items()}  # noqa: E731
        return Profile(grow(self.saved), grow(self.widest), grow(self.macs), dict(self.params), grow(self.out))

    def total(self, key: str, parts=None) -> int:
        d = getattr(self, key)
        vals = [d[p] for p in (parts if parts is not None else d)]
        return max(vals, default=0) if key == "widest" else sum(vals)


META_LOCK = threading.Lock()  # a meta model is shared; its hooks must see one pass at a time


def count(model: nn.Module, size: int, channels: int = 3) -> Profile:
    """One pass of ``model`` (on the meta device) on a 1×channels×size×size input, counting as ``Profile`` says."""
    saved, widest, macs, params, out = {}, {}, {}, {}, {}
    handles = []

    def leaf_hook(part):
        def hook(m, inputs, output):
            n = output.numel()
            saved[part] += n
            widest[part] = max(widest[part], n)
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                macs[part] += n * (m.in_channels // m.groups) * kh * kw
            elif isinstance(m, nn.Linear):
                macs[part] += n * m.in_features
        return hook

    def part_hook(part):
        def hook(m, inputs, output):
            out[part] = output.numel()
        return hook

    for part, child in model.named_children():
        saved[part] = widest[part] = macs[part] = out[part] = 0
        params[part] = sum(p.numel() for p in child.parameters())
        handles.append(child.register_forward_hook(part_hook(part)))
        handles += [m.register_forward_hook(leaf_hook(part)) for m in child.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(torch.empty(1, channels, size, size, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return Profile(saved, widest, macs, params, out)


@lru_cache(maxsize=16)
def _meta_resnet(arch: str) -> nn.Module:
    return build_model(arch, device="meta")


@lru_cache(maxsize=256)
def resnet_profile(arch: str, size: int) -> Profile:
    """``count`` for ``resnet.build_model(arch)`` at ``size`` px (cached: a few milliseconds to 0.1 s cold)."""
    with META_LOCK:
        return count(_meta_resnet(arch), size)


def act_bytes(dev: torch.device, size: int | None) -> int:
    """Bytes per activation element of a training step on inputs ``size`` px across (mixed precision: 2)."""
    return 2 if devices.amp_dtype(dev, size) is not None else 4
