"""The note's layer table, measured on the model itself: output sizes, blocks, parameters, multiply-adds.

Measured on a weightless copy (the meta device): shapes and the multiply-add hooks work on meta tensors, so
any architecture at any size costs milliseconds and no memory (ResNet-152 at 1024 px: a real forward pass
took seconds and a gigabyte, the meta pass takes about 0.1 s).
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

from ..models.resnet import ARCHS, STAGE_WIDTHS, STAGES, BasicBlock, bottleneck_width, build_model


def block_text(arch: str, stage: int, *, stride_in_1x1: bool = False) -> str:
    """The bracket of the paper's table, e.g. ``[1×1, 64; 3×3, 64; 1×1, 256] × 3``."""
    spec = ARCHS[arch]
    c = STAGE_WIDTHS[stage]
    n = spec.layers[stage]
    if spec.block is BasicBlock:
        return f"[3×3, {c}; 3×3, {c}] × {n}"
    width = bottleneck_width(c, spec.groups, spec.width_per_group)
    grouped = f", C={spec.groups}" if spec.groups > 1 else ""
    return f"[1×1, {width}; 3×3, {width}{grouped}; 1×1, {c * spec.block.expansion}] × {n}"


def _rows(model: nn.Module, arch: str, stride_in_1x1: bool):
    """(name, modules, block text) per row of the paper's table, from the model's own walk (``stage_modules``):
    the modules run in sequence on the previous row's output. The table's last row is the walk's ``avgpool``
    and ``fc`` together."""
    walk = dict(model.stage_modules())
    texts = {"conv1": "7×7, 64, stride 2", "pool": "3×3 max pool, stride 2",
             **{name: block_text(arch, i, stride_in_1x1=stride_in_1x1) for i, name in enumerate(STAGES)}}
    for name, text in texts.items():
        yield name, list(walk[name]), text
    yield "fc", [*walk["avgpool"], *walk["fc"]], f"average pool, {model.fc.out_features}-d fc, softmax"


def _macs_hook(counter: list):
    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            counter[0] += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            counter[0] += output.numel() * module.in_features
    return hook


def run_counting_macs(modules, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Run ``x`` through ``modules`` in turn; multiply-adds of every conv and linear layer inside them.

    Forward hooks on these modules only, so it must be given modules no one else is using (a fresh
    model). Not ``torch.utils.flop_counter.FlopCounterMode``: a dispatch mode is process-wide, so in
    a server it would count other users' forward passes too and break their autograd calls. The
    tests check that both agree on every row.
    """
    counter = [0]
    handles = [m.register_forward_hook(_macs_hook(counter)) for mod in modules for m in mod.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        for m in modules:
            x = m(x)
    finally:
        for h in handles:
            h.remove()
    return x, counter[0]


def branch_layers(block: nn.Module, x: torch.Tensor) -> list[tuple[str, int, int]]:
    """(text such as ``3×3, 64→64``, parameters, multiply-adds) of each conv on a residual block's branch (``conv1``,
    ``conv2`` and a bottleneck's ``conv3``), run in turn on ``x`` with the block's BN and ReLU between them: a basic
    block and a bottleneck counted by the same walk (the Labs' ResNeXt block, the note's bottleneck lesson)."""
    convs = [getattr(block, f"conv{i}") for i in (1, 2, 3) if isinstance(getattr(block, f"conv{i}", None), nn.Conv2d)]
    layers = []
    with torch.no_grad():
        for i, conv in enumerate(convs, 1):
            x, macs = run_counting_macs([conv], x)
            k = conv.kernel_size[0]
            g = f", {conv.groups} groups" if conv.groups > 1 else ""
            layers.append((f"{k}×{k}, {conv.in_channels}→{conv.out_channels}{g}",
                           sum(p.numel() for p in conv.parameters()), macs))
            if i < len(convs):
                x = torch.relu(getattr(block, f"bn{i}")(x))
    return layers


def layer_table(arch: str, image_size: int = 224, *, stride_in_1x1: bool = False) -> list[dict]:
    """One dict per row (conv1, pool, conv2_x … conv5_x, fc): name, output_size, block, params, macs.

    Sizes come from running the model (weightless, on the meta device) on an ``image_size`` input;
    multiply-adds from counting each conv's and linear layer's work on that run (see ``run_counting_macs``).
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size < 32:
        raise ValueError("image_size must be an integer of at least 32 (five stride-2 steps need it)")
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    return [dict(row) for row in _measure(arch, image_size, stride_in_1x1)]


@lru_cache(maxsize=64)  # a class switching between depths asks for the same few tables again and again
@torch.inference_mode()
def _measure(arch: str, image_size: int, stride_in_1x1: bool) -> tuple[dict, ...]:
    model = build_model(arch, stride_in_1x1=stride_in_1x1, device="meta").eval()
    x = torch.zeros(1, 3, image_size, image_size, device="meta")
    table = []
    for name, modules, text in _rows(model, arch, stride_in_1x1):
        x, macs = run_counting_macs(modules, x)
        params = sum(p.numel() for m in modules for p in m.parameters())
        size = (1, 1) if x.dim() == 2 else tuple(x.shape[-2:])
        table.append({"name": name, "output_size": size, "block": text, "params": params,
                      "macs": macs})
    return tuple(table)


def totals(table: list[dict]) -> dict:
    return {"params": sum(r["params"] for r in table), "macs": sum(r["macs"] for r in table)}


def format_table(arch: str, table: list[dict]) -> str:
    """The table as plain text, with totals and the paper's published FLOPs where it has one."""
    head = f"{'layer':<8} {'output':>9}  {'block':<42} {'params':>12} {'mult-adds':>14}"
    lines = [f"{ARCHS[arch].title}", head, "-" * len(head)]
    for r in table:
        h, w = r["output_size"]
        lines.append(f"{r['name']:<8} {f'{h}×{w}':>9}  {r['block']:<42} {r['params']:>12,} {r['macs']:>14,}")
    t = totals(table)
    lines.append("-" * len(head))
    lines.append(f"{'total':<8} {'':>9}  {'':<42} {t['params']:>12,} {t['macs']:>14,}")
    paper = ARCHS[arch].paper_gmacs
    lines.append(f"= {t['params'] / 1e6:.2f} M parameters, {t['macs'] / 1e9:.2f} G multiply-adds"
                 + (f" (paper: {paper} G, stride in the 1×1)" if paper else ""))
    return "\n".join(lines)


def display_rows(arch: str, table: list[dict]) -> list[list]:
    """The table as the note lays it out, sizes as ``56×56``, with a totals row; for the UI's dataframe."""
    rows = [[r["name"], "{}×{}".format(*r["output_size"]), r["block"], f"{r['params'] / 1e6:.3f} M",
             f"{r['macs'] / 1e9:.3f} G"] for r in table]
    t = totals(table)
    rows.append(["total", "", "", f"{t['params'] / 1e6:.2f} M", f"{t['macs'] / 1e9:.2f} G"])
    return rows
