"""The features tab."""
import gradio as gr


def build(ctx) -> None:
    with gr.Tab(ctx("tab.features"), id="features"):
        gr.Markdown("…")
