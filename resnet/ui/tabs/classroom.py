"""The Lesson tab's live class (``resnet.classroom``): the teacher starts a room and leads; students' pages follow.

A page is in a room when its link says so: ``?tab=lesson&room=CODE`` (a student) or ``…&key=KEY`` (the teacher, who
alone drives it). Each page in a room holds one follow stream: an async generator that waits on the room's version
(``ROOMS.changed``: no thread, no polling while nothing changes) and, on each change, moves a following student's
step and redraws the class line. The stream ends every few minutes or when its connection drops, and the page
starts it again by itself (``rejoin``).
"""
from __future__ import annotations

import html
import json
import secrets
import time
from functools import lru_cache

import gradio as gr
import segno

from ...classroom import ROOMS, RoomError, assign, experiment_for
from ...classroom import numbers as pool_numbers
from ...classroom import run_assignment
from ...classroom.room import Room
from ...i18n import error, message, t
from ...lesson import choice_text, step_at
from .. import sharing
from ..common import friendly, lang
from ..figures.classroom import class_figure
from ..pages import client_address

STREAM_S = 240.0  # a follow stream's length: the page starts a new one, so a dropped connection rejoins by itself
WAIT_S = 25.0     # one wait for a change; a heartbeat keeps the page counted as present in between


def _sid(request: gr.Request | None) -> str:
    return (getattr(request, "session_hash", None) or "")[:64]


def _links(request: gr.Request | None, code: str, key: str | None = None) -> tuple[str, str]:
    """The students' link and the teacher's, absolute (as the page was reached: a proxy's scheme and host)."""
    headers = (getattr(request, "headers", None) or {}) if request is not None else {}
    host = str(headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1:7860")[:200]
    scheme = "https" if headers.get("x-forwarded-proto") == "https" else "http"
    student = f"{scheme}://{host}/?tab=lesson&room={code}"
    return student, (f"{student}&key={key}" if key else "")


def invitation(request: gr.Request | None, code: str, key: str, L: str) -> tuple[str, str]:
    """For the projector: the code, the students' link and its QR code (HTML); for the teacher alone: their link."""
    student, teacher = _links(request, code, key)
    qr = segno.make(student, error="m").svg_data_uri(scale=5, border=2)
    shown = (f"<div class='rl-invite'><img src='{qr}' alt='QR' width='180' height='180'/><div>"
             + t("class.invite", L, code=code, link=html.escape(student)) + "</div></div>")
    return shown, t("class.teacher_link", L, link=teacher)


@friendly
def start_class(request: gr.Request = None):
    """A new room, the teacher's page driving it: its code and the two links."""
    L = lang(request)
    room, key = ROOMS.create()
    ROOMS.drive(room.code, key, lambda r: r.move(tab="lesson", step=1))
    return (room.code, key, *invitation(request, room.code, key, L), *_role(True))


@friendly
def enter(request: gr.Request = None):
    """On page load: join the room the link names (a student), or take it back (the teacher's link)."""
    L = lang(request)
    params = dict(getattr(request, "query_params", None) or {})
    code, key = str(params.get("room", ""))[:16], str(params.get("key", ""))[:64]
    if not code:
        return ("", "", gr.skip(), gr.skip(), *[gr.skip()] * 9)  # no class: the page as it is
    if key:
        room = ROOMS.authorize(code, key)
        return (room.code, key, *invitation(request, room.code, key, L), *_role(True))
    room = ROOMS.get(code, address=client_address(request))
    room.join(_sid(request), str(params.get("student", ""))[:32])  # ?student=<a display name>, optional
    return (room.code, "", t("class.joined", L, code=room.code), "", *_role(False))


def _role(teacher: bool) -> tuple:
    """The class panel shown, with the teacher's buttons (reveal, the class experiment, spotlight, projector) or the
    students' (snap back, explore, run my part)."""
    return (gr.update(visible=True), *[gr.update(visible=not teacher)] * 3, *[gr.update(visible=teacher)] * 5)


def _check(code: str, request: gr.Request | None) -> Room:
    """The room of ``code``, looked up as a stranger's guess is: a wrong code counts against the caller's address,
    so that no event (following, moving, answering, driving) can be used to try codes faster than joining can."""
    return ROOMS.get(code, address=client_address(request))


def _room(code: str, key: str, request: gr.Request | None) -> tuple[Room, bool]:
    """The room, and whether this page is its teacher's."""
    room = _check(code, request)
    if key:
        return ROOMS.authorize(room.code, key), True
    return room, False


def _distribution(step, dist: dict | None, L: str) -> str:
    """The class's answers as a short bar list (no names)."""
    if not dist or not dist.get("answered"):
        return ""
    if "values" in dist:
        values = dist["values"]
        return t("class.values", L, n=len(values), low=values[0], median=values[len(values) // 2], high=values[-1])
    lines = []
    for choice in step.choices:
        count = dist["counts"].get(choice, 0)
        lines.append(f"- {choice_text(step, choice, L)}: {'█' * count} {count}")
    return "\n".join(lines)


def class_text(view: dict, teacher: bool, L: str) -> str:
    """The class line: the teacher's dashboard, or a student's own state and, once revealed, the class's answers;
    for both, how far the class experiment is."""
    return "\n\n".join(p for p in (_people_text(view, teacher, L), _pool_text(view, L)) if p)


def _pool_text(view: dict, L: str) -> str:
    pool, parts = view.get("pool"), []
    if pool:
        figure = pool["figure"]
        parts.append(t("class.pool_progress", L, done=figure["done"], total=figure["total"]))
    result = (view.get("spotlight") or {}).get("result")
    if result:
        metric = next(iter(k for k in ("val_acc", "loss") if k in (result.get("numbers") or {})), None)
        setting = ", ".join(f"{t(f'class.plot.x.{k}', L)} {_value(k, v, L)}" for k, v in result["values"].items())
        value = result["numbers"][metric] if metric else ""
        parts.append(t("class.spotlight", L, setting=setting, metric=t(f"class.plot.metric.{metric}", L) if metric
                       else "", value=f"{value:.3f}" if isinstance(value, float) else value))
    return "\n\n".join(parts)


def _people_text(view: dict, teacher: bool, L: str) -> str:
    position = view["position"]
    step = step_at(position["step"])
    if teacher:
        c = view["counts"]
        jobs = sharing.JOBS.stats()
        parts = [t("class.dashboard", L, code=view["code"], step=position["step"], joined=c["joined"],
                   answered=c["answered"], following=c["following"], exploring=c["exploring"],
                   running=c["running"], waiting=c["waiting"]),
                 t("class.load", L, running=jobs["running"], waiting=jobs["waiting"], rooms=ROOMS.stats()["rooms"])]
        answers = _distribution(step, view.get("answers"), L)
        if answers:
            parts.append(t("class.answers_so_far", L) + "\n\n" + answers)
        return "\n\n".join(parts)
    you = view["you"]
    key = "class.following" if you["state"] == "following" else "class.exploring"
    parts = [t(key, L, code=view["code"], step=position["step"], answered=view["answered"])]
    if view.get("part"):
        parts.append(t("class.your_part", L, part=view["part"]))
    if view.get("distribution"):
        parts.append(t("class.revealed", L) + "\n\n" + _distribution(step, view["distribution"], L))
    return "\n\n".join(parts)


def part_text(room: Room, sid: str, L: str) -> str:
    """What a student runs in the class experiment: their runs' settings, in words."""
    pool = room.pool
    if pool is None:
        return ""
    i, n = room.pool_index(sid)
    runs = assign(pool["experiment"], i, n, pool["seeds"])
    return "; ".join(", ".join(f"{t(f'class.plot.x.{k}', L)} {_value(k, v, L)}" for k, v in a.values.items())
                     + (f" (seed {a.seed})" if pool["seeds"] > 1 else "") for a in runs)


def _value(name: str, value, L: str) -> str:
    if name == "strategy":
        return t(f"strategy.{value}.title", L)
    if name == "shortcuts":
        return t("class.plot.residual" if value else "class.plot.plain", L)
    return str(value)


@lru_cache(maxsize=64)
def _plot(data: str, L: str):
    """The class plot for one state of the results, drawn once for every follower who sees it."""
    return sharing.plot_data(class_figure(json.loads(data), L))


def class_plot(view: dict, L: str):
    pool = view.get("pool")
    if not pool:
        return gr.update(visible=False)
    return gr.update(value=_plot(json.dumps(pool["figure"], sort_keys=True), L), visible=True)


async def follow(code: str, key: str, request: gr.Request = None):
    """A generator: (the step a following student is moved to, the class line, the class plot), on every change of
    the room."""
    if not code:
        return
    L, sid = lang(request), _sid(request)
    try:
        room, teacher = _room(code, key, request)
        if not teacher and sid not in room.students:
            room.join(sid)  # a page that lost its place (the server forgot it) takes one again
    except RoomError as e:
        yield gr.skip(), message(e, L), gr.skip()
        return
    version, end, shown = -1, time.monotonic() + STREAM_S, None
    while time.monotonic() < end and not room.closed:
        view = room.teacher_view() if teacher else room.student_view(sid)
        if view["version"] != version:
            version = view["version"]
            following = not teacher and view["you"]["state"] == "following"
            if not teacher:
                view["part"] = part_text(room, sid, L)
            shown = class_text(view, teacher, L)
            yield ((gr.update(value=view["position"]["step"]) if following else gr.skip()), shown,
                   class_plot(view, L))
        elif teacher and (text := class_text(view, teacher, L)) != shown:  # the server's load moved
            shown = text
            yield gr.skip(), text, gr.skip()
        if not teacher:
            room.seen(sid)
        await ROOMS.changed(room.code, version, WAIT_S)
    if room.closed:
        yield gr.skip(), t("class.ended", L), gr.skip()


@friendly
def moved(step: float, code: str, key: str, request: gr.Request = None):
    """The visitor moved to ``step`` by hand: the teacher takes the class along; a student breaks away."""
    if not code:
        return
    code = _check(code, request).code
    if key:
        number = int(step_at(step) and step)
        ROOMS.drive(code, key, lambda r: r.move(tab="lesson", step=number))
    else:
        sid = _sid(request)
        ROOMS.update(code, lambda r: r.follow(sid, False))


@friendly
def snap_back(code: str, request: gr.Request = None):
    if code:
        code, sid = _check(code, request).code, _sid(request)
        ROOMS.update(code, lambda r: r.follow(sid, True))


@friendly
def explore(code: str, request: gr.Request = None):
    if code:
        code, sid = _check(code, request).code, _sid(request)
        ROOMS.update(code, lambda r: r.follow(sid, False))


@friendly
def answered(step: float, answer: str, code: str, key: str, request: gr.Request = None):
    """A student's committed prediction, into the room's (anonymous) count."""
    if not code or key or not answer:
        return
    s = step_at(step)
    value = float(answer) if s.numeric else answer
    code, sid = _check(code, request).code, _sid(request)
    ROOMS.update(code, lambda r: r.answer(sid, s.id, value))


@friendly
def reveal(step: float, code: str, key: str, request: gr.Request = None):
    if code and key:
        code, step_id = _check(code, request).code, step_at(step).id
        ROOMS.drive(code, key, lambda r: r.reveal(step_id))


def _start_pool(step: float, seeds: int, code: str, key: str, request: gr.Request | None) -> None:
    """The teacher spreads the step's class experiment over the students (again, with more seeds, for error bars)."""
    if code and key:
        code, experiment = _check(code, request).code, experiment_for(step_at(step).id).id
        ROOMS.drive(code, key, lambda r: r.start_pool(experiment, seeds))


@friendly
def start_pool(step: float, code: str, key: str, request: gr.Request = None):
    _start_pool(step, 1, code, key, request)


@friendly
def start_pool_seeds(step: float, code: str, key: str, request: gr.Request = None):
    _start_pool(step, 3, code, key, request)


@friendly
async def run_part(code: str, request: gr.Request = None):
    """A student's part of the class experiment: each of their runs (shared with anyone who has the same one), its
    result added to the class plot as it finishes. A generator of one progress line."""
    L, sid = lang(request), _sid(request)
    room = _check(code, request)
    pool = room.pool
    if pool is None:
        raise error(RoomError, "classroom.no_pool")
    i, n = room.pool_index(sid)
    runs = assign(pool["experiment"], i, n, pool["seeds"])
    room.set_run(sid, "running")
    try:
        for number, a in enumerate(runs, 1):
            start = time.perf_counter()
            sub = sharing.JOBS.subscribe(a.key(), lambda cancel, a=a: run_assignment(a, cancel), limited=True,
                                         label="class_pool")
            last = None
            try:
                async for item in sub.aevents(timeout=1.0):
                    if item is sharing.TICK:
                        if sub.state == "waiting":
                            yield sharing.waiting(sub, L)
                        continue
                    last = item
                    yield t("class.running_part", L, n=number, of=len(runs))
            finally:
                sub.close()
            if last is not None:
                result = pool_numbers(a, last)
                room.add_result(a.key(), a.to_dict(), result, time.perf_counter() - start)
        room.set_run(sid, "done", {"values": runs[-1].values, "numbers": result} if last is not None else None)
        yield t("class.part_done", L, n=len(runs))
    except BaseException:
        room.set_run(sid, "idle")
        raise


@friendly
def spotlight(code: str, key: str, request: gr.Request = None):
    """Show one student's finished run to the class, without their name (a different one each press)."""
    if not (code and key):
        return
    room = ROOMS.authorize(_check(code, request).code, key)
    done = [s["id"] for s in room.teacher_view()["students"] if s["has_result"]]
    if done:
        pick = secrets.choice(done)
        ROOMS.drive(code, key, lambda r: r.show(pick))


def build(ctx, step: gr.Dropdown, moves: list, committed: gr.Textbox) -> None:
    """The live-class section of the Lesson tab, wired to its step list, the events that move it (Previous, Next)
    and the committed prediction."""
    with gr.Accordion(ctx("class.title"), open=False, elem_id="class-section"):
        gr.Markdown(ctx("class.explain"))
        start = gr.Button(ctx("class.start"), elem_id="class-start", size="sm")
    info = gr.HTML(elem_id="class-info")
    mine = gr.Markdown(elem_id="class-teacher-link", elem_classes=["rl-private"])
    code = gr.Textbox(visible=False, elem_id="class-code")
    key = gr.Textbox(visible=False, elem_id="class-key")
    with gr.Group(visible=False) as panel:
        line = gr.Markdown(elem_id="class-line")
        with gr.Row():
            back = gr.Button(ctx("class.snap_back"), size="sm", elem_id="class-snap-back")
            away = gr.Button(ctx("class.explore"), size="sm", elem_id="class-explore")
            run_mine = gr.Button(ctx("class.run_part"), size="sm", variant="primary", elem_id="class-run-part")
        with gr.Row():
            show = gr.Button(ctx("class.reveal"), size="sm", elem_id="class-reveal")
            pool_one = gr.Button(ctx("class.pool"), size="sm", elem_id="class-pool")
            pool_more = gr.Button(ctx("class.pool_seeds"), size="sm", elem_id="class-pool-seeds")
            spot = gr.Button(ctx("class.spotlight_button"), size="sm", elem_id="class-spotlight")
            projector = gr.Button(ctx("class.projector"), size="sm", elem_id="class-projector")
        part_status = gr.Markdown(elem_id="class-part-status")
        plot = gr.Plot(visible=False, show_label=False, elem_id="class-plot")
        # In the page, out of sight: scripts press it.
        rejoin = gr.Button(ctx("class.rejoin"), visible="hidden", elem_id="class-rejoin")
    private = dict(api_visibility="private", **ctx.cheap)
    roles = [code, key, info, mine, panel, back, away, run_mine, show, pool_one, pool_more, spot, projector]
    # A page in a class holds one follow stream. It starts once the page knows its room (a moment after the code is
    # set, so that the key is set too); when it ends (its time is up, or the connection dropped) the page starts
    # another, a second later, or later and later when streams keep ending at once (a class that has ended).
    begin = ("() => { setTimeout(() => { window.__rlStart = Date.now(); "
             "document.querySelector('#class-rejoin')?.click(); }, 300); return []; }")
    again = ("() => { const w = window, quick = w.__rlStart && Date.now() - w.__rlStart < 5000; "
             "w.__rlDelay = quick ? Math.min((w.__rlDelay || 1000) * 2, 60000) : 1000; "
             "setTimeout(() => { w.__rlStart = Date.now(); document.querySelector('#class-rejoin')?.click(); }, "
             "w.__rlDelay); return []; }")
    start.click(start_class, None, roles, **private)
    ctx.on_load(enter, None, roles)
    code.change(None, js=begin, api_visibility="private")
    rejoin.click(follow, [code, key], [step, line, plot], show_progress="hidden", **private).then(
        None, js=again, api_visibility="private")
    step.input(moved, [step, code, key], None, **private)
    for event in moves:
        event.then(moved, [step, code, key], None, **private)
    committed.change(answered, [step, committed, code, key], None, **private)
    back.click(snap_back, [code], None, **private)
    away.click(explore, [code], None, **private)
    show.click(reveal, [step, code, key], None, **private)
    pool_one.click(start_pool, [step, code, key], None, **private)
    pool_more.click(start_pool_seeds, [step, code, key], None, **private)
    spot.click(spotlight, [code, key], None, **private)
    # The projector: large type, and nothing a student does not need (nor the teacher's own link) on the wall.
    projector.click(None, js="() => { document.body.classList.toggle('rl-projector'); return []; }",
                    api_visibility="private")
    run_mine.click(run_part, [code], [part_status], api_visibility="private", **ctx.train)
