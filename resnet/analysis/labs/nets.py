"""The lab networks: ImageNet-style ResNet-18/34 and the paper's CIFAR nets (6n + 2 layers), with or without
shortcuts, with or without BatchNorm, seeded so that plain and residual start alike."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...models.resnet import BasicBlock, StageWalk, build_model, conv1x1, init_weights

CIFAR_WIDTHS = (16, 32, 64)


class CifarResNet(StageWalk):
    """The ResNet paper's CIFAR-10 net: a 3×3 stem, three stages of ``n`` basic blocks (16/32/64 channels,
    32×32 → 16×16 → 8×8), global average pool, fc: 6n + 2 weighted layers.

    ``residual=False`` is the matching plain net: the very same layers with no shortcut (and so no
    projection convs). Projection shortcuts (1×1 conv + BN) are used where the shape changes.
    """

    # The same walk and point names as the ImageNet ResNet (``resnet.models.resnet.StageWalk``): a 3×3 stem, no max
    # pool.
    points = {"conv1": ("conv1", "bn1", "relu"), "conv2_x": ("layer1",), "conv3_x": ("layer2",),
              "conv4_x": ("layer3",), "avgpool": ("avgpool", "flatten"), "fc": ("fc",)}

    def __init__(self, n: int, residual: bool = True, num_classes: int = 10, widths=CIFAR_WIDTHS):
        super().__init__()
        self.depth = 6 * n + 2
        self.residual = residual
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                down = None
                if residual and (stride != 1 or cin != w):
                    down = nn.Sequential(conv1x1(cin, w, stride), nn.BatchNorm2d(w))
                blocks.append(BasicBlock(cin, w, stride, down, residual=residual))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


# name → n, the basic blocks per stage
CIFAR_NETS = {f"cifar{6 * n + 2}": n for n in (3, 5, 9, 18, 200)}  # 20, 32, 56, 110, 1202
IMAGENET_NETS = ("resnet18", "resnet34")
LAB_NETS = (*IMAGENET_NETS, *CIFAR_NETS)


def net_depth(name: str) -> int:
    return 6 * CIFAR_NETS[name] + 2 if name in CIFAR_NETS else int(name.removeprefix("resnet"))


def net_title(name: str, residual: bool) -> str:
    """``ResNet-56`` / ``plain-56``; ImageNet-style nets are marked as such."""
    kind = "ResNet" if residual else "plain"
    return f"{kind}-{net_depth(name)}" + ("" if name in CIFAR_NETS else " (ImageNet)")


def default_size(name: str) -> int:
    """CIFAR nets at their 32 px; ImageNet-style ones at 64 px (enough for five stride-2 steps, and fast)."""
    return 32 if name in CIFAR_NETS else 64


@dataclass(frozen=True)
class Setting:
    """How the nets are normalised and initialised for the gradient-flow lab."""

    batchnorm: bool
    init: str  # "he" (kaiming, fan_out, the paper's) or "xavier" (Glorot, the standard before 2015)


SETTINGS = {
    "bn": Setting(batchnorm=True, init="he"),       # the paper's nets
    "none": Setting(batchnorm=False, init="xavier"),  # a pre-BatchNorm deep net
}


def strip_batchnorm(module: nn.Module) -> None:
    """Replace every ``nn.BatchNorm2d`` of ``module`` by an identity (in place): the pre-BatchNorm nets."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.Identity())
        else:
            strip_batchnorm(child)


def lab_net(name: str, residual: bool = True, *, setting: str = "bn", num_classes: int = 10,
            seed: int = 0, widths=CIFAR_WIDTHS, device=None) -> nn.Module:
    """``name`` in ``LAB_NETS``, with or without shortcuts, seeded so plain and residual start alike.

    Built on the meta device, then materialised on the CPU and initialised from a ``torch.Generator`` seeded
    with ``seed``: never from torch's global RNG, which concurrent requests share. ``device="meta"``: a
    weightless net for counting (``cost.lab_profile``)."""
    if name not in LAB_NETS:
        raise ValueError(f"unknown lab network {name!r}; choose one of: {', '.join(LAB_NETS)}")
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of: {', '.join(SETTINGS)}")
    with torch.device("meta"):
        if name in CIFAR_NETS:
            net = CifarResNet(CIFAR_NETS[name], residual, num_classes, tuple(widths))
        else:
            net = build_model(name, num_classes, residual=residual)
    s = SETTINGS[setting]
    if not s.batchnorm:
        strip_batchnorm(net)
    if device is not None and torch.device(device).type == "meta":
        return net
    gen = torch.Generator().manual_seed(int(seed))
    init_weights(net.to_empty(device="cpu"), gen, defaults=True)  # He normal convs, BN 1/0, fc torch's default
    if s.init == "xavier":
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight, generator=gen)
    return net


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def main_path_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The weighted layers a plain net has too (convs of the stem and blocks, then fc), in forward order;
    projection shortcuts are left out so that plain and residual share one x-axis."""
    return [(name, m) for name, m in net.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name]

