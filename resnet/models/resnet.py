"""ResNet, ResNeXt and Wide ResNet, written from the papers, state_dict-compatible with torchvision.

The four stages are the paper's conv2_x … conv5_x; the attribute names (``layer1`` … ``layer4``)
follow torchvision so that its checkpoints load strictly.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

STAGES = ("conv2_x", "conv3_x", "conv4_x", "conv5_x")
STAGE_WIDTHS = (64, 128, 256, 512)
# The points of a forward pass, in order, named as in the paper's Table 1, and the attributes (torchvision's
# names, so that its checkpoints load) whose outputs they are. ``conv1`` is the 7×7 conv after BN and ReLU,
# before the max pool (``pool``); ``avgpool`` is the global average pool, flattened; ``fc`` the logits.
POINTS: dict[str, tuple[str, ...]] = {
    "conv1": ("conv1", "bn1", "relu"), "pool": ("maxpool",),
    "conv2_x": ("layer1",), "conv3_x": ("layer2",), "conv4_x": ("layer3",), "conv5_x": ("layer4",),
    "avgpool": ("avgpool", "flatten"), "fc": ("fc",),
}
_FLATTEN = nn.Flatten(1)  # stateless, so one instance serves every model without being anyone's submodule


def bottleneck_width(planes: int, groups: int = 1, base_width: int = 64) -> int:
    """The width of a bottleneck's 1×1 and 3×3 convs: ``planes`` (64 … 512) scaled by ``base_width / 64`` and
    multiplied by the cardinality ``groups`` (ResNeXt-50 32×4d: 4 per group × 32 groups = 128 at conv2_x;
    Wide ResNet-50-2: base width 128, twice ResNet-50's)."""
    return int(planes * (base_width / 64.0)) * groups


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    # No bias: the BatchNorm that follows has its own shift (β), a bias would be cancelled.
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """[3×3, C; 3×3, C]: the block of ResNet-18/34."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, stride_in_1x1: bool = False, residual: bool = True):
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


class Bottleneck(nn.Module):
    """[1×1, width; 3×3, width (grouped for ResNeXt); 1×1, 4C]: the block of ResNet-50/101/152.

    ``stride_in_1x1=True`` is the paper's original placement of the stride (v1); the default puts it
    in the 3×3 conv (v1.5, torchvision's weights), which costs more but is more accurate.
    """

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, stride_in_1x1: bool = False, residual: bool = True):
        super().__init__()
        width = bottleneck_width(planes, groups, base_width)
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(inplanes, width, s1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, s3, groups)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


@dataclass(frozen=True)
class ArchSpec:
    """One column of the paper's Table 1 (plus ResNeXt's cardinality and width)."""

    block: type
    layers: tuple[int, int, int, int]
    groups: int = 1
    width_per_group: int = 64
    paper_gmacs: float | None = None  # the note's FLOPs row (stride in the 1×1, v1)
    title: str = ""


ARCHS: dict[str, ArchSpec] = {
    "resnet18": ArchSpec(BasicBlock, (2, 2, 2, 2), paper_gmacs=1.8, title="ResNet-18"),
    "resnet34": ArchSpec(BasicBlock, (3, 4, 6, 3), paper_gmacs=3.6, title="ResNet-34"),
    "resnet50": ArchSpec(Bottleneck, (3, 4, 6, 3), paper_gmacs=3.8, title="ResNet-50"),
    "resnet101": ArchSpec(Bottleneck, (3, 4, 23, 3), paper_gmacs=7.6, title="ResNet-101"),
    "resnet152": ArchSpec(Bottleneck, (3, 8, 36, 3), paper_gmacs=11.3, title="ResNet-152"),
    "resnext50_32x4d": ArchSpec(Bottleneck, (3, 4, 6, 3), groups=32, width_per_group=4,
                                title="ResNeXt-50 32×4d"),
    "resnext101_32x8d": ArchSpec(Bottleneck, (3, 4, 23, 3), groups=32, width_per_group=8,
                                 title="ResNeXt-101 32×8d"),
    "wide_resnet50_2": ArchSpec(Bottleneck, (3, 4, 6, 3), width_per_group=128, title="Wide ResNet-50-2"),
}


@dataclass(frozen=True)
class FeatureInfo:
    """One named point of the forward pass (as timm's ``feature_info``): its output's ``channels`` and its
    ``reduction`` (input pixels per output position along a side; None for vectors), and the attributes
    (``modules``) whose outputs it is."""

    name: str
    channels: int
    reduction: int | None
    modules: tuple[str, ...]


class StageWalk(nn.Module):
    """A network whose forward pass is a walk over named points (``points``: name → attribute names, in order).

    The one walk behind ``forward``, ``forward_intermediates`` and everything that reads intermediate outputs
    (feature maps, Grad-CAM, transfer split points, the layer table, the labs). No FX tracing, no hooks and no
    dispatch modes: those act process-wide or on the shared module, and break other users' forward passes in a
    server. Blocks add into their own branch's output, never into their input, so kept outputs stay intact.
    """

    points: dict[str, tuple[str, ...]] = {}

    def stage_modules(self) -> list[tuple[str, tuple[nn.Module, ...]]]:
        """``(point, modules)`` in forward order; running each point's modules in turn is the forward pass."""
        return [(name, tuple(_FLATTEN if a == "flatten" else getattr(self, a) for a in attrs))
                for name, attrs in self.points.items()]

    def check_stages(self, stages) -> tuple[str, ...]:
        """``stages`` as a tuple, each a point of this network (ValueError naming the first that is not)."""
        stages = (stages,) if isinstance(stages, str) else tuple(stages)
        unknown = [s for s in stages if s not in self.points]
        if unknown or not stages:
            raise ValueError(f"unknown stage {unknown[0] if unknown else '(none)'}; choose from "
                             f"{', '.join(self.points)}")
        return stages

    def forward_intermediates(self, x: torch.Tensor, stages=None, *, stop_early: bool = True,
                              after: str | None = None) -> dict[str, torch.Tensor]:
        """``{point: output}`` for the points in ``stages`` (None: all), in forward order.

        ``stop_early``: stop after the last point asked for (``False``: run to the end, logits under ``"fc"``).
        ``after``: ``x`` is already the output of that point; the walk starts at the next one.
        """
        wanted = set(self.check_stages(self.points if stages is None else stages))
        walk = self.stage_modules()
        if after is not None:
            names = [name for name, _ in walk]
            start = names.index(self.check_stages((after,))[0]) + 1
            if wanted & set(names[:start]):
                raise ValueError(f"{min(wanted & set(names[:start]), key=names.index)} is not after {after}")
            walk = walk[start:]
        out = {}
        for name, modules in walk:
            for m in modules:
                x = m(x)
            if name in wanted:
                out[name] = x
                if stop_early and len(out) == len(wanted):
                    return out
        if walk:
            out[walk[-1][0]] = x  # run to the end: the logits too
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _, modules in self.stage_modules():
            for m in modules:
                x = m(x)
        return x


class ResNet(StageWalk):
    """conv1 → max pool → conv2_x … conv5_x → global average pool → fc."""

    points = POINTS

    def __init__(self, block: type, layers, num_classes: int = 1000, *, groups: int = 1,
                 width_per_group: int = 64, stride_in_1x1: bool = False, zero_init_residual: bool = False,
                 residual: bool = True):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        opts = dict(groups=groups, base_width=width_per_group, stride_in_1x1=stride_in_1x1, residual=residual)
        for i, (planes, n) in enumerate(zip(STAGE_WIDTHS, layers)):
            setattr(self, f"layer{i + 1}", self._make_stage(block, planes, n, 1 if i == 0 else 2, opts))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        self.zero_init_residual = zero_init_residual
        init_weights(self)

    def _make_stage(self, block: type, planes: int, blocks: int, stride: int, opts: dict) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            # Projection shortcut (the note's dashed line): a 1×1 conv matches the new shape.
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, **opts)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, **opts) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    @property
    def feature_info(self) -> tuple[FeatureInfo, ...]:
        """Every point of ``points``: name, channels, reduction (2, 4, 4, 8, 16, 32; None for avgpool and fc)."""
        stage_channels = [self.fc.in_features * w // STAGE_WIDTHS[-1] for w in STAGE_WIDTHS]
        channels = [self.conv1.out_channels] * 2 + stage_channels + [self.fc.in_features, self.fc.out_features]
        reductions = (2, 4, 4, 8, 16, 32, None, None)
        return tuple(FeatureInfo(name, c, r, attrs)
                     for (name, attrs), c, r in zip(self.points.items(), channels, reductions))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """conv5_x's output (N×C×H/32×W/32)."""
        return self.forward_intermediates(x, ("conv5_x",))["conv5_x"]


def init_weights(model: nn.Module, generator: torch.Generator | None = None, *, defaults: bool = False) -> nn.Module:
    """torchvision's ResNet init: He normal (fan_out) for convs, BatchNorm γ = 1 and β = 0, and with the model's
    ``zero_init_residual`` the last BN of each residual branch at 0. ``defaults=True`` also gives every Linear
    torch's default init and every BatchNorm fresh statistics: for a model materialised from the meta device,
    whose memory holds garbage. Draws come from ``generator`` (None: torch's global RNG)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            if m.bias is not None and defaults:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if defaults and m.track_running_stats:
                m.reset_running_stats()
            if m.affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and defaults:
            linear_init(m, generator)
    if getattr(model, "zero_init_residual", False):
        # Each residual branch starts as zero, so every block starts as the identity.
        for m in model.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)
    return model


def linear_init(m: nn.Linear, generator: torch.Generator | None = None) -> nn.Linear:
    """``nn.Linear``'s own default init (Kaiming uniform, a = √5; bias uniform ±1/√fan_in), from ``generator``."""
    nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
    if m.bias is not None:
        bound = 1 / math.sqrt(m.in_features) if m.in_features > 0 else 0.0
        nn.init.uniform_(m.bias, -bound, bound, generator=generator)
    return m


def seeded_linear(cin: int, cout: int, generator: torch.Generator | None) -> nn.Linear:
    """A new fc layer; with a generator, built on the meta device and initialised from it (no global RNG)."""
    if generator is None:
        return nn.Linear(cin, cout)
    return linear_init(nn.Linear(cin, cout, device="meta").to_empty(device="cpu"), generator)


def build_model(arch: str, num_classes: int = 1000, *, stride_in_1x1: bool = False,
                zero_init_residual: bool = False, residual: bool = True,
                generator: torch.Generator | None = None, device: str | torch.device | None = None) -> ResNet:
    """Build ``arch`` (a key of ``ARCHS``) with random weights; ``residual=False`` drops every shortcut.

    ``generator``: every random draw comes from it, never from torch's global RNG, so concurrent requests
    cannot disturb each other (the model is built on the meta device, then materialised on the CPU and
    initialised). ``device="meta"``: a weightless model for shapes and counts (no memory, milliseconds).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    spec = ARCHS[arch]
    meta = generator is not None or (device is not None and torch.device(device).type == "meta")
    with torch.device("meta") if meta else contextlib.nullcontext():
        model = ResNet(spec.block, spec.layers, num_classes, groups=spec.groups, width_per_group=spec.width_per_group,
                       stride_in_1x1=stride_in_1x1, zero_init_residual=zero_init_residual, residual=residual)
    model.arch = arch
    if generator is not None:
        init_weights(model.to_empty(device="cpu"), generator, defaults=True)
    if device is not None and torch.device(device).type != "meta":
        model = model.to(device)
    return model


def from_state(arch: str, state_dict: dict, num_classes: int | None = None, **kwargs) -> ResNet:
    """``arch`` holding ``state_dict`` (copied, strict), without a random init first: faster, and no RNG."""
    if num_classes is None:
        num_classes = int(state_dict["fc.weight"].shape[0])
    model = build_model(arch, num_classes, device="meta", **kwargs).to_empty(device="cpu")
    model.load_state_dict(state_dict)
    return model
