"""About tab: the note's ideas in a few paragraphs, for reading before or after the demos."""
import gradio as gr

from ..common import explained


def build(ctx) -> None:
    with gr.Tab(ctx("tab.about"), id="about"):
        for key in ("about.highlights", "about.batchnorm", "about.transfer", "about.groups"):
            explained(ctx, key)
        ctx.copy_link("about")
