"""The note's three ways of transfer learning (+ ``replace`` and a from-scratch control): what is frozen, what is new.

``TransferNet`` splits a network in two at the point where training starts:

* ``features(x)`` — the frozen part, always in eval mode and without gradients. Its output depends only on
  the image, so the engine computes it once per image and caches it (``cache_point`` names what it is);
* ``trainable(f)`` — the rest, which the optimiser updates.

``forward(x) == trainable(features(x))``. ``export`` turns any strategy back into a plain ``ResNet`` with a
``num_classes`` fc, readable by ``build_model(arch, num_classes)`` + ``load_state_dict``. For ``head`` — a new
fc (1000 → n) stacked on the frozen 1000-way fc with nothing in between — the two linear maps are folded
into one exactly: ``W = W_new · W_old`` and ``b = W_new · b_old + b_new``.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .model import ResNet, build_model, from_state, seeded_linear
from .weights import WeightsCorrupt, load_state_dict_checked

STEM = ("conv1", "bn1")  # plus relu and max pool, which hold no parameters


@dataclass(frozen=True)
class Strategy:
    """One way to reuse a network; ``frozen`` lists the backbone modules that do not train."""

    name: str
    pretrained: bool              # starts from ImageNet weights (when they can be had)
    frozen: tuple[str, ...]       # backbone children kept fixed
    new_layer: str                # "replace": a new fc in place of the 1000-way one; "add": a new fc on top of it
    cache_point: str | None       # what ``features`` returns, computed once per image: None = the image itself
    lr: float                     # default learning rate (Adam)
    title: dict = field(default_factory=dict)        # {"en": …, "zh": …}
    description: dict = field(default_factory=dict)  # one sentence each, shown in the UI

    def to_dict(self) -> dict:
        return {"name": self.name, "pretrained": self.pretrained, "frozen": list(self.frozen),
                "new_layer": self.new_layer, "cache_point": self.cache_point, "lr": self.lr,
                "title": dict(self.title), "description": dict(self.description)}


ALL_BUT_FC = STEM + ("layer1", "layer2", "layer3", "layer4")

STRATEGIES: dict[str, Strategy] = {
    "all": Strategy(
        "all", True, (), "replace", None, 3e-4,
        {"en": "Train everything", "zh": "训练全部参数"},
        {"en": "Start from pretrained weights, swap the classifier for a new one, and train every parameter.",
         "zh": "载入预训练权重，把分类层换成新的，然后训练网络的全部参数。"}),
    "last": Strategy(
        "last", True, STEM + ("layer1", "layer2", "layer3"), "replace", "layer4_input", 1e-3,
        {"en": "Train the last stage", "zh": "只训练最后几层"},
        {"en": "Start from pretrained weights, swap the classifier, and train only conv5_x (layer4) and the "
               "classifier; everything before stays frozen.",
         "zh": "载入预训练权重并换上新分类层，只训练最后一个阶段 conv5_x（layer4）和分类层，前面的层全部冻结。"}),
    "head": Strategy(
        "head", True, ALL_BUT_FC + ("fc",), "add", "logits", 1e-2,
        {"en": "Add a new fc on top", "zh": "在顶部新加全连接层"},
        {"en": "Keep the whole pretrained network, its 1000-way classifier included, frozen, and train only a "
               "new fully-connected layer added on top of it.",
         "zh": "整个预训练网络（包括原来的 1000 类全连接层）保持冻结，只训练在它上面新加的一个全连接层。"}),
    "replace": Strategy(
        "replace", True, ALL_BUT_FC, "replace", "pooled", 1e-2,
        {"en": "Replace the fc only", "zh": "只替换全连接层"},
        {"en": "Freeze every pretrained layer and train only a new classifier that takes the place of the "
               "1000-way fc (a linear probe on the pooled features).",
         "zh": "冻结所有预训练层，只训练一个取代原 1000 类全连接层的新分类层（在池化特征上做线性分类）。"}),
    "scratch": Strategy(
        "scratch", False, (), "replace", None, 1e-3,
        {"en": "From scratch (control)", "zh": "从零训练（对照组）"},
        {"en": "Start from random weights and train everything: the control that shows what pretraining is worth.",
         "zh": "从随机权重开始训练全部参数：作为对照，显示预训练到底带来了多少好处。"}),
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
        """Logits from ``features``' output: the part the optimiser updates."""
        point, b = self.strategy.cache_point, self.backbone
        if point is None:
            return b(f)
        if point == "layer4_input":
            return b.fc(torch.flatten(b.avgpool(b.layer4(f)), 1))
        if point == "pooled":
            return b.fc(f)
        return self.head(f)

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


CACHE_POINTS = ("layer4_input", "pooled", "logits")  # in the order a forward pass reaches them


@torch.no_grad()
def frozen_features(backbone: ResNet, x: torch.Tensor, points) -> dict[str, torch.Tensor]:
    """One pass of a frozen ``backbone`` (call ``.eval()`` first), returning the activations named by ``points``:
    ``layer4_input`` (conv4_x's output), ``pooled`` (the 512·expansion-d average pool) and ``logits`` (the
    1000-way fc's output). One pass serves ``last``, ``replace`` and ``head`` together."""
    points, b, out = set(points), backbone, {}
    x = b.layer3(b.layer2(b.layer1(b.maxpool(b.relu(b.bn1(b.conv1(x)))))))
    if "layer4_input" in points:
        out["layer4_input"] = x
    if points & {"pooled", "logits"}:
        x = torch.flatten(b.avgpool(b.layer4(x)), 1)
        if "pooled" in points:
            out["pooled"] = x
        if "logits" in points:
            out["logits"] = b.fc(x)
    return out


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
    from .data import eval_transform
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
    model.transforms = eval_transform(int(obj.get("image_size", 224)))
    return model.eval(), meta
