"""The lesson's figures: each step's run drawn with the figure its full tab uses, and one of its own (the counted
multiply-adds beside the note's FLOPs row). Figure objects, never pyplot; labels from the string table."""
from __future__ import annotations

from matplotlib.figure import Figure

from ...i18n import t
from ...lesson import Step
from ...lesson.steps import BN_BATCH
from ...models.resnet import ARCHS
from ...train.finetune import STRATEGIES
from . import labs as lab_figures
from .blocks import block_compare_figure
from .training import training_figure

def flops_figure(rows: dict, L: str = "en") -> Figure:
    """Multiply-adds of ResNet-18 … 152 as counted, with the note's FLOPs row marked beside each bar."""
    fig = Figure(figsize=(7.5, 3.6), dpi=100)
    ax = fig.subplots()
    archs = list(rows)
    values = [rows[a]["gmacs"] for a in archs]
    ax.bar(range(len(archs)), values, color="#2b6cb0", label=t("lesson.plot.counted", L))
    for i, arch in enumerate(archs):
        ax.text(i, values[i], f"{values[i]:.2f}", ha="center", va="bottom", fontsize=9)
        if rows[arch].get("paper"):
            ax.plot([i - 0.4, i + 0.4], [rows[arch]["paper"]] * 2, color="#c53030", lw=2,
                    label=t("lesson.plot.note_row", L) if i == 0 else None)
    ax.set_xticks(range(len(archs)), [ARCHS[a].title for a in archs], fontsize=9)
    ax.set_ylabel(t("lesson.plot.gmacs", L))
    ax.set_ylim(0, max(values) * 1.2)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def transfer_figure(update, L: str = "en") -> Figure:
    names = {s: t(f"strategy.{s}.title", L) for s in STRATEGIES}
    return training_figure(update.history, lang=L, names=names,
                           chance=1 / update.num_classes if update.num_classes else None, n_val=update.n_val,
                           se_label=t("finetune.plot_se", L))


def step_figure(step: Step, item, L: str = "en") -> Figure:
    """The figure of ``step``'s run as it stands at ``item`` (one of the run's updates)."""
    draw = {
        "table": flops_figure,
        "bottleneck": block_compare_figure,
        "degradation": lab_figures.race_figure,
        "residual": lab_figures.race_figure,
        "bn_on_off": lab_figures.race_figure,
        "gradient": lab_figures.gradient_flow_figure,
        "deep": lab_figures.deep_figure,
        "bn_batch": lambda u, L: lab_figures.bn_run_figure(u, BN_BATCH.batch_size, L),
        "transfer": transfer_figure,
        "group_conv": lab_figures.conv_cost_figure,
    }[step.id]
    return draw(item, L)

