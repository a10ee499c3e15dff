"""Lesson tab: the note in ten steps (``resnet.lesson``), each one predict → run → see.

A step's run is shared by everyone who asks for it (``resnet.train.jobs``): its key is the step's settings, not the
visitor's language or prediction, so a class pressing Run together costs one run, and a later press replays it. Each
visitor's figure is drawn once per update and language; the takeaway, which compares the visitor's own committed
prediction with the run, is written for each visitor at the end and is hidden until then.
"""
from __future__ import annotations

import math
import time

import gradio as gr

from ...errors import BadSetting
from ...i18n import error, t
from ...keys import job_key
from ...lesson import STEPS, Step, answer_text, choice_text, step_at, takeaway
from .. import sharing
from . import classroom
from ..common import friendly, lang
from ..figures.lesson import step_figure
from ..progress import live, strip


def _step(number) -> Step:
    try:
        return step_at(number)
    except ValueError:
        raise error(BadSetting, "lesson.bad_step", step=sharing.identity(number), n=len(STEPS)) from None


def _answer(step: Step, choice, number):
    """The prediction as committed: one of the step's choices, or a finite number."""
    if step.numeric:
        value = choice if number is None and isinstance(choice, (int, float)) else number
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise error(BadSetting, "lesson.need_answer")
        return float(value)
    if choice is None or choice == "":
        raise error(BadSetting, "lesson.need_answer")
    if choice not in step.choices:
        raise error(BadSetting, "lesson.bad_answer", answer=str(choice)[:40])
    return choice


def _number(text) -> float | None:
    """A committed number, sent as text (or as a number by an API client)."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    try:
        return float(str(text)[:40])
    except ValueError:
        return None


def step_key(step: Step) -> str:
    """The run's identity: what the step runs (the same for every visitor and language, and for two steps that read
    one run, such as the race's plain and residual pairs)."""
    return job_key("lesson", settings=step.identity())


@friendly
def show_step(step: float, request: gr.Request = None):
    """A step's title, explanation and question, its answers open, nothing of a run shown yet."""
    L = lang(request)
    s = _step(step)
    choices = [(choice_text(s, c, L), c) for c in s.choices]
    link = t("lesson.full_tab", L, tab=t(f"tab.{s.tab}", L), link=f"?tab={s.tab}")
    return (f"### {t(f'lesson.{s.id}.title', L)}\n\n{t(f'lesson.{s.id}.explain', L)}",
            f"**{t(f'lesson.{s.id}.question', L)}**",
            gr.update(choices=choices, value=None, visible=not s.numeric, interactive=True),
            gr.update(value=None, visible=s.numeric, interactive=True),
            "", gr.update(interactive=False), None, "", gr.update(value="", visible=False), link, "")


@friendly
def commit(step: float, choice, number, request: gr.Request = None):
    """Lock the visitor's prediction; only then can the run be started."""
    L = lang(request)
    s = _step(step)
    answer = _answer(s, choice, number)
    return (str(answer), t("lesson.committed", L, answer=answer_text(s, answer, L)), gr.update(interactive=False),
            gr.update(interactive=False), gr.update(interactive=True))


def _status(s: Step, item, L: str) -> str:
    """One line of a run's progress from its latest update."""
    if s.id in ("degradation", "residual", "bn_on_off", "bn_batch"):
        return t("lesson.progress.race", L, step=item.step, steps=item.steps)
    if s.id == "deep" and item.plain is None:
        return t("lesson.progress.deep", L)
    if s.id == "transfer":
        ev = item.event
        if ev.kind == "epoch":
            return t("lesson.progress.finetune", L, strategy=t(f"strategy.{ev.strategy}.title", L), epoch=ev.epoch,
                     epochs=ev.epochs)
        return t("lesson.progress.prepare", L)
    return ""


def _json(value):
    """Numbers as JSON can hold them: a loss that overflowed becomes the text "nan" or "inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


@sharing.keyed(lambda step, answer, L: step_key(step_at(step)))
@friendly
async def run_step(step: float, answer, request: gr.Request = None):
    """A generator: the step's figure as the run goes, a progress line, then the takeaway (the visitor's
    prediction, what this run showed, and the claim it tests) and the run's numbers (for the API)."""
    L = lang(request)
    s = _step(step)
    if answer is None or answer == "":
        raise error(BadSetting, "lesson.need_commit")
    answer = _answer(s, answer, _number(answer) if s.numeric else None)
    start = time.perf_counter()
    sub = sharing.JOBS.subscribe(step_key(s), s.run, limited=s.trains, label="lesson")
    last = None
    with sharing.stoppable("lesson_run", request, sub):
        async for item in sub.aevents(timeout=1.0):
            if item is sharing.TICK:
                if sub.state == "waiting":
                    yield gr.skip(), sharing.waiting(sub, L), gr.skip(), gr.skip()
                continue
            last = item
            if sub.behind:
                continue
            plot = await sharing.shared_plot(sub, (id(item), L), lambda item=item: step_figure(s, item, L))
            yield plot, t("lesson.running", L, status=_status(s, item, L)), gr.skip(), gr.skip()
        if sub.closed:  # its Stop button detached it: the takeaway waits for a whole run
            yield gr.skip(), t("jobs.stopped", L), gr.skip(), gr.skip()
            return
        if last is None:
            return
        numbers = sub.memo(("numbers", id(last)), lambda: s.numbers(last))
        plot = await sharing.shared_plot(sub, (id(last), L), lambda: step_figure(s, last, L))
        done = t("lesson.done", L, seconds=time.perf_counter() - start)
        note = sharing.note(sub, L)
        yield (plot, note + "\n\n" + done if note else done,
               gr.update(value=takeaway(s, numbers, answer, L), visible=True), _json(numbers))


def build(ctx) -> None:
    with gr.Tab(ctx("tab.lesson"), id="lesson"):
        gr.Markdown(ctx("lesson.intro"))
        step = gr.Dropdown([(ctx(f"lesson.{s.id}.title"), i) for i, s in enumerate(STEPS, 1)], value=1,
                           label=ctx("lesson.step"), elem_id="lesson-step")
        with gr.Row():
            prev = gr.Button(ctx("lesson.prev"), size="sm")
            nxt = gr.Button(ctx("lesson.next"), size="sm")
        explain = gr.Markdown(elem_id="lesson-explain")
        question = gr.Markdown(elem_id="lesson-question")
        choice = gr.Radio([], label=ctx("lesson.predict"), elem_id="lesson-choice")
        number = gr.Number(None, label=ctx("lesson.number"), visible=False, elem_id="lesson-number")
        # The committed prediction, as text: a hidden box rather than a State, so that an API client can send one.
        committed_answer = gr.Textbox(visible=False)
        with gr.Row():
            commit_button = gr.Button(ctx("lesson.commit"), elem_id="lesson-commit")
            run_button = gr.Button(ctx("lesson.run"), variant="primary", interactive=False, elem_id="lesson-run")
            stop_button = gr.Button(ctx("finetune.stop"), size="sm", scale=0, min_width=80, elem_id="lesson-stop")
        committed = gr.Markdown(elem_id="lesson-committed")
        bar = strip("lesson-progress", bar=False)
        plot = gr.Plot(show_label=False, elem_id="lesson-plot")
        status = gr.Markdown(elem_id="lesson-status")
        see = gr.Markdown(visible=False, elem_id="lesson-takeaway")
        link = gr.Markdown(elem_id="lesson-link")
        numbers = gr.JSON(visible=False)  # the run's numbers, for API clients (the takeaway quotes them)
        shown = [explain, question, choice, number, committed, run_button, plot, status, see, link, committed_answer]
        step.change(show_step, [step], shown, api_name="lesson", **ctx.cheap)
        ctx.on_load(show_step, [step], shown)
        moves = [prev.click(lambda n: max(1, int(n or 1) - 1), [step], [step], api_visibility="private", **ctx.cheap),
                 nxt.click(lambda n: min(len(STEPS), int(n or 1) + 1), [step], [step], api_visibility="private",
                           **ctx.cheap)]
        commit_button.click(commit, [step, choice, number], [committed_answer, committed, choice, number, run_button],
                            api_name="lesson_commit", **ctx.cheap)
        run_button.click(run_step, [step, committed_answer], [plot, status, see, numbers], api_name="lesson_run",
                         **ctx.train, **live(bar))
        stop_button.click(sharing.stopper("lesson_run"), None, None, api_visibility="private", **ctx.cheap)
        classroom.build(ctx, step, moves, committed_answer)
        ctx.copy_link("lesson")
