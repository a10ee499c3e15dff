"""Training curves of a fine-tuning run: validation accuracy (with its standard error) and loss per strategy.

A ``Figure`` object (Agg canvas), never pyplot: no global state, safe from several threads at once. Axis labels and
the legend come from the string table (``plot.training.*``), in the language asked for.
"""
from __future__ import annotations

import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ...i18n import t

# One colour per strategy, the same in every figure, so a class can follow "head" across runs.
COLOURS = {"all": "#2b6cb0", "last": "#2f855a", "head": "#c05621", "replace": "#805ad5", "scratch": "#718096"}
LABEL_KEYS = {"accuracy": "plot.training.accuracy", "loss": "plot.training.loss", "epoch": "plot.training.epoch",
              "chance": "plot.training.chance"}


def training_figure(history: dict, *, lang: str = "en", labels: dict | None = None, names: dict | None = None,
                    chance: float | None = None, title: str | None = None, n_val: int | None = None,
                    se_label: str | None = None) -> Figure:
    """``history[strategy]`` holds lists ``epoch``, ``val_acc``, ``val_loss``, ``train_loss`` (as ``RunResult``).

    The axis texts are in ``lang``; ``labels`` overrides some of them (keys of ``LABEL_KEYS``); ``names`` maps
    strategy → legend text; ``chance`` (1 / number of classes) draws a dashed line on the accuracy plot. ``n_val``
    (validation images): each accuracy curve gets a shaded band of ± one binomial standard error,
    sqrt(p (1 − p) / n_val), so that curves whose bands overlap are not read as different (``se_label``: the
    band's legend entry). Strategies still training, with fewer epochs so far, are drawn as far as they got.
    """
    text = {name: t(key, lang) for name, key in LABEL_KEYS.items()} | (labels or {})
    fig = Figure(figsize=(9, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    ax_acc, ax_loss = fig.subplots(1, 2)
    for i, (name, h) in enumerate(history.items()):
        epochs = list(h.get("epoch", []))
        if not epochs:
            continue
        colour = COLOURS.get(name, f"C{i}")
        label = (names or {}).get(name, name)
        ax_acc.plot(epochs, h["val_acc"], marker="o", ms=3, color=colour, label=label)
        if n_val:
            se = [math.sqrt(max(p * (1 - p), 0.0) / n_val) for p in h["val_acc"]]
            ax_acc.fill_between(epochs, [p - e for p, e in zip(h["val_acc"], se)],
                                [p + e for p, e in zip(h["val_acc"], se)], color=colour, alpha=0.15, lw=0)
        ax_loss.plot(epochs, h["val_loss"], marker="o", ms=3, color=colour, label=label)
        if h.get("train_loss"):
            ax_loss.plot(epochs, h["train_loss"], ls="--", lw=1, color=colour, alpha=0.7)
    if chance is not None:
        ax_acc.axhline(chance, ls="--", color="#4a5568", lw=1, label=text["chance"])
    if n_val and se_label and any(h.get("epoch") for h in history.values()):
        ax_acc.fill_between([], [], [], color="#a0aec0", alpha=0.4, lw=0, label=se_label)
    ax_acc.set_ylim(0, 1.02)
    ax_acc.set_ylabel(text["accuracy"])
    ax_loss.set_ylabel(text["loss"], fontsize=8)
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel(text["epoch"])
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if any(h.get("epoch") for h in history.values()):
        ax_acc.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
