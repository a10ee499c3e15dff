"""One live class: where the teacher is, who follows, what each answered, and the class's pooled runs.

Every change bumps ``version`` and wakes whoever waits on it (``wait_for_change``, or ``changed`` in an async
handler, which holds no thread), so a follower's page long-polls: it draws the room, then waits for the next
version, and a step change reaches it as soon as the teacher makes it. A student's heartbeat (``seen``) keeps the
room alive without waking anyone.

What a page is shown is one of three views, each a plain dict (JSON): ``teacher_view`` (the dashboard: names,
states, counts, every answer), ``projector_view`` (the class on the wall: counts and, once revealed, the
distribution; no names), ``student_view(id)`` (that student's own answers and the class's distribution only after
the teacher reveals; never another student's name or answer). Students are known by an opaque per-page id; their
display name is optional and only the teacher sees it.
"""
from __future__ import annotations

import asyncio
import math
import threading
import time
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from ..i18n import error
from .errors import RoomError, RoomFull

MAX_STUDENTS = 120     # pages one room takes (a class of thirty, with spares for reloads and a second device)
NAME_LENGTH = 32       # characters of a display name kept
ID_LENGTH = 64         # a page id longer than this is refused
AWAY_S = 45.0          # a student not seen for this long shows as away on the dashboard
STATES = ("following", "exploring")
RUNS = ("idle", "waiting", "running", "done")
TABS = ("lesson", "architecture", "classify", "features", "finetune", "labs", "about")
MAX_SETTINGS = 40      # settings the teacher's position may carry (a tab's link parameters)


def clean_name(name) -> str:
    """A display name as shown: printable characters only, spaces collapsed, at most ``NAME_LENGTH``."""
    if not isinstance(name, str):
        return ""
    kept = "".join(c for c in name if unicodedata.category(c)[0] not in "CZ" or c == " ")
    return " ".join(kept.split())[:NAME_LENGTH]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _plain(value, depth: int = 0):
    """A setting's value if it is plain JSON (numbers, text, lists and dicts of them, not too deep); else raise."""
    if depth > 4:
        raise error(RoomError, "classroom.bad_setting", what="too deep")
    if value is None or isinstance(value, (bool, str)) or _finite(value):
        if isinstance(value, str) and len(value) > 500:
            raise error(RoomError, "classroom.bad_setting", what="text too long")
        return value
    if isinstance(value, (list, tuple)) and len(value) <= 64:
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, dict) and len(value) <= MAX_SETTINGS:
        return {str(k)[:64]: _plain(v, depth + 1) for k, v in value.items()}
    raise error(RoomError, "classroom.bad_setting", what=type(value).__name__)


@dataclass
class Student:
    """One page in the class: its display name (only the teacher sees it), whether it follows the teacher, its
    committed answers (step id → answer), its run and its last run's result (for the spotlight)."""

    id: str
    name: str
    joined: float
    seen: float
    state: str = "following"
    answers: dict = field(default_factory=dict)
    run: str = "idle"
    result: dict | None = None


@dataclass
class Position:
    """Where the teacher is: the tab, the lesson step (1 … 10), that tab's settings (its link's parameters)."""

    tab: str = "lesson"
    step: int = 1
    settings: dict = field(default_factory=dict)


@dataclass(eq=False)
class Room:
    """A class's state. Change it only through its methods (each takes the room's lock, bumps ``version`` and wakes
    the waiters); read it through the views."""

    code: str
    created: float
    clock: Callable[[], float] = field(default=time.time, repr=False)
    last_active: float = 0.0
    version: int = 0
    position: Position = field(default_factory=Position)
    revealed: set = field(default_factory=set)         # step ids whose answers the teacher revealed
    truths: dict = field(default_factory=dict)          # step id → the run's answer, as the teacher revealed it
    students: dict = field(default_factory=dict)        # page id → Student
    pool: dict | None = None                            # the class experiment (``start_pool``)
    spotlight: dict | None = None                       # a result shown to the class, without a name
    closed: bool = False
    cond: threading.Condition = field(default_factory=lambda: threading.Condition(threading.RLock()), repr=False,
                                     init=False)
    _waiters: list = field(default_factory=list, repr=False, init=False)  # (loop, future) of async waiters

    def __post_init__(self):
        self.last_active = self.last_active or self.created

    # ------------------------------------------------------------------ waiting for a change

    def _changed(self) -> None:
        """Under the lock: a new version, the room active now, every waiter woken."""
        self.version += 1
        self.last_active = self.clock()
        self.cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut, self.version)
            except RuntimeError:  # that loop has closed: its waiter is gone
                pass

    def wait_for_change(self, version: int, timeout: float) -> int:
        """Block until ``version`` is behind the room's (or the room closes, or ``timeout`` passes): the version."""
        with self.cond:
            self.cond.wait_for(lambda: self.version != version or self.closed, timeout)
            return self.version

    async def changed(self, version: int, timeout: float) -> int:
        """The same for an async handler: a future resolved by the next change; no thread is held while it waits."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        with self.cond:
            if self.version != version or self.closed:
                return self.version
            self._waiters.append((loop, fut))
        try:
            return await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            return self.version
        finally:
            with self.cond:
                self._waiters = [w for w in self._waiters if w[1] is not fut]

    def close(self) -> None:
        """The room ended or expired: wake every waiter (their next lookup says the room is gone)."""
        with self.cond:
            self.closed = True
            self._changed()

    # ------------------------------------------------------------------ students

    def _student(self, sid: str) -> Student:
        student = self.students.get(sid)
        if student is None:
            raise error(RoomError, "classroom.not_joined")
        return student

    def join(self, sid: str, name: str = "") -> Student:
        """Add the page ``sid`` (or welcome it back: a dropped connection rejoins with the same id and keeps its
        answers); a new name replaces the old one."""
        if not isinstance(sid, str) or not 0 < len(sid) <= ID_LENGTH:
            raise error(RoomError, "classroom.not_joined")
        with self.cond:
            now = self.clock()
            student = self.students.get(sid)
            if student is None:
                if len(self.students) >= MAX_STUDENTS:
                    raise error(RoomFull, "classroom.room_full", n=MAX_STUDENTS)
                student = self.students[sid] = Student(sid, clean_name(name), now, now)
            else:
                student.seen = now
                if name:
                    student.name = clean_name(name)
            self._changed()
            return student

    def leave(self, sid: str) -> None:
        with self.cond:
            if self.students.pop(sid, None) is not None:
                self._changed()

    def seen(self, sid: str) -> None:
        """A heartbeat: the student is still there, and so is the room. Wakes nobody."""
        with self.cond:
            self._student(sid).seen = self.last_active = self.clock()

    def follow(self, sid: str, following: bool = True) -> None:
        """The student snaps back to the teacher (True) or breaks away to explore (False)."""
        with self.cond:
            self._student(sid).state = STATES[0] if following else STATES[1]
            self._changed()

    def answer(self, sid: str, step: str, answer) -> object:
        """Commit the student's answer to ``step`` (one of its choices, or a finite number): once, before the
        reveal. The answer as kept."""
        from ..lesson import BY_ID
        s = BY_ID.get(step)
        if s is None:
            raise error(RoomError, "classroom.bad_answer")
        if s.numeric:
            if isinstance(answer, str):
                try:
                    answer = float(answer[:40])
                except ValueError:
                    raise error(RoomError, "classroom.bad_answer") from None
            if not _finite(answer):
                raise error(RoomError, "classroom.bad_answer")
            answer = float(answer)
        elif answer not in s.choices:
            raise error(RoomError, "classroom.bad_answer")
        with self.cond:
            student = self._student(sid)
            if step in self.revealed:
                raise error(RoomError, "classroom.revealed")
            if step in student.answers:
                raise error(RoomError, "classroom.answered")
            student.answers[step] = answer
            self._changed()
            return answer

    def set_run(self, sid: str, run: str, result: dict | None = None) -> None:
        """The student's run: ``idle``, ``waiting`` (queued), ``running`` or ``done`` (with its ``result``: plain
        numbers, kept for the spotlight)."""
        if run not in RUNS:
            raise error(RoomError, "classroom.bad_setting", what=str(run)[:20])
        with self.cond:
            student = self._student(sid)
            student.run = run
            if result is not None:
                student.result = _plain(result)
            self._changed()

    def student_count(self) -> int:
        with self.cond:
            return len(self.students)

    # ------------------------------------------------------------------ the teacher's moves

    def move(self, tab: str | None = None, step: int | None = None, settings: dict | None = None) -> Position:
        """The teacher goes to ``tab``, ``step`` and/or ``settings`` (replacing the tab's settings); followers
        follow."""
        from ..lesson import STEPS
        with self.cond:
            p = self.position
            if tab is not None:
                if tab not in TABS:
                    raise error(RoomError, "classroom.bad_setting", what=str(tab)[:20])
                p.tab = tab
            if step is not None:
                if isinstance(step, bool) or not _finite(step) or not float(step).is_integer() \
                        or not 1 <= step <= len(STEPS):
                    raise error(RoomError, "classroom.bad_setting", what=str(step)[:20])
                p.step = int(step)
            if settings is not None:
                p.settings = _plain(dict(settings))
            self._changed()
            return p

    def step_id(self) -> str:
        from ..lesson import STEPS
        return STEPS[self.position.step - 1].id

    def reveal(self, step: str | None = None, truth=None) -> None:
        """Show the class's answers to ``step`` (default: the current one), beside ``truth``, the run's answer."""
        with self.cond:
            step = step or self.step_id()
            self.revealed.add(step)
            if truth is not None:
                self.truths[step] = _plain(truth)
            self._changed()

    def show(self, sid: str | None) -> dict | None:
        """Spotlight the student ``sid``'s last result for the class, without their name (None: clear it)."""
        with self.cond:
            if sid is None:
                self.spotlight = None
            else:
                student = self._student(sid)
                self.spotlight = {"result": student.result, "run": student.run}
            self._changed()
            return self.spotlight

    # ------------------------------------------------------------------ the class experiment

    def start_pool(self, experiment: str, seeds: int = 1) -> dict:
        """Start (or re-run with more ``seeds``) the class experiment ``experiment`` (``resnet.classroom.pool``):
        the students now present are numbered in the order they joined; later ones get the next numbers. Results
        already in for the same runs are kept (a run's key names its seed)."""
        from .pool import EXPERIMENTS
        if experiment not in EXPERIMENTS or isinstance(seeds, bool) or not isinstance(seeds, int) \
                or not 1 <= seeds <= 5:
            raise error(RoomError, "classroom.no_pool")
        with self.cond:
            keep = self.pool["results"] if self.pool and self.pool["experiment"] == experiment else {}
            roster = sorted(self.students.values(), key=lambda s: (s.joined, s.id))
            # Spread over the class present; with nobody yet, one run per student as they come.
            n = len(roster) or len(EXPERIMENTS[experiment].runs(seeds))
            self.pool = {"experiment": experiment, "seeds": seeds, "roster": [s.id for s in roster], "n": n,
                         "results": dict(keep)}
            self._changed()
            return self.pool

    def stop_pool(self) -> None:
        with self.cond:
            self.pool = None
            self._changed()

    def pool_index(self, sid: str) -> tuple[int, int]:
        """(the student's number in the class experiment, the class size it was spread over); a student who
        joined later is given the next number."""
        with self.cond:
            if self.pool is None:
                raise error(RoomError, "classroom.no_pool")
            self._student(sid)
            roster = self.pool["roster"]
            if sid not in roster:
                roster.append(sid)
            return roster.index(sid), self.pool["n"]

    def add_result(self, run_key: str, assignment: dict, numbers: dict, seconds: float | None = None) -> bool:
        """A pooled run finished: its assignment (``Assignment.to_dict()``) and numbers land in the class plot.
        False (and nothing changes) if that run is already in, or no experiment runs."""
        with self.cond:
            if self.pool is None or run_key in self.pool["results"] \
                    or assignment.get("experiment") != self.pool["experiment"]:
                return False
            self.pool["results"][run_key] = {"assignment": _plain(assignment), "numbers": _plain(numbers),
                                             "seconds": seconds}
            self._changed()
            return True

    # ------------------------------------------------------------------ views

    def _position(self) -> dict:
        p = self.position
        step = self.step_id()
        return {"tab": p.tab, "step": p.step, "step_id": step, "settings": dict(p.settings),
                "revealed": step in self.revealed}

    def distribution(self, step: str) -> dict:
        """The class's answers to ``step``, with no names: counts per choice, or the numbers sorted."""
        answers = [s.answers[step] for s in self.students.values() if step in s.answers]
        if answers and all(_finite(a) for a in answers):
            return {"answered": len(answers), "values": sorted(float(a) for a in answers)}
        return {"answered": len(answers), "counts": dict(Counter(answers))}

    def _pool(self) -> dict | None:
        if self.pool is None:
            return None
        from .pool import figure_data
        pool = self.pool
        return {"experiment": pool["experiment"], "seeds": pool["seeds"], "n": pool["n"],
                "figure": figure_data(pool["experiment"], pool["results"], pool["seeds"])}

    def _counts(self, now: float) -> dict:
        step = self.step_id()
        present = [s for s in self.students.values() if now - s.seen <= AWAY_S]
        runs = Counter(s.run for s in self.students.values())
        return {"joined": len(self.students), "present": len(present),
                "answered": sum(step in s.answers for s in self.students.values()),
                "following": sum(s.state == "following" for s in self.students.values()),
                "exploring": sum(s.state == "exploring" for s in self.students.values()),
                "running": runs["running"], "waiting": runs["waiting"], "done": runs["done"]}

    def _common(self) -> dict:
        step = self.step_id()
        return {"code": self.code, "version": self.version, "closed": self.closed, "position": self._position(),
                "distribution": self.distribution(step) if step in self.revealed else None,
                "truth": self.truths.get(step) if step in self.revealed else None,
                "pool": self._pool(), "spotlight": self.spotlight}

    def teacher_view(self) -> dict:
        """The dashboard: everything, names included, and the current step's answers before the reveal too."""
        with self.cond:
            now = self.clock()
            step = self.step_id()
            view = self._common()
            view["counts"] = self._counts(now)
            view["answers"] = self.distribution(step)
            view["students"] = [{"id": s.id, "name": s.name, "state": s.state, "run": s.run,
                                 "answered": step in s.answers, "answer": s.answers.get(step),
                                 "away": now - s.seen > AWAY_S, "seen_s": round(now - s.seen, 1),
                                 "has_result": s.result is not None}
                                for s in sorted(self.students.values(), key=lambda s: (s.joined, s.id))]
            return view

    def projector_view(self) -> dict:
        """The class on the wall: counts and what is revealed, never a name or one student's answer."""
        with self.cond:
            view = self._common()
            view["counts"] = self._counts(self.clock())
            return view

    def student_view(self, sid: str) -> dict:
        """What the student ``sid`` may see: the teacher's position, their own state and answers, and the class's
        answers only as a distribution after the reveal."""
        with self.cond:
            student = self._student(sid)
            view = self._common()
            step = self.step_id()
            view["you"] = {"name": student.name, "state": student.state, "run": student.run,
                           "answer": student.answers.get(step), "answers": dict(student.answers)}
            view["answered"] = sum(step in s.answers for s in self.students.values())
            return view


def _resolve(fut: asyncio.Future, version: int) -> None:
    if not fut.done():
        fut.set_result(version)
