"""A run's progress strip: the one place a long run shows Gradio's progress (queue position, ``gr.Progress``'s bar
and time left, a pulse while a generator streams), so that nothing covers the run's outputs.

By default Gradio draws its progress overlay over every output of an event, from Start to the end: the curves, the
results table, the model files and the "try it" dropdown of a fine-tune were hidden for the whole run although a new
figure came every epoch. A training-type event is instead wired with ``live(strip)``: the overlay goes on the strip
alone (``show_progress_on``), and the outputs stay visible, and change, while the run goes on. The strip takes no room
while nothing runs (``style.css``: ``.rl-progress``).
"""
from __future__ import annotations

import gradio as gr

CLASS = "rl-progress"  # style.css sizes the strip by its tracker's state: none idle, a bar while running


def strip(elem_id: str) -> gr.HTML:
    """An empty strip to hold a run's progress (place it just above the run's plot)."""
    return gr.HTML("", elem_id=elem_id, elem_classes=[CLASS], padding=False, container=False)


def live(strip_component: gr.HTML) -> dict:
    """An event's keyword arguments that put its progress on ``strip_component`` instead of over its outputs."""
    return dict(show_progress="full", show_progress_on=[strip_component])
