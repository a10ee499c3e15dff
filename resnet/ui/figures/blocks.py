"""Matplotlib drawings for the architecture tab (Figure objects: no pyplot global state, thread-safe).

Every word in a drawing comes from the string table (``resnet.i18n``), in the language asked for.
"""
from __future__ import annotations

from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ...i18n import t
from . import human
from ...models.resnet import ARCHS, BasicBlock, bottleneck_width

LAYER_COLOURS = {"conv": "#dbe8ff", "bn": "#fff1c9", "relu": "#e2f5e1", "add": "#ffe1e1"}


def block_layers(arch: str, channels: int = 64, L: str = "en") -> list[tuple[str, str]]:
    """(kind, label) of each layer in one residual branch of ``arch``'s block, top to bottom, in language ``L``."""
    spec = ARCHS[arch]

    def conv(k: int, c: int, groups: int = 1) -> str:
        return t("plot.block.conv_groups" if groups > 1 else "plot.block.conv", L, k=k, c=c, groups=groups)

    if spec.block is BasicBlock:
        return [("conv", conv(3, channels)), ("bn", "BN"), ("relu", "ReLU"),
                ("conv", conv(3, channels)), ("bn", "BN")]
    width = bottleneck_width(channels, spec.groups, spec.width_per_group)
    return [("conv", conv(1, width)), ("bn", "BN"), ("relu", "ReLU"),
            ("conv", conv(3, width, spec.groups)), ("bn", "BN"), ("relu", "ReLU"),
            ("conv", conv(1, channels * spec.block.expansion)), ("bn", "BN")]


def _draw_block(ax, layers, *, projection: bool, title: str, L: str) -> None:
    n = len(layers)
    ys = [n - i for i in range(n)]  # top to bottom
    ax.set_xlim(-1.4, 2.9)
    ax.set_ylim(-1.6, n + 1.6)
    ax.axis("off")
    ax.set_title(title, fontsize=10)
    ax.text(0, n + 1.2, "x", ha="center", va="center", fontsize=11, weight="bold")
    prev = n + 1.0
    for (kind, label), y in zip(layers, ys):
        ax.add_patch(FancyBboxPatch((-1.1, y - 0.3), 2.2, 0.6, boxstyle="round,pad=0.02",
                                    fc=LAYER_COLOURS[kind], ec="#4a5568", lw=0.8))
        ax.text(0, y, label, ha="center", va="center", fontsize=8)
        ax.add_patch(FancyArrowPatch((0, prev - 0.05), (0, y + 0.32), arrowstyle="-|>", mutation_scale=8, lw=0.8))
        prev = y - 0.3
    # The addition, then the final ReLU.
    ax.add_patch(FancyArrowPatch((0, prev), (0, 0.25), arrowstyle="-|>", mutation_scale=8, lw=0.8))
    ax.text(0, 0, "⊕", ha="center", va="center", fontsize=16, color="#c53030")
    ax.text(0, -0.9, t("plot.block.out", L), ha="center", va="center", fontsize=8,
            bbox=dict(boxstyle="round", fc=LAYER_COLOURS["relu"], ec="#4a5568", lw=0.8))
    ax.add_patch(FancyArrowPatch((0, -0.25), (0, -0.65), arrowstyle="-|>", mutation_scale=8, lw=0.8))
    # The shortcut, around the branch: solid for identity, dashed (with a 1×1 conv) for projection.
    style = "--" if projection else "-"
    ax.plot([0.15, 1.5, 1.5], [n + 1.2, n + 1.2, 0], ls=style, lw=1.6, color="#2b6cb0")
    ax.add_patch(FancyArrowPatch((1.5, 0), (0.22, 0), arrowstyle="-|>", mutation_scale=10, lw=1.6,
                                 ls=style, color="#2b6cb0"))
    label = t("plot.block.projection_path" if projection else "plot.block.identity_path", L)
    ax.text(1.6, n / 2 + 0.5, label, ha="left", va="center", fontsize=8, color="#2b6cb0")


def block_diagram(arch: str, L: str = "en") -> Figure:
    """``arch``'s block twice: with an identity shortcut (solid line) and a projection shortcut (dashed); the words
    in language ``L``."""
    fig = Figure(figsize=(8, 4.6 if ARCHS[arch].block is BasicBlock else 5.6), dpi=100)
    axes = fig.subplots(1, 2)
    _draw_block(axes[0], block_layers(arch, 64, L), projection=False, title=t("arch.identity", L), L=L)
    _draw_block(axes[1], block_layers(arch, 128, L), projection=True, title=t("arch.projection", L), L=L)
    fig.suptitle(ARCHS[arch].title, fontsize=11, weight="bold")
    fig.tight_layout()
    return fig



COMPARE_COLOURS = {"basic": "#f6ad55", "bottleneck": "#4299e1", "basic_inner": "#cbd5e0"}


def block_compare_figure(blocks, L: str = "en") -> Figure:
    """``note_table.block_comparison``'s blocks as bars: parameters and multiply-adds of a basic block, the
    bottleneck at the same width, and a basic block at the bottleneck's inner width, each bar labelled with its
    count; the words in language ``L``."""
    # One panel above the other: at a phone's width each keeps a readable size. Room at the top for the plot's label.
    fig = Figure(figsize=(6, 4.6), dpi=100)
    axes = fig.subplots(2, 1)
    names = [t(f"plot.compare.{b.kind}", L, c=b.channels, inner=b.channels // 4) for b in blocks]
    ys = list(range(len(blocks)))[::-1]  # the first block on top
    size = blocks[0].size
    for ax, what, title in ((axes[0], "params", t("plot.compare.params", L)),
                            (axes[1], "macs", t("plot.compare.macs", L, size=size))):
        values = [getattr(b, what) for b in blocks]
        ax.barh(ys, values, color=[COMPARE_COLOURS.get(b.kind, "#a0aec0") for b in blocks], height=0.6)
        top = max(values)
        for y, v in zip(ys, values):
            ax.text(v + top * 0.02, y, human(v), va="center", fontsize=10)
        ax.set_xlim(0, top * 1.3)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks(ys, names, fontsize=9)
        for side in ("top", "right", "bottom"):
            ax.spines[side].set_visible(False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig
