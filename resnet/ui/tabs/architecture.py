"""Architecture tab: pick a depth, see the note's layer table computed from the real model, and its block."""
from __future__ import annotations

import copy
import re
from functools import lru_cache

import gradio as gr

from ...errors import BadSetting
from ...i18n import error, has, t
from ...models.resnet import ARCHS, BasicBlock
from ..figures.blocks import block_compare_figure, block_diagram
from ...analysis.note_table import NoteTable, block_comparison, block_sentence, cell_lines, note_table
from ...analysis.summary import display_rows, layer_table, totals
from ..common import arch_choices, explained, friendly, lang
from ..sharing import plot_data

HEADER_KEYS = ("arch.col.layer", "arch.col.output_size", "arch.col.block", "arch.col.params", "arch.col.macs")
VERSIONS = (("arch.version.v1", "v1"), ("arch.version.v15", "v1.5"))
MIN_SIZE, MAX_SIZE = 32, 1024
# Shares of the table's width, not widths of the content: on a phone the five columns fit the screen (the block's
# text wraps) instead of pushing parameters and multiply-adds, the numbers the table is for, out of sight.
COLUMN_WIDTHS = ["15%", "15%", "34%", "18%", "18%"]
# The note's table: the row name, the output size, then five networks sharing the rest (style.css: .table-fits).
NOTE_COLUMN_WIDTHS = ["14%", "13%", *["14.6%"] * 5]


def headers(L: str) -> list[str]:
    """The layer table's column names in ``L`` (a Dataframe's headers are not translated by the browser)."""
    return [t(key, L) for key in HEADER_KEYS]


def _block(name: str, text: str, L: str) -> str:
    """The paper's words in the table's block column (``7×7, 64, stride 2`` …) in ``L``; the stages' notation
    (``[3×3, 64; 3×3, 64] × 2``) needs none. A text the table does not know is shown as the library wrote it."""
    params = {}
    if name == "fc" and (m := re.fullmatch(r"average pool, (\d+)-d fc, softmax", text)):
        params = {"n": int(m.group(1))}
    key = f"arch.block.{name}"
    if has(key) and text == t(key, "en", **params):
        return t(key, L, **params)
    return text


def table_value(arch: str, table: list[dict], L: str) -> dict:
    """The Dataframe's value: headers, row names and the paper's words in ``L`` (a Dataframe's headers are not
    translated by the browser); sizes, counts and the stages' names stay as they are."""
    rows = display_rows(arch, table)
    for row in rows:
        row[2] = _block(row[0], row[2], L)
        if has(f"arch.row.{row[0]}"):  # pool, total
            row[0] = t(f"arch.row.{row[0]}", L)
    return {"headers": headers(L), "data": rows}


@friendly
def show_layer_table(arch: str, image_size: float, version: str, request: gr.Request = None):
    """The table rows, a totals sentence, and the block drawing."""
    L = lang(request)
    if arch not in ARCHS:
        raise error(BadSetting, "arch.unknown", arch=arch)
    size = int(image_size or 224)
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise error(BadSetting, "arch.size_range", lo=MIN_SIZE, hi=MAX_SIZE)
    return copy.deepcopy(answer(arch, size, version == "v1", L))  # Gradio may change what it is handed


@lru_cache(maxsize=256)
def answer(arch: str, size: int, v1: bool, L: str) -> tuple:
    """One answer per depth, size, variant and language, its drawing encoded once: a class switching depths asks for
    the same few again and again, and the drawing (about 0.15 s of the interpreter's lock) would be every
    request's cost."""
    table = layer_table(arch, size, stride_in_1x1=v1)
    tot = totals(table)
    spec = ARCHS[arch]
    paper = spec.paper_gmacs
    summary = t("arch.totals", L, title=spec.title, params=tot["params"] / 1e6, macs=tot["macs"] / 1e9,
                size=size)
    if spec.block is BasicBlock:  # no 1×1 conv: v1 and v1.5 are the same network
        if paper:
            summary += " " + t("arch.paper_flops_basic", L, paper=paper)
        summary += " " + t("arch.basic_same", L)
    elif paper:
        summary += " " + t("arch.paper_flops", L, paper=paper)
        if not v1:
            summary += " " + t("arch.v15_note", L)
    return table_value(arch, table, L), summary, plot_data(block_diagram(arch, L))


def note_value(table: NoteTable, L: str) -> dict:
    """The note's table as the Dataframe's value: row names and the paper's words in ``L``, the networks' names as
    column headers, the brackets and counts as they are."""
    rows = []
    for row in table.rows:
        name = t(f"arch.row.{row.name}", L) if has(f"arch.row.{row.name}") else row.name
        # A bracket's layers one under the other, as the note draws them; 10⁹ is narrower than 10^9 on a phone.
        rows.append([name, row.output_size, *("\n".join(cell_lines(_block(row.name, cell, L))).replace("^9", "⁹")
                                              for cell in row.cells)])
    return {"headers": [t("arch.col.layer", L), t("arch.col.output_size", L), *table.titles], "data": rows}


@friendly
def show_note_table(version: str, request: gr.Request = None):
    """The note's table for the chosen bottleneck variant, the bottleneck beside a basic block, and its sentence."""
    return copy.deepcopy(note_answer(version == "v1", lang(request)))


@lru_cache(maxsize=8)
def note_answer(v1: bool, L: str) -> tuple:
    """Two variants × two languages: computed and drawn once each (the counts underneath are cached too)."""
    blocks = block_comparison()
    return (note_value(note_table(v1=v1), L), plot_data(block_compare_figure(blocks, L)),
            block_sentence(blocks, L, v1=v1))


def build(ctx) -> None:
    with gr.Tab(ctx("tab.architecture"), id="architecture"):
        gr.Markdown(ctx("arch.intro"))
        with gr.Row():
            arch = gr.Dropdown(arch_choices(), value="resnet50", label=ctx("arch.depth"), elem_id="arch-depth")
            size = gr.Number(224, label=ctx("arch.image_size"), minimum=MIN_SIZE, maximum=MAX_SIZE, precision=0)
            version = gr.Radio([(ctx(key), value) for key, value in VERSIONS], value="v1", label=ctx("arch.version"))
        summary = gr.Markdown(elem_id="arch-summary")
        # No static headers: the page's first load fills the table, headers in the visitor's language.
        table = gr.Dataframe(column_count=len(HEADER_KEYS), interactive=False, wrap=True, elem_id="arch-table",
                             column_widths=COLUMN_WIDTHS, elem_classes=["table-fits"])
        with gr.Row():
            diagram = gr.Plot(label=ctx("arch.block"), show_label=True, elem_id="arch-diagram")
            explained(ctx, "arch.why")
        gr.Markdown(ctx("arch.note.intro"))
        note = gr.Dataframe(column_count=len(NOTE_COLUMN_WIDTHS), interactive=False, wrap=True,
                            elem_id="arch-note-table", column_widths=NOTE_COLUMN_WIDTHS, elem_classes=["table-fits"],
                            datatype=["str", "str", *["markdown"] * 5], line_breaks=True, max_height=2000)
        with gr.Row():
            compare = gr.Plot(label=ctx("arch.compare.label"), show_label=True, elem_id="arch-compare")
            compare_text = gr.Markdown(elem_id="arch-compare-text")
        version.change(show_note_table, [version], [note, compare, compare_text], api_name="note_table", **ctx.cheap)
        ctx.on_load(show_note_table, [version], [note, compare, compare_text])
        inputs, outputs = [arch, size, version], [table, summary, diagram]
        arch.change(show_layer_table, inputs, outputs, api_name="layer_table", **ctx.cheap)
        for trigger in (size.submit, version.change):
            trigger(show_layer_table, inputs, outputs, api_visibility="private", **ctx.cheap)
        ctx.on_load(show_layer_table, inputs, outputs)
        ctx.copy_link("architecture")
