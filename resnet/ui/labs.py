"""The labs tab."""
import gradio as gr


def build(ctx) -> None:
    with gr.Tab(ctx("tab.labs"), id="labs"):
        gr.Markdown("…")
