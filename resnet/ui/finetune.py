"""The finetune tab."""
import gradio as gr


def build(ctx) -> None:
    with gr.Tab(ctx("tab.finetune"), id="finetune"):
        gr.Markdown("…")
