"""Matplotlib figures for the Labs tab (Figure objects, never pyplot: thread-safe, nothing left open).

Every label comes from the string table, so the plots follow the user's language.
"""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from ...i18n import t
from . import human
from ...analysis.labs import (BatchStats, BlockCost, BNRunUpdate, BNSteps, ConvCost, DeepResult, GradientProfile,
                              RaceUpdate, SHAPES, TrainEval, net_depth)

DEPTH_COLOURS = {18: "#2b6cb0", 20: "#2b6cb0", 32: "#2f855a", 34: "#c05621", 56: "#c53030", 110: "#6b46c1",
                 1202: "#1a202c"}
MODE_COLOURS = {"eval": "#2f855a", "train_1": "#c53030", "train_batch": "#dd6b20"}
KIND_COLOURS = {"normal": "#4a5568", "grouped": "#2b6cb0", "depthwise": "#2f855a"}


def net_name(title: str, L: str = "en") -> str:
    """A lab net's title (``resnet.analysis.labs.net_title``) as the page shows it: ``plain-56`` in the visitor's
    words (``name.plain_net``), ``ResNet-56`` unchanged (a name)."""
    if title.endswith(" (no BN)"):
        return t("name.no_bn", L, net=net_name(title[:-len(" (no BN)")], L))
    return t("name.plain_net", L, rest=title[len("plain-"):]) if title.startswith("plain-") else title


def _colour(depth: int) -> str:
    return DEPTH_COLOURS.get(depth, "#718096")


def _runs(xs) -> list[tuple[int, int]]:
    """Consecutive integers grouped into (first, last) runs."""
    runs: list[list[int]] = []
    for x in xs:
        if runs and x == runs[-1][1] + 1:
            runs[-1][1] = x
        else:
            runs.append([x, x])
    return [(a, b) for a, b in runs]


def _log_line(ax, ys, **style) -> tuple[list[int], list[int]]:
    """Plot positive finite values on a log axis; return the positions of zeros and of non-finite values."""
    arr = np.asarray(ys, dtype=float)
    ok = np.isfinite(arr) & (arr > 0)
    xs = np.arange(1, len(arr) + 1)
    ax.plot(xs, np.where(ok, arr, np.nan), **style)
    return [int(x) for x in xs[arr == 0]], [int(x) for x in xs[~np.isfinite(arr)]]


def _mark_broken(ax, zeros_by_colour, bad_by_colour, L: str) -> None:
    """Shade the layers whose gradient is exactly 0 (vanished, grey) or not a number (overflow, red)."""
    shaded = False
    # One horizontal strip per net with marks (in legend order), so two nets' bands never hide each other.
    marked = [i for i, ((_, z), (_, b)) in enumerate(zip(zeros_by_colour, bad_by_colour)) if z or b]
    for spans, fc in ((zeros_by_colour, "#a0aec0"), (bad_by_colour, "#feb2b2")):
        for i, (_colour, xs) in enumerate(spans):
            if i not in marked:
                continue
            k = marked.index(i)
            for a, b in _runs(xs):
                ax.axvspan(a - 0.5, b + 0.5, 1 - (k + 1) / len(marked), 1 - k / len(marked), color=fc, alpha=0.35,
                           lw=0)
                shaded = True
    if shaded:
        ax.text(0.01, 0.01, t("labs.plot.broken_marks", L), transform=ax.transAxes, fontsize=7, color="#4a5568",
                va="bottom")


def gradient_flow_figure(profiles: list[GradientProfile], L: str = "en") -> Figure:
    """One panel per setting: ‖∂loss/∂W‖ per layer, input side on the left; solid residual, dashed plain."""
    settings = list(dict.fromkeys(p.setting for p in profiles))
    fig = Figure(figsize=(5.2 * len(settings), 4.2), dpi=100)
    axes = np.atleast_1d(fig.subplots(1, len(settings), squeeze=False)[0])
    for ax, setting in zip(axes, settings):
        zeros, bad = [], []
        for p in (p for p in profiles if p.setting == setting):
            colour = _colour(net_depth(p.net))
            z, b = _log_line(ax, p.norms, color=colour, ls="-" if p.residual else "--", lw=1.6 if p.residual else 1.3,
                             label=net_name(p.title, L))
            zeros.append((colour, z))
            bad.append((colour, b))
        ax.set_yscale("log")
        ax.set_title(t(f"labs.setting.{setting}", L), fontsize=10)
        ax.set_xlabel(t("labs.plot.layer", L))
        ax.set_ylabel(t("labs.plot.gradnorm", L))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        _mark_broken(ax, zeros, bad, L)
    fig.tight_layout()
    return fig


def race_figure(update: RaceUpdate, L: str = "en") -> Figure:
    """Training loss against step for each net of the race, redrawn as it trains."""
    fig = Figure(figsize=(7.5, 4.2), dpi=100)
    ax = fig.subplots()
    for title, losses in update.losses.items():
        depth = int(title.split("-")[1].split()[0])
        style = ":" if title.endswith("(no BN)") else "--" if title.startswith("plain") else "-"
        ax.plot(update.recorded_steps, losses, color=_colour(depth), ls=style,
                lw=1.8, label=net_name(title, L))
    # Guessing among the classes evenly: the loss every net starts near.
    ax.axhline(np.log(len(SHAPES)), color="#718096", ls=":", lw=1,
               label=t("labs.plot.chance_loss", L, n=len(SHAPES)))
    ax.set_xlim(0, update.steps)
    ax.set_xlabel(t("labs.plot.step", L))
    ax.set_ylabel(t("labs.plot.train_loss", L))
    ax.set_title(t("labs.plot.race_title", L, step=update.step, steps=update.steps, seconds=update.seconds),
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


def deep_figure(result: DeepResult, L: str = "en") -> Figure:
    """ResNet-1202 and the plain net of the same depth: the gradient that reaches each layer (the residual net alone
    while the plain one is still being measured: ``result.plain`` None)."""
    fig = Figure(figsize=(8, 4), dpi=100)
    ax = fig.subplots()
    zeros, bad = [], []
    nets = [p for p in ((result.residual, "#2b6cb0"), (result.plain, "#c53030")) if p[0] is not None]
    ax.set_xlim(0.5, len(result.residual.norms) + 0.5)  # the whole depth, the same before the second net comes
    for p, colour in nets:
        z, b = _log_line(ax, p.norms, color=colour, ls="-" if p.residual else "--", lw=1.2,
                        label=net_name(p.title, L))
        zeros.append((colour, z))
        bad.append((colour, b))
    ax.set_yscale("log")
    # A net with no usable gradient anywhere draws no line: say what happened to it, in the plot.
    notes = [t("labs.plot.deep_none_" + ("zero" if all(v == 0 for v in p.norms) else "overflow"), L, title=p.title)
             for p, _ in nets if not any(np.isfinite(v) and v > 0 for v in p.norms)]
    if notes:
        ax.text(0.5, 0.55, "\n".join(notes), transform=ax.transAxes, ha="center", va="center", fontsize=10,
                bbox=dict(boxstyle="round", fc="white", ec="#4a5568", lw=0.8))
    ax.set_xlabel(t("labs.plot.layer", L))
    ax.set_ylabel(t("labs.plot.gradnorm", L))
    ax.set_title(t("labs.plot.deep_title", L, depth=result.depth, batch=result.batch_size), fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    _mark_broken(ax, zeros, bad, L)
    fig.tight_layout()
    return fig


def bn_steps_figure(s: BNSteps, L: str = "en") -> Figure:
    """The channel before BN, the distributions of x, x̂ and y, and the channel after BN."""
    fig = Figure(figsize=(11, 3.6), dpi=100)
    a, b, c = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.5, 1]})
    for ax, img, key in ((a, s.x[0], "labs.plot.bn_input"), (c, s.y[0], "labs.plot.bn_output")):
        im = ax.imshow(img.numpy(), cmap="viridis")
        ax.set_title(t(key, L, channel=s.channel), fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
    values = [("x", s.x, "#4a5568"), ("x̂", s.x_hat, "#2b6cb0"), ("y = γx̂ + β", s.y, "#c53030")]
    for label, v, colour in values:
        b.hist(v.flatten().numpy(), bins=60, histtype="step", lw=1.5, color=colour, label=label, density=True)
    b.axvline(s.mean, color="#4a5568", ls=":", lw=1)
    b.set_title(t("labs.plot.bn_hist", L, mean=s.mean, var=s.var), fontsize=9)
    b.set_xlabel(t("labs.plot.value", L))
    b.legend(fontsize=8)
    fig.tight_layout()
    return fig


def train_eval_figure(te: TrainEval, L: str = "en") -> Figure:
    """The eval-mode top classes, and what each mode gives them."""
    fig = Figure(figsize=(7.5, 3.8), dpi=100)
    ax = fig.subplots()
    n = len(te.labels)
    h = 0.8 / len(te.probs)
    for i, (mode, probs) in enumerate(te.probs.items()):
        ys = np.arange(n) + (i - (len(te.probs) - 1) / 2) * h
        ax.barh(ys, probs, height=h, color=MODE_COLOURS[mode],
                label=t("labs.plot.mode_distance", L, mode=t(f"labs.mode.{mode}", L), tv=te.distance[mode]))
    ax.set_yticks(np.arange(n), [label[:28] for label in te.labels], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(t("labs.plot.probability", L))
    ax.set_title(t("labs.plot.train_eval_title", L), fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def batch_stats_figure(bs: BatchStats, L: str = "en") -> Figure:
    """Error of the batch mean and standard deviation against batch size, with the 1/√b trend."""
    fig = Figure(figsize=(6.5, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(bs.sizes, bs.mean_error, "o-", color="#2b6cb0", label=t("labs.plot.mean_error", L))
    ax.plot(bs.sizes, bs.std_error, "s-", color="#c53030", label=t("labs.plot.std_error", L))
    ref = bs.mean_error[0] / np.sqrt(np.asarray(bs.sizes, dtype=float))
    ax.plot(bs.sizes, ref, ":", color="#718096", label=t("labs.plot.trend", L))
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(bs.sizes, [str(s) for s in bs.sizes])
    ax.set_xlabel(t("labs.plot.batch_size", L))
    ax.set_ylabel(t("labs.plot.stat_error", L))
    ax.set_title(t("labs.plot.batch_stats_title", L, n=bs.set_size), fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


GROUP_COLOURS = {2: "#c53030", 32: "#2b6cb0"}


def bn_run_figure(update: BNRunUpdate, batch_size: int, L: str = "en") -> Figure:
    """BatchNorm's statistics from few or many images, all else equal: training loss, and validation accuracy in
    eval mode, against the training step."""
    fig = Figure(figsize=(10, 3.8), dpi=100)
    a, b = fig.subplots(1, 2)
    for g in update.loss:
        colour = GROUP_COLOURS.get(g, "#718096")
        label = t("labs.plot.bn_group", L, g=g)
        a.plot(update.recorded_steps, update.loss[g], "-", color=colour, lw=1.8, label=label)
        b.plot(update.recorded_steps, [100 * v for v in update.val_acc[g]], "o-", color=colour, lw=1.8, ms=3,
               label=label)
    b.axhline(100 * update.chance, color="#718096", ls=":", lw=1, label=t("labs.plot.chance", L))
    for ax in (a, b):
        ax.set_xlim(0, update.steps)
        ax.set_xlabel(t("labs.plot.step", L))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    a.set_ylabel(t("labs.plot.train_loss", L))
    b.set_ylabel(t("labs.plot.val_acc_eval", L, n=update.val_count))
    b.set_ylim(0, 102)
    fig.suptitle(t("labs.plot.bn_run_title", L, step=update.step, steps=update.steps, batch=batch_size,
                   seconds=update.seconds), fontsize=10)
    fig.tight_layout()
    return fig


def conv_cost_figure(costs: list[ConvCost], L: str = "en") -> Figure:
    """Parameters and multiply-adds of the normal, grouped and depthwise conv, on a log scale."""
    fig = Figure(figsize=(9, 3.6), dpi=100)
    axes = fig.subplots(1, 2)
    names = [t(f"labs.conv.{c.kind}", L) + f"\ng={c.groups}" for c in costs]
    colours = [KIND_COLOURS[c.kind] for c in costs]
    for ax, attr, key in ((axes[0], "params", "labs.plot.params"), (axes[1], "macs", "labs.plot.macs")):
        vals = [getattr(c, attr) for c in costs]
        bars = ax.bar(range(len(costs)), vals, color=colours)
        ax.set_yscale("log")
        ax.set_xticks(range(len(costs)), names, fontsize=8)
        ax.set_title(t(key, L), fontsize=10)
        for bar, v in zip(bars, vals):
            ax.text(bar.get_x() + bar.get_width() / 2, v, human(v), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(min(vals) / 5, max(vals) * 4)
        ax.grid(True, axis="y", alpha=0.3)
    c = costs[0]
    fig.suptitle(t("labs.plot.conv_title", L, cin=c.cin, cout=c.cout, size=c.size, k=c.kernel), fontsize=10)
    fig.tight_layout()
    return fig


def _stack(ax, x: float, rows: list[tuple[str, str]], top: float, width: float = 2.4) -> float:
    """Boxes top to bottom at ``x`` with arrows between; returns the bottom y."""
    y = top
    for i, (label, colour) in enumerate(rows):
        ax.add_patch(FancyBboxPatch((x - width / 2, y - 0.32), width, 0.64, boxstyle="round,pad=0.02", fc=colour,
                                    ec="#4a5568", lw=0.8))
        ax.text(x, y, label, ha="center", va="center", fontsize=8)
        if i < len(rows) - 1:
            ax.add_patch(FancyArrowPatch((x, y - 0.34), (x, y - 0.86), arrowstyle="-|>", mutation_scale=8, lw=0.8))
        y -= 1.2
    return y + 1.2


def _plus(ax, x: float, y: float, top: float, side: float) -> None:
    """The ⊕ under a branch and the identity shortcut around it."""
    ax.add_patch(FancyArrowPatch((x, y - 0.34), (x, y - 0.95), arrowstyle="-|>", mutation_scale=8, lw=0.8))
    ax.text(x, y - 1.2, "⊕", ha="center", va="center", fontsize=15, color="#c53030")
    ax.plot([x, side, side], [top + 0.75, top + 0.75, y - 1.2], color="#2b6cb0", lw=1.4)
    ax.add_patch(FancyArrowPatch((side, y - 1.2), (x + 0.2, y - 1.2), arrowstyle="-|>", mutation_scale=9, lw=1.4,
                                 color="#2b6cb0"))


def group_block_figure(blocks: list[BlockCost], cost: ConvCost, L: str = "en") -> Figure:
    """ResNet-50's bottleneck, ResNeXt-50 32×4d's block as 32 parallel paths, and which input channels
    each output channel of the chosen grouped conv sees."""
    fig = Figure(figsize=(12, 4.8), dpi=100)
    a, b, c = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.5, 1]})
    conv, grouped, norm = "#dbe8ff", "#cfe9d9", "#fff1c9"
    # ResNet-50 bottleneck (conv2_x): 256 → 64 → 64 → 256.
    r = blocks[0]
    a.set_xlim(-2, 2.6)
    a.set_ylim(-4.2, 1.8)
    a.axis("off")
    a.set_title(t("labs.plot.block_cost", L, title=r.title, params=human(r.block_params), macs=human(r.block_macs)),
                fontsize=9)
    bottom = _stack(a, 0, [("1×1, 64", conv), ("3×3, 64", conv), ("1×1, 256", conv)], 0.6)
    _plus(a, 0, bottom, 0.6, 1.8)
    a.text(0, 1.6, t("labs.plot.block_in", L), ha="center", fontsize=8)
    # ResNeXt-50 32×4d: 32 paths of [1×1, 4; 3×3, 4; 1×1, 256], summed (= one grouped 3×3 conv).
    x = blocks[1]
    b.set_xlim(-4.4, 4.6)
    b.set_ylim(-4.2, 1.8)
    b.axis("off")
    b.set_title(t("labs.plot.block_cost", L, title=x.title, params=human(x.block_params), macs=human(x.block_macs)),
                fontsize=9)
    for px, label in ((-3, "1"), (-1.5, "2"), (1.5, "32")):
        _stack(b, px, [("1×1, 4", conv), ("3×3, 4", grouped), ("1×1, 256", conv)], 0.6, width=1.25)
        b.text(px, 1.05, t("labs.plot.path", L, i=label), ha="center", fontsize=7)
        b.add_patch(FancyArrowPatch((px, -1.84), (0, -2.95), arrowstyle="-|>", mutation_scale=7, lw=0.6))
    b.text(0, -0.6, "· · ·", ha="center", va="center", fontsize=16)
    b.text(0, -3.2, "⊕", ha="center", va="center", fontsize=15, color="#c53030")
    b.text(0, 1.5, t("labs.plot.block_in", L), ha="center", fontsize=8)
    b.plot([-4.1, -4.1], [1.25, -3.2], color="#2b6cb0", lw=1.4)
    b.add_patch(FancyArrowPatch((-4.1, -3.2), (-0.2, -3.2), arrowstyle="-|>", mutation_scale=9, lw=1.4,
                                color="#2b6cb0"))
    b.text(0, -3.9, t("labs.plot.resnext_same", L), ha="center", va="center", fontsize=8, color="#2d3748")
    # Connectivity of the chosen grouped conv: output channel j sees input channel i only inside its group.
    cin, cout, g = cost.cin, cost.cout, cost.groups
    show_in, show_out = min(cin, 64), min(cout, 64)
    mask = np.zeros((show_out, show_in))
    for j in range(show_out):
        grp = j // (cout // g)
        lo, hi = grp * (cin // g), (grp + 1) * (cin // g)
        mask[j, max(lo, 0):min(hi, show_in)] = 1
    c.imshow(mask, cmap="Blues", vmin=0, vmax=1.3, interpolation="nearest", aspect="auto")
    c.set_xlabel(t("labs.plot.in_channels", L, n=show_in))
    c.set_ylabel(t("labs.plot.out_channels", L, n=show_out))
    c.set_title(t("labs.plot.connectivity", L, groups=g, share=1 / g), fontsize=9)
    c.set_xticks([])
    c.set_yticks([])
    fig.tight_layout()
    return fig
