"""The note's three ways of transfer learning (+ ``replace`` and a from-scratch control): what is frozen, what is new.

``TransferNet`` splits a network in two at a point of its forward pass (``Strategy.cache_point``, one of the
model's own point names: ``conv4_x``, ``avgpool`` or ``fc``):

* ``features(x)`` — the frozen part, up to and including that point, always in eval mode and without gradients.
  Its output depends only on the image, so the engine computes it once per image and caches it;
* ``trainable(f)`` — the rest, which the optimiser updates.

``forward(x) == trainable(features(x))``. ``export`` turns any strategy back into a plain ``ResNet`` with a
``num_classes`` fc, readable by ``build_model(arch, num_classes)`` + ``load_state_dict``. For ``head`` — a new
fc (1000 → n) stacked on the frozen 1000-way fc with nothing in between — the two linear maps are folded
into one exactly: ``W = W_new · W_old`` and ``b = W_new · b_old + b_new``.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..i18n import LANGS, t
from ..weights import WeightsCorrupt, load_state_dict_checked
from .resnet import POINTS, ResNet, build_model, from_state, seeded_linear

CACHE_POINTS = ("conv4_x", "avgpool", "fc")  # where a frozen part can end, in the order a forward pass reaches them


def modules_through(point: str) -> tuple[str, ...]:
    """The backbone's attributes that compute everything up to and including ``point`` (``conv4_x``: conv1, bn1,
    relu, maxpool, layer1 … layer3)."""
    names = list(POINTS)
    return tuple(a for name in names[:names.index(point) + 1] for a in POINTS[name] if a != "flatten")


@dataclass(frozen=True)
class Strategy:
    """One way to reuse a network: where the frozen part ends, and how the new classifier is added."""

    name: str
    pretrained: bool              # starts from ImageNet weights (when they can be had)
    cache_point: str | None       # the last point of the frozen part, computed once per image; None: nothing frozen
    new_layer: str                # "replace": a new fc in place of the 1000-way one; "add": a new fc on top of it
    lr: float                     # default learning rate (Adam)

    @property
    def frozen(self) -> tuple[str, ...]:
        """The backbone's attributes kept fixed."""
        return modules_through(self.cache_point) if self.cache_point else ()

    def title(self, lang: str = "en") -> str:
        return t(f"strategy.{self.name}.title", lang)

    def description(self, lang: str = "en") -> str:
        """One sentence, shown in the UI."""
        return t(f"strategy.{self.name}.description", lang)

    def to_dict(self) -> dict:
        return {"name": self.name, "pretrained": self.pretrained, "frozen": list(self.frozen),
                "new_layer": self.new_layer, "cache_point": self.cache_point, "lr": self.lr,
                "title": {L: self.title(L) for L in LANGS}, "description": {L: self.description(L) for L in LANGS}}


STRATEGIES: dict[str, Strategy] = {
    "all": Strategy("all", True, None, "replace", 3e-4),
    "last": Strategy("last", True, "conv4_x", "replace", 1e-3),    # conv5_x and a new fc train
    "head": Strategy("head", True, "fc", "add", 1e-2),             # a new fc on the frozen 1000-way one
    "replace": Strategy("replace", True, "avgpool", "replace", 1e-2),  # a new fc on the frozen pooled features
    "scratch": Strategy("scratch", False, None, "replace", 1e-3),
}


def strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy '{name}'; choose from {', '.join(STRATEGIES)}.")
    return STRATEGIES[name]


class TransferNet(nn.Module):
    """A ResNet prepared for one strategy: frozen modules fixed and in eval mode, a new classifier."""

    def __init__(self, backbone: ResNet, strategy: Strategy, num_classes: int, *,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.strategy = strategy
        self.arch = getattr(backbone, "arch", None)
        self.num_classes = num_classes
        self.backbone = backbone
        if strategy.new_layer == "replace":
            backbone.fc = seeded_linear(backbone.fc.in_features, num_classes, generator)
            self.head = None
        else:
            self.head = seeded_linear(backbone.fc.out_features, num_classes, generator)
        for name in strategy.frozen:
            for p in getattr(backbone, name).parameters():
                p.requires_grad_(False)
        self.train()

    def frozen_modules(self) -> list[nn.Module]:
        return [getattr(self.backbone, name) for name in self.strategy.frozen]

    def train(self, mode: bool = True) -> "TransferNet":
        """Frozen parts stay in eval mode, so their BatchNorm statistics never move."""
        super().train(mode)
        for m in self.frozen_modules():
            m.eval()
        if self.head is not None:  # the whole backbone is frozen
            self.backbone.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen part's output for images ``x`` (the image itself where nothing is frozen)."""
        point = self.strategy.cache_point
        return x if point is None else frozen_features(self.backbone, x, (point,))[point]

    def trainable(self, f: torch.Tensor) -> torch.Tensor:
        """Logits from ``features``' output: the part the optimiser updates (the backbone's walk after the frozen
        point, or the new fc on top of the frozen logits)."""
        point = self.strategy.cache_point
        if self.head is not None:
            return self.head(f)
        if point is None:
            return self.backbone(f)
        return self.backbone.forward_intermediates(f, ("fc",), after=point)["fc"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trainable(self.features(x))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def param_counts(self) -> tuple[int, int]:
        """(trainable, total) parameter counts."""
        ps = list(self.parameters())
        return sum(p.numel() for p in ps if p.requires_grad), sum(p.numel() for p in ps)

    @torch.no_grad()
    def export(self) -> ResNet:
        """A plain ResNet with a ``num_classes`` fc computing the same function (``head``: the two fc folded)."""
        net = copy.deepcopy(self.backbone).cpu().float().eval()
        if self.head is not None:
            w_old, b_old = net.fc.weight.double(), net.fc.bias.double()
            w_new, b_new = self.head.weight.detach().cpu().double(), self.head.bias.detach().cpu().double()
            fc = nn.Linear(w_old.shape[1], self.num_classes)
            fc.weight.copy_(w_new @ w_old)
            fc.bias.copy_(w_new @ b_old + b_new)
            net.fc = fc
        for p in net.parameters():
            p.requires_grad_(True)
        return net


@torch.no_grad()
def frozen_features(backbone: ResNet, x: torch.Tensor, points) -> dict[str, torch.Tensor]:
    """One pass of a frozen ``backbone`` (call ``.eval()`` first), returning the outputs at ``points`` (of
    ``CACHE_POINTS``: conv4_x's map, the average-pooled vector, the 1000-way logits), stopping after the last.
    One pass serves ``last``, ``replace`` and ``head`` together."""
    points = tuple(points)
    unknown = [p for p in points if p not in CACHE_POINTS]
    if unknown:
        raise ValueError(f"unknown cache point {unknown[0]!r}; choose from {', '.join(CACHE_POINTS)}")
    return backbone.forward_intermediates(x, points)


def prepare(name: str, arch: str, num_classes: int, *, backbone_state: dict | None = None,
            generator: torch.Generator | None = None) -> TransferNet:
    """A ``TransferNet`` for strategy ``name``: ``backbone_state`` (a 1000-class state_dict) unless it trains
    from scratch, in which case the weights are random. Random draws (a random backbone, the new fc) come from
    ``generator``; without one, from torch's global RNG (seed it first for repeatability)."""
    s = strategy(name)
    if s.pretrained and backbone_state is not None:
        backbone = from_state(arch, backbone_state)
    else:
        backbone = build_model(arch, generator=generator)
    return TransferNet(backbone, s, num_classes, generator=generator)


def save_export(net: TransferNet | ResNet, path: str | os.PathLike, *, classes: list[str], strategy: str,
                image_size: int, pretrained: bool) -> Path:
    """Write ``{"arch", "num_classes", "classes", "strategy", "image_size", "pretrained", "state_dict"}``.

    Load it back with ``load_export`` or by hand: ``build_model(arch, num_classes).load_state_dict(
    resnet.weights.read_state_dict(path))``.
    """
    model = net.export() if isinstance(net, TransferNet) else net
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"arch": model.arch, "num_classes": int(model.fc.out_features), "classes": list(classes),
                "strategy": strategy, "image_size": int(image_size), "pretrained": bool(pretrained),
                "state_dict": {k: v.detach().cpu().clone(memory_format=torch.contiguous_format)
                               for k, v in model.state_dict().items()}}, path)
    return path


def load_export(path: str | os.PathLike) -> tuple[ResNet, dict]:
    """A fine-tuned model written by ``save_export`` (eval mode, class names and eval transform attached)."""
    from ..preprocess import transform
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsCorrupt(f"{path.name} is not a readable fine-tuned model ({type(e).__name__}).") from None
    if not isinstance(obj, dict) or not {"arch", "num_classes", "state_dict"} <= obj.keys():
        raise WeightsCorrupt(f"{path.name} is not a fine-tuned model exported by ResNet Lab.")
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    model = build_model(obj["arch"], int(obj["num_classes"]), device="meta").to_empty(device="cpu")
    load_state_dict_checked(model, obj["state_dict"], obj["arch"], path.name)
    model.categories = list(obj.get("classes") or [])
    model.transforms = transform("eval", int(obj.get("image_size", 224)))
    return model.eval(), meta
