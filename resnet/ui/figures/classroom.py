"""The class plot of a pooled class experiment (``resnet.classroom.pool.figure_data``): each series' mean over the
seeds that are in, with its spread as error bars, against the grid's first setting. A Figure, never pyplot."""
from __future__ import annotations

from matplotlib.figure import Figure

from ...i18n import t

SERIES_COLOURS = {"all": "#2b6cb0", "last": "#2f855a", "head": "#c05621", False: "#c53030", True: "#2b6cb0",
                  None: "#2b6cb0"}


def series_name(data: dict, value, L: str) -> str:
    if data["series_by"] == "strategy":
        return t(f"strategy.{value}.title", L)
    if data["series_by"] == "shortcuts":
        return t("class.plot.residual" if value else "class.plot.plain", L)
    return t(f"class.plot.metric.{data['metric']}", L)


def class_figure(data: dict, L: str = "en") -> Figure:
    fig = Figure(figsize=(7.5, 3.6), dpi=100)
    ax = fig.subplots()
    for s in data["series"]:
        points = [(x, m, e) for x, m, e in zip(s["x"], s["mean"], s["std"]) if m is not None]
        if not points:
            continue
        xs, means, errs = zip(*points)
        ax.errorbar(xs, means, yerr=[e or 0 for e in errs], marker="o", capsize=3, lw=1.8,
                    color=SERIES_COLOURS.get(s["name"], "#718096"), label=series_name(data, s["name"], L))
    ax.set_xlabel(t(f"class.plot.x.{data['x']}", L))
    ax.set_ylabel(t(f"class.plot.metric.{data['metric']}", L))
    ax.set_title(t("class.plot.title", L, done=data["done"], total=data["total"]), fontsize=10)
    if data["x"] in ("group", "per_class"):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({x for s in data["series"] for x in s["x"]}) or [1])
        ax.get_xaxis().set_major_formatter(lambda v, _: f"{v:g}")
    ax.grid(True, alpha=0.3)
    if any(s["x"] for s in data["series"]):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
