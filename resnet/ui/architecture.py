"""Architecture tab: pick a depth, see the note's layer table computed from the real model, and its block."""
from __future__ import annotations

import gradio as gr

from ..i18n import t
from ..model import ARCHS
from ..plots import block_diagram
from ..summary import display_rows, layer_table, totals
from .common import arch_choices, friendly, lang

HEADERS = ["layer", "output size", "block", "params", "multiply-adds"]
MIN_SIZE, MAX_SIZE = 32, 1024


@friendly
def show_layer_table(arch: str, image_size: float, version: str, request: gr.Request = None):
    """The table rows, a totals sentence, and the block drawing."""
    if arch not in ARCHS:
        raise ValueError(t("arch.unknown", lang(request), arch=arch))
    size = int(image_size or 224)
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(t("arch.size_range", lang(request), lo=MIN_SIZE, hi=MAX_SIZE))
    v1 = version == "v1"
    table = layer_table(arch, size, stride_in_1x1=v1)
    tot = totals(table)
    paper = ARCHS[arch].paper_gmacs
    L = lang(request)
    summary = t("arch.totals", L, title=ARCHS[arch].title, params=tot["params"] / 1e6, macs=tot["macs"] / 1e9,
                size=size)
    if paper:
        summary += " " + t("arch.paper_flops", L, paper=paper)
        if not v1:
            summary += " " + t("arch.v15_note", L)
    fig = block_diagram(arch, (t("arch.identity", L), t("arch.projection", L)))
    return display_rows(arch, table), summary, fig


def build(ctx) -> None:
    with gr.Tab(ctx("tab.architecture"), id="architecture"):
        gr.Markdown(ctx("arch.intro"))
        with gr.Row():
            arch = gr.Dropdown(arch_choices(), value="resnet50", label=ctx("arch.depth"), elem_id="arch-depth")
            size = gr.Number(224, label=ctx("arch.image_size"), minimum=MIN_SIZE, maximum=MAX_SIZE, precision=0)
            version = gr.Radio([("v1 · paper", "v1"), ("v1.5 · torchvision", "v1.5")],
                               value="v1.5", label=ctx("arch.version"))
        summary = gr.Markdown(elem_id="arch-summary")
        table = gr.Dataframe(headers=HEADERS, interactive=False, wrap=True, elem_id="arch-table")
        with gr.Row():
            diagram = gr.Plot(label=ctx("arch.block"), show_label=True)
            gr.Markdown(ctx("arch.why"))
        inputs, outputs = [arch, size, version], [table, summary, diagram]
        arch.change(show_layer_table, inputs, outputs, api_name="layer_table", **ctx.cheap)
        for trigger in (size.submit, version.change):
            trigger(show_layer_table, inputs, outputs, api_visibility="private", **ctx.cheap)
        ctx.on_load(show_layer_table, inputs, outputs)
