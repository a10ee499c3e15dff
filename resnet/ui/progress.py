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
PULSE = "rl-pulse"     # a run without a bar (no gr.Progress): only a thin pulse while it streams


def strip(elem_id: str, *, bar: bool = True) -> gr.HTML:
    """An empty strip to hold a run's progress (place it just above the run's plot). ``bar``: the run reports its
    progress (``gr.Progress``), so the strip keeps the bar's height all the run long; else it is a thin pulse."""
    return gr.HTML("", elem_id=elem_id, elem_classes=[CLASS] if bar else [CLASS, PULSE], padding=False,
                   container=False)


def live(strip_component: gr.HTML) -> dict:
    """An event's keyword arguments that put its progress on ``strip_component`` instead of over its outputs."""
    return dict(show_progress="full", show_progress_on=[strip_component])


class Steady:
    """A ``gr.Progress`` that can say its last report again. Each output a generator yields turns Gradio's tracker
    into its "streaming" look (no bar) until the next report: a handler that yields a status line between two steps
    made the bar blink. ``again()`` right after a yield brings the bar back at once (``steadily`` does it)."""

    def __init__(self, progress):
        self._progress, self._last = progress, None

    def __call__(self, *args, **kwargs) -> None:
        self._last = (args, kwargs)
        self._progress(*args, **kwargs)

    def again(self) -> None:
        if self._last is not None:
            self._progress(*self._last[0], **self._last[1])


async def steadily(items, progress: Steady):
    """``items`` (an async generator of a handler's outputs), with ``progress``'s last report said again after each."""
    try:
        async for item in items:
            yield item
            progress.again()
    finally:
        await items.aclose()
