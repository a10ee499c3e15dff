"""The classify tab."""
import gradio as gr


def build(ctx) -> None:
    with gr.Tab(ctx("tab.classify"), id="classify"):
        gr.Markdown("…")
