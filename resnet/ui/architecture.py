"""The architecture tab."""
import gradio as gr


def build(ctx) -> None:
    with gr.Tab(ctx("tab.architecture"), id="architecture"):
        gr.Markdown("…")
