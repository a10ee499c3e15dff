"""The about tab."""
import gradio as gr


def build(ctx) -> None:
    with gr.Tab(ctx("tab.about"), id="about"):
        gr.Markdown("…")
