"""The note's table (the paper's Table 1): ResNet-18 … 152 side by side, and why a bottleneck block is cheap.

Every number comes from the real models: the table from ``layer_table`` (one meta-device run per depth, cached
there), the block comparison from our own ``BasicBlock`` and ``Bottleneck`` counted by ``summary.branch_layers`` and,
independently, by PyTorch's FLOP counter (``labs.group_conv.count_flops``).

The note's FLOPs row (1.8 / 3.6 / 3.8 / 7.6 / 11.3 ×10^9) counts multiply-adds of the paper's original block (v1,
the stride in the first 1×1). Counted exactly, v1 gives 1.81 / 3.66 / 3.86 / 7.57 / 11.28: each within 0.07 of the
paper's, which rounded loosely (3.66 to 3.6, 7.57 to 7.6), so the table shows the count with two decimals and the
note's own row beneath it.
"""
from __future__ import annotations

import textwrap
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch

from ..checks import whole
from ..errors import BadSetting
from ..i18n import error, t
from ..models.resnet import ARCHS, BasicBlock, Bottleneck
from .labs.group_conv import count_flops
from .summary import branch_layers, layer_table, totals

NOTE_ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
# The rows after the layers: the whole network's parameters, its multiply-adds as counted, the note's FLOPs row.
TOTAL_ROWS = ("params", "flops", "flops_note")
# English names of the rows in ``text()`` and ``markdown()``; the page names them in its language (``arch.row.*``).
ROW_LABELS = {"params": "params", "flops": "FLOPs", "flops_note": "FLOPs (note)"}


class NoteRow(NamedTuple):
    name: str                # conv1, pool, conv2_x … conv5_x, fc (as ``layer_table``), then params, flops, flops_note
    output_size: str         # "56×56"; "" for the three totals rows
    cells: tuple[str, ...]   # one text per network, in ``NoteTable.archs`` order


@dataclass(frozen=True)
class NoteTable:
    """The note's table for the five depths. ``rows`` are in the note's order; a layer row's cells are
    ``layer_table``'s ``block`` texts (``[1×1, 64; 3×3, 64; 1×1, 256] × 3``), the totals rows' cells are
    ``25.6 M`` (params), ``3.86×10^9`` (flops: multiply-adds counted on the model, v1 or v1.5) and ``3.8×10^9``
    (flops_note: the note's row, the paper's v1 numbers whatever ``v1`` is)."""

    archs: tuple[str, ...]
    titles: tuple[str, ...]          # ResNet-18 … ResNet-152
    rows: list[NoteRow]
    gmacs: dict[str, float]          # multiply-adds ×1e9 per arch, counted (not rounded)
    params: dict[str, int]           # parameters per arch
    paper_gmacs: dict[str, float]    # the note's FLOPs row
    v1: bool                         # True: the paper's bottleneck (stride in the 1×1); False: torchvision's v1.5
    image_size: int

    def header(self) -> list[str]:
        return ["layer name", "output size", *self.titles]

    def text(self) -> str:
        """Plain text for a terminal: a bracket's layers one under the other, as the note draws them; a text the
        five networks share (conv1, the pool, the classifier) written once across their columns."""
        first, width = max(len(r.name) for r in self.rows) + 2, 15
        size_w = len("output size") + 2
        lines = ["".join([self.header()[0].ljust(first), self.header()[1].ljust(size_w),
                          *(h.ljust(width) for h in self.titles)]).rstrip()]
        lines.append("-" * len(lines[0]))
        for row in self.rows:
            label = ROW_LABELS.get(row.name, row.name)
            if len(set(row.cells)) == 1 and row.name not in TOTAL_ROWS:
                columns = [textwrap.wrap(row.cells[0], width * len(row.cells) - 2)]
            else:
                columns = [cell_lines(c) for c in row.cells]
            for i in range(max(len(c) for c in columns)):
                left = (label.ljust(first) + row.output_size.ljust(size_w)) if i == 0 else " " * (first + size_w)
                lines.append((left + "".join((c[i] if i < len(c) else "").ljust(width) for c in columns)).rstrip())
        lines.append("")
        lines.append(f"FLOPs = multiply-adds at {self.image_size}×{self.image_size}, "
                     + ("v1 (the paper's bottleneck: stride in the first 1×1)" if self.v1 else
                        "v1.5 (torchvision's bottleneck: stride in the 3×3)") + "; 'FLOPs (note)' is the note's row.")
        return "\n".join(lines)

    def markdown(self) -> str:
        """A Markdown table (one line per row, the brackets as the library writes them)."""
        head = self.header()
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            out.append("| " + " | ".join([ROW_LABELS.get(row.name, row.name), row.output_size, *row.cells]) + " |")
        return "\n".join(out)

    def as_dict(self) -> dict:
        return {"archs": list(self.archs), "titles": list(self.titles), "v1": self.v1, "image_size": self.image_size,
                "rows": [{"name": r.name, "output_size": r.output_size, "cells": list(r.cells)} for r in self.rows],
                "gmacs": dict(self.gmacs), "params": dict(self.params), "paper_gmacs": dict(self.paper_gmacs)}


def cell_lines(text: str) -> list[str]:
    """A bracket ``[1×1, 64; 3×3, 64; 1×1, 256] × 3`` as the note draws it: one layer a line, then ``× 3``; any
    other text as one line."""
    if text.startswith("[") and "] × " in text:
        inner, times = text[1:].split("] × ")
        return [*inner.split("; "), f"× {times}"]
    return [text]


def note_table(*, v1: bool = True, image_size: int = 224) -> NoteTable:
    """The note's table: its layer rows (``layer_table``'s, for the five depths at ``image_size``), then each
    network's parameters, its counted multiply-adds (``v1``: the paper's bottleneck, as the note; else torchvision's
    v1.5) and the note's FLOPs row. A fresh object each call (the counts underneath are cached)."""
    tables = {a: layer_table(a, image_size, stride_in_1x1=v1) for a in NOTE_ARCHS}
    first = tables[NOTE_ARCHS[0]]
    rows = [NoteRow(r["name"], "{}×{}".format(*r["output_size"]), tuple(tables[a][i]["block"] for a in NOTE_ARCHS))
            for i, r in enumerate(first)]
    tot = {a: totals(tables[a]) for a in NOTE_ARCHS}
    gmacs = {a: tot[a]["macs"] / 1e9 for a in NOTE_ARCHS}
    paper = {a: ARCHS[a].paper_gmacs for a in NOTE_ARCHS}
    rows += [NoteRow("params", "", tuple(f"{tot[a]['params'] / 1e6:.1f} M" for a in NOTE_ARCHS)),
             NoteRow("flops", "", tuple(f"{gmacs[a]:.2f}×10^9" for a in NOTE_ARCHS)),
             NoteRow("flops_note", "", tuple(f"{paper[a]}×10^9" for a in NOTE_ARCHS))]
    return NoteTable(NOTE_ARCHS, tuple(ARCHS[a].title for a in NOTE_ARCHS), rows, gmacs,
                     {a: tot[a]["params"] for a in NOTE_ARCHS}, paper, v1, image_size)


# ---------------------------------------------------------------------------- the bottleneck beside a basic block

@dataclass(frozen=True)
class BlockCount:
    """One residual block, counted on the real module (no projection shortcut: channels in = channels out)."""

    kind: str            # "basic": two 3×3 at ``channels``; "bottleneck": 1×1 → channels/4, 3×3, 1×1 → channels;
                         # "basic_inner": two 3×3 at channels/4 (ResNet-34's block where ResNet-50 has the bottleneck)
    block: str           # the note's bracket, e.g. "[1×1, 64; 3×3, 64; 1×1, 256]"
    channels: int        # in and out
    size: int            # the feature map's side (stride 1: in and out)
    layers: tuple[tuple[str, int, int], ...] = field(default=())  # per conv: ("1×1, 256→64", params, MACs)
    params: int = 0      # every parameter of the module: the convs' weights and BN's γ, β
    macs: int = 0        # multiply-adds of one size×size input (the convs; BN and the addition are not counted)
    flops: int = 0       # PyTorch's FLOP counter on the same module (2 per multiply-add, BN not counted)


@dataclass(frozen=True)
class BlockFacts:
    """The sentence-level facts: how many times cheaper the bottleneck is than a basic block at the same width, and
    how it compares with a basic block at its inner width (about 1: ResNet-50 costs about what ResNet-34 does)."""

    params_ratio: float        # basic.params / bottleneck.params (≈ 16.8 at 256 channels)
    macs_ratio: float          # basic.macs / bottleneck.macs (≈ 16.9)
    inner_params_ratio: float  # bottleneck.params / basic_inner.params (≈ 0.95)
    inner_macs_ratio: float    # bottleneck.macs / basic_inner.macs (≈ 0.94)


def _count(kind: str, module: torch.nn.Module, channels: int, size: int) -> BlockCount:
    module.eval()
    x = torch.zeros(1, channels, size, size, device="meta")
    layers = tuple(branch_layers(module, x))
    inner = [text.split(", ")[0] + ", " + text.split("→")[1] for text, _, _ in layers]  # "3×3, 64"
    return BlockCount(kind, "[" + "; ".join(inner) + "]", channels, size, layers,
                      sum(p.numel() for p in module.parameters()), sum(m for _, _, m in layers),
                      count_flops(module, x))


def block_comparison(width: int = 256, size: int = 56) -> list[BlockCount]:
    """``[basic, bottleneck, basic_inner]``: a basic block at ``width`` channels, the bottleneck at ``width``
    (its 1×1 and 3×3 at width/4, as ResNet-50's conv2_x at the defaults), and a basic block at width/4 (ResNet-34's
    conv2_x block at the defaults), each built from ``resnet.models.resnet`` on the meta device (no memory, any size)
    and counted at ``size``×``size``."""
    width = whole(width, 4, 4096, "width")
    size = whole(size, 1, 512, "feature-map size")
    if width % 4:
        raise error(BadSetting, "arch.compare.width_four", width=width)
    inner = width // 4
    with torch.device("meta"):
        modules = [("basic", BasicBlock(width, width), width), ("bottleneck", Bottleneck(width, inner), width),
                   ("basic_inner", BasicBlock(inner, inner), inner)]
    return [_count(kind, m, c, size) for kind, m, c in modules]


def block_facts(blocks: list[BlockCount]) -> BlockFacts:
    basic, bottleneck, inner = blocks
    return BlockFacts(basic.params / bottleneck.params, basic.macs / bottleneck.macs,
                      bottleneck.params / inner.params, bottleneck.macs / inner.macs)


def block_sentence(blocks: list[BlockCount], L: str = "en", *, v1: bool = True) -> str:
    """One sentence in ``L`` from the numbers: the bottleneck is many times cheaper than a basic block at its width
    and costs about what a basic block at its inner width does, so ResNet-50 costs about what ResNet-34 does (their
    totals from ``note_table``)."""
    facts, table = block_facts(blocks), note_table(v1=v1)
    return t("arch.compare.sentence", L, width=blocks[1].channels, inner=blocks[2].channels,
             params_ratio=facts.params_ratio, macs_ratio=facts.macs_ratio, inner_macs=facts.inner_macs_ratio,
             n34=sum(ARCHS["resnet34"].layers), n50=sum(ARCHS["resnet50"].layers),
             g34=table.gmacs["resnet34"], g50=table.gmacs["resnet50"])


def comparison_dict(blocks: list[BlockCount]) -> dict:
    """For ``--json``: the blocks and their facts."""
    return {"blocks": [asdict(b) for b in blocks], "facts": asdict(block_facts(blocks))}
