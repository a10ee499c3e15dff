"""The lesson: the note walked in its order, each step a prediction, a real run at lesson size, and a reading of
what that run showed. Plain Python (no Gradio): the Lesson tab (``resnet.ui.tabs.lesson``) draws and shares it."""
from .readings import answer_text, choice_text, reading, takeaway, verdict_line
from .steps import BY_ID, STEPS, Step, close_enough, step_at

__all__ = ["BY_ID", "STEPS", "Step", "answer_text", "choice_text", "close_enough", "reading", "step_at", "takeaway",
           "verdict_line"]
