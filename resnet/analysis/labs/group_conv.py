"""Lab 4: the cost of group convolution. A normal, a grouped and a depthwise conv counted by PyTorch's own FLOP
counter against the formula, and a ResNet-50 block beside a ResNeXt-50 block."""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from functools import lru_cache

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ... import budget
from ...checks import whole
from ...errors import BadSetting
from ...i18n import error
from ...job import Cost, Job
from ...models.resnet import ARCHS, build_model
from ..summary import branch_layers, layer_table, totals
from .nets import count_params

@dataclass
class ConvCost:
    kind: str          # "normal", "grouped" or "depthwise"
    cin: int
    cout: int
    groups: int
    kernel: int
    size: int          # input height = width (stride 1, same padding: output too)
    params: int        # counted on the real layer
    flops: int         # measured by PyTorch's FLOP counter (``torch.utils.flop_counter.FlopCounterMode``)
    formula_params: int
    formula_macs: int

    @property
    def macs(self) -> int:
        """Multiply-adds: PyTorch's counter counts 2 FLOPs (a multiply and an add) for each."""
        return self.flops // 2

    @property
    def params_match(self) -> bool:
        return self.params == self.formula_params

    @property
    def macs_match(self) -> bool:
        return self.flops == 2 * self.formula_macs

    @property
    def matches(self) -> bool:
        return self.params_match and self.macs_match


def conv_formula(cin: int, cout: int, groups: int, kernel: int, size: int) -> tuple[int, int]:
    """Each output channel sees only cin/groups inputs: params = k²·(cin/g)·cout, MACs = params·H·W."""
    params = kernel * kernel * (cin // groups) * cout
    return params, params * size * size


def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``module(x)`` by PyTorch's own counter, ``torch.utils.flop_counter.FlopCounterMode`` (2 per
    multiply-add), independent of this project's counter (``summary.run_counting_macs``).

    Safe in a server: the dispatch mode that counts is per thread, so only this call's operations are counted; the
    counter's module tracker hooks every module's forward while it is open, so it is opened only around this one
    conv on the meta device (microseconds), and only the total is read."""
    with _FLOP_LOCK, FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return int(counter.get_total_flops())


_FLOP_LOCK = threading.Lock()


def measure_conv(cin: int, cout: int, groups: int, kernel: int = 3, size: int = 56, kind: str = "") -> ConvCost:
    """Build the conv, count its parameters, and let PyTorch's FLOP counter measure it on a real run."""
    if cin % groups or cout % groups:
        raise ValueError(f"the groups ({groups}) must divide both channel counts ({cin} in, {cout} out)")
    # On the meta device: a real layer and a real shape-checked run, but no memory and no arithmetic,
    # so even 4096 channels at 512 px answer at once.
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False, device="meta")
    flops = count_flops(conv, torch.zeros(1, cin, size, size, device="meta"))
    params = count_params(conv)
    fp, fm = conv_formula(cin, cout, groups, kernel, size)
    return ConvCost(kind or ("normal" if groups == 1 else "depthwise" if groups == cin else "grouped"),
                    cin, cout, groups, kernel, size, params, flops, fp, fm)


def conv_costs(cin: int = 128, cout: int = 128, groups: int = 32, size: int = 28, kernel: int = 3) -> list[ConvCost]:
    """A normal, a grouped and a depthwise conv with the same input and output shapes (depthwise: one
    group per input channel; it needs cout to be a multiple of cin, else it keeps cin outputs). Everything runs
    on the meta device, so the largest settings cost no memory; ``GroupConvJob`` checks them."""
    job = GroupConvJob(cin, cout, groups, size, kernel).validated()
    budget.admit(job)
    cin, cout, groups, size = job.cin, job.cout, job.groups, job.size
    dw_out = cout if cout % cin == 0 else cin
    return [measure_conv(cin, cout, 1, kernel, size, "normal"),
            measure_conv(cin, cout, groups, kernel, size, "grouped"),
            measure_conv(cin, dw_out, cin, kernel, size, "depthwise")]


@dataclass(frozen=True)
class GroupConvJob(Job):
    """``conv_costs``'s settings. It runs on the meta device (no memory, no arithmetic): only the ranges matter."""

    cin: int = 128
    cout: int = 128
    groups: int = 32
    size: int = 28
    kernel: int = 3

    kind = "group_conv"

    def validated(self) -> "GroupConvJob":
        cin = whole(self.cin, 1, 4096, "number of input channels")
        cout = whole(self.cout, 1, 4096, "number of output channels")
        groups, size = whole(self.groups, 1, 4096, "number of groups"), whole(self.size, 1, 512, "feature-map size")
        if cin % groups or cout % groups:
            raise error(BadSetting, "budget.groups", groups=groups, cin=cin, cout=cout)
        return replace(self, cin=cin, cout=cout, groups=groups, size=size)

    def cost(self, device=None) -> Cost:
        return Cost(memory=0, host=0, work=0.0)

    def run(self, cancel=None):
        yield conv_costs(self.cin, self.cout, self.groups, self.size, self.kernel)


BLOCK_PAIR = ("resnet50", "resnext50_32x4d")


@dataclass
class BlockCost:
    arch: str
    title: str
    layers: list[tuple[str, int, int]]  # (layer text, params, MACs) of one conv2_x block's residual branch
    block_params: int
    block_macs: int
    model_params: int
    model_macs: int


@lru_cache(maxsize=4)
def block_cost(arch: str, image_size: int = 224) -> BlockCost:
    """The second block of conv2_x (256 → 256 channels at 56×56, no projection) measured layer by layer,
    and the whole model's totals from the layer table."""
    spec = ARCHS[arch]
    block = build_model(arch, device="meta").layer1[1]  # conv2_x's; weightless: shapes and counts only, no memory
    size = image_size // 4
    layers = branch_layers(block, torch.zeros(1, block.conv1.in_channels, size, size, device="meta"))
    tot = totals(layer_table(arch, image_size))
    return BlockCost(arch, spec.title, layers, sum(p for _, p, _ in layers), sum(m for _, _, m in layers),
                     tot["params"], tot["macs"])
