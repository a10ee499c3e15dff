"""The live class's library (``resnet.classroom``): codes, keys and the join limit; bounded rooms that expire;
nothing of one room from another; answers anonymous to other students; followers woken by a change; the class
experiment's grid, its shared runs, and one real (tiny) pooled run."""
from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from resnet import config
from resnet.classroom import (ALPHABET, CODE_LENGTH, EXPERIMENTS, AttemptLimiter, MemoryRooms, NotTeacher, RoomError,
                              RoomNotFound, RoomsFull, TooManyAttempts, assign, experiment_for, figure_data,
                              guess_odds, missing, normal_code, numbers, pool, run_assignment)
from resnet.lesson import BY_ID

pytestmark = pytest.mark.unit


class Clock:
    """A clock the test moves by hand (expiry without sleeping)."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _store(**kw):
    kw.setdefault("max_rooms", 4)
    kw.setdefault("idle_s", 600)
    return MemoryRooms(**kw)


# ------------------------------------------------------------------------------------------- codes and keys

def test_codes_are_short_unambiguous_and_typed_loosely():
    store = _store(max_rooms=64)
    codes = {store.create()[0].code for _ in range(64)}
    assert len(codes) == 64
    for code in codes:
        assert len(code) == CODE_LENGTH and set(code) <= set(ALPHABET)
    assert not set("01OIL") & set(ALPHABET)
    code = next(iter(codes))
    typed = f" {code[:3].lower()}-{code[3:].lower()} "
    assert normal_code(typed) == code and store.get(typed).code == code
    # The stated odds: with 20 rooms a day of guessing at 10 a minute finds one with odds about 1 in 3 100.
    assert 1 / 3500 < guess_odds(20, 14_400) < 1 / 2800


def test_only_the_teacher_key_drives_the_room():
    store = _store()
    room, key = store.create()
    other_room, other_key = store.create()
    assert len(key) >= 32 and key != other_key
    store.drive(room.code, key, lambda r: r.move(step=3))
    assert room.position.step == 3
    for wrong in (other_key, key[:-1], key + "x", "", None, 42):
        with pytest.raises(NotTeacher):
            store.drive(room.code, wrong, lambda r: r.move(step=5))
        with pytest.raises(NotTeacher):
            store.authorize(room.code, wrong)
    assert room.position.step == 3
    assert key not in json.dumps(room.teacher_view()) and key not in repr(room)


def test_guessing_codes_is_refused_after_the_limit_and_only_for_that_address():
    store = _store()
    room, _ = store.create()
    wrong = "".join("2" if c != "2" else "3" for c in room.code)
    for _ in range(10):
        with pytest.raises(RoomNotFound):
            store.get(wrong, address="10.0.0.1")
    # Over the limit every lookup from that address is refused, the right code too (else it would tell).
    with pytest.raises(TooManyAttempts):
        store.get(wrong, address="10.0.0.1")
    with pytest.raises(TooManyAttempts):
        store.get(room.code, address="10.0.0.1")
    assert store.get(room.code, address="10.0.0.2") is room


def test_the_limit_window_passes():
    limiter = AttemptLimiter(limit=3, window_s=60)
    for t in (0, 1, 2):
        limiter.wrong("a", now=t)
    assert limiter.blocked("a", now=30) and not limiter.blocked("b", now=30)
    assert not limiter.blocked("a", now=62.5)


# ------------------------------------------------------------------------------------------- bounds and expiry

def test_rooms_are_bounded_and_idle_ones_expire():
    clock = Clock()
    store = _store(max_rooms=2, idle_s=600, clock=clock)
    a, _ = store.create()
    clock.now += 400
    b, key_b = store.create()
    with pytest.raises(RoomsFull):
        store.create()
    clock.now += 300  # a: idle 700 s, b: 300 s
    c, _ = store.create()  # a is dropped to make room
    assert set(store.codes()) == {b.code, c.code}
    with pytest.raises(RoomNotFound):
        store.get(a.code)
    assert a.closed
    # A heartbeat keeps a room alive; then an idle room is gone for every kind of lookup.
    store.update(b.code, lambda r: r.join("page", ""))
    clock.now += 500
    store.update(b.code, lambda r: r.seen("page"))
    clock.now += 500
    assert store.get(b.code) is b
    clock.now += 601
    assert set(store.expire()) == {b.code, c.code}
    with pytest.raises(RoomNotFound):
        store.authorize(b.code, key_b)


def test_the_settings_are_in_the_config_table():
    assert config.get("RESNET_MAX_ROOMS") >= 1 and config.get("RESNET_ROOM_IDLE_S") >= 60
    assert "RESNET_MAX_ROOMS" in config.markdown_table()


def test_a_room_is_bounded_in_students_and_cleans_names():
    store = _store()
    room, _ = store.create()
    s = room.join("p" * 10, "  Ann\u202e\n  Lee  " + "x" * 100)
    assert s.name.startswith("Ann Lee") and len(s.name) <= 32 and "\u202e" not in s.name
    with pytest.raises(RoomError):
        room.join("p" * 65, "too long an id")
    from resnet.classroom import MAX_STUDENTS
    for i in range(MAX_STUDENTS - 1):
        room.join(f"s{i}")
    with pytest.raises(RoomError):
        room.join("one-too-many")
    room.join("s0", "back")  # a dropped connection rejoins with its id
    assert room.students["s0"].name == "back"


# ------------------------------------------------------------------------------------------- isolation

def test_nothing_of_one_room_is_seen_from_another():
    store = _store()
    a, key_a = store.create()
    b, key_b = store.create()
    store.update(a.code, lambda r: r.join("alice-page", "Alice"))
    store.update(a.code, lambda r: r.answer("alice-page", "degradation", "plain56"))
    store.drive(a.code, key_a, lambda r: r.move(step=3, settings={"secret_setting": 7}))
    store.update(b.code, lambda r: r.join("bob-page", "Bob"))
    # Room B's views and its students know nothing of A.
    for view in (b.teacher_view(), b.projector_view(), b.student_view("bob-page")):
        text = json.dumps(view)
        assert "Alice" not in text and "alice-page" not in text and "secret_setting" not in text
        assert a.code not in text
    with pytest.raises(RoomError):
        b.student_view("alice-page")
    with pytest.raises(RoomError):
        store.update(b.code, lambda r: r.answer("alice-page", "degradation", "same"))
    # A's key does not drive B.
    with pytest.raises(NotTeacher):
        store.drive(b.code, key_a, lambda r: r.move(step=9))
    assert b.position.step == 1


# ------------------------------------------------------------------------------------------- anonymous answers

def test_answers_are_anonymous_to_other_students():
    store = _store()
    room, key = store.create()
    code = room.code
    store.drive(code, key, lambda r: r.move(step=3))  # degradation
    names = {"p1": "Alice", "p2": "Bob", "p3": "Carol"}
    for sid, name in names.items():
        store.update(code, lambda r, sid=sid, name=name: r.join(sid, name))
    store.update(code, lambda r: r.answer("p1", "degradation", "plain56"))
    store.update(code, lambda r: r.answer("p2", "degradation", "same"))
    with pytest.raises(RoomError):
        store.update(code, lambda r: r.answer("p1", "degradation", "plain20"))  # committed once
    with pytest.raises(RoomError):
        store.update(code, lambda r: r.answer("p3", "degradation", "not-a-choice"))

    def others(sid):
        return [(s, n) for s, n in names.items() if s != sid]

    before = room.student_view("p3")
    text = json.dumps(before)
    for sid, name in others("p3"):
        assert name not in text and sid not in text
    assert "plain56" not in text and '"same"' not in text
    assert before["distribution"] is None and before["you"]["answer"] is None
    mine = room.student_view("p1")
    assert mine["you"]["answer"] == "plain56" and "Bob" not in json.dumps(mine) and '"same"' not in json.dumps(mine)
    # The teacher sees who answered what, and the count.
    teacher = room.teacher_view()
    assert teacher["counts"]["answered"] == 2 and teacher["answers"]["counts"] == {"plain56": 1, "same": 1}
    assert {s["name"]: s["answer"] for s in teacher["students"]} == {"Alice": "plain56", "Bob": "same", "Carol": None}
    projector = json.dumps(room.projector_view())
    assert not any(name in projector for name in names.values()) and "plain56" not in projector
    # After the reveal: the distribution only, still no names; no answer is taken any more.
    store.drive(code, key, lambda r: r.reveal(truth="plain56"))
    after = room.student_view("p3")
    assert after["distribution"] == {"answered": 2, "counts": {"plain56": 1, "same": 1}}
    assert after["truth"] == "plain56"
    text = json.dumps(after)
    assert not any(n in text for s, n in others("p3")) and not any(s in text for s, n in others("p3"))
    with pytest.raises(RoomError):
        store.update(code, lambda r: r.answer("p3", "degradation", "same"))


def test_number_answers_are_kept_as_numbers():
    room, _ = _store().create()
    room.join("a")
    room.join("b")
    assert BY_ID["bottleneck"].numeric
    room.answer("a", "bottleneck", "3.5")
    room.answer("b", "bottleneck", 2)
    with pytest.raises(RoomError):
        room.answer("b", "group_conv", float("nan"))
    assert room.distribution("bottleneck") == {"answered": 2, "values": [2.0, 3.5]}


# ------------------------------------------------------------------------------------------- following

def test_wait_for_change_wakes_a_waiter_at_once():
    store = _store()
    room, key = store.create()
    version = room.version
    woke = {}

    def follower():
        t = time.perf_counter()
        woke["version"] = store.wait_for_change(room.code, version, timeout=30)
        woke["seconds"] = time.perf_counter() - t
    thread = threading.Thread(target=follower)
    thread.start()
    time.sleep(0.2)
    assert thread.is_alive()  # it waits for a change, not for the timeout or a poll
    store.drive(room.code, key, lambda r: r.move(step=2))
    thread.join(10)
    assert woke["version"] == version + 1 and woke["seconds"] < 10
    # No change: the timeout returns the same version.
    assert room.wait_for_change(room.version, 0.05) == room.version
    # A heartbeat wakes nobody.
    room.join("p")
    v = room.version
    room.seen("p")
    assert room.version == v


def test_async_followers_are_woken_by_a_change_from_another_thread():
    store = _store()
    room, key = store.create()

    async def main():
        v = room.version
        waiters = [asyncio.create_task(store.changed(room.code, v, timeout=30)) for _ in range(30)]
        await asyncio.sleep(0.1)
        assert not any(w.done() for w in waiters)
        threading.Timer(0.05, lambda: store.drive(room.code, key, lambda r: r.move(tab="labs"))).start()
        t = time.perf_counter()
        got = await asyncio.wait_for(asyncio.gather(*waiters), 10)
        return got, time.perf_counter() - t, v
    got, seconds, v = asyncio.run(main())
    assert got == [v + 1] * 30 and seconds < 10
    assert room._waiters == []
    assert asyncio.run(room.changed(room.version, 0.01)) == room.version


def test_follow_and_break_away():
    room, _ = _store().create()
    room.join("p")
    room.follow("p", False)
    assert room.student_view("p")["you"]["state"] == "exploring"
    assert room.teacher_view()["counts"]["exploring"] == 1
    room.follow("p", True)
    assert room.teacher_view()["counts"]["following"] == 1
    with pytest.raises(RoomError):
        room.move(tab="nowhere")
    with pytest.raises(RoomError):
        room.move(step=11)
    with pytest.raises(RoomError):
        room.move(settings={"x": object()})


# ------------------------------------------------------------------------------------------- the class experiment

@pytest.mark.parametrize("name", list(EXPERIMENTS))
@pytest.mark.parametrize("n_students", [1, 4, 7, 30, 31])
@pytest.mark.parametrize("seeds", [1, 3])
def test_the_grid_is_covered_and_identical_assignments_share_a_key(name, n_students, seeds):
    exp = EXPERIMENTS[name]
    runs = exp.runs(seeds)
    dealt = [a for i in range(n_students) for a in assign(name, i, n_students, seeds)]
    assert set(dealt) == set(runs), "every run has a student"
    if n_students >= len(runs):
        assert all(len(assign(name, i, n_students, seeds)) == 1 for i in range(n_students))
    keys = {a: a.key() for a in runs}
    assert len(set(keys.values())) == len(runs), "distinct runs, distinct keys"
    for a in dealt:
        assert a.key() == keys[a]  # the same assignment twice: the same run
    grid = {tuple(a.values.items()) for a in runs}
    assert len(grid) == len(exp.grid())


def test_each_lesson_question_has_its_experiment():
    assert experiment_for("bn_batch").id == "bn_batch"
    assert experiment_for("degradation") is experiment_for("residual") is EXPERIMENTS["depth"]
    assert experiment_for("transfer").id == "transfer"
    with pytest.raises(RoomError):
        experiment_for("table")
    a = assign("depth", 3, 30)[0]
    assert pool.Assignment.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_the_class_plot_groups_by_assignment_with_mean_and_spread():
    exp = EXPERIMENTS["depth"]
    results = {}
    for i, a in enumerate(exp.runs(2)):
        loss = a.values["depth"] / 10 + (0 if a.values["shortcuts"] else 1) + a.seed * 0.2
        results[f"k{i}"] = {"assignment": a.to_dict(), "numbers": {"loss": loss}}
    fig = figure_data("depth", results, seeds=2)
    assert fig["done"] == fig["total"] == 12 and fig["x"] == "depth" and fig["series_by"] == "shortcuts"
    plain = next(s for s in fig["series"] if s["name"] is False)
    assert plain["x"] == [20, 32, 56] and plain["n"] == [2, 2, 2]
    assert plain["mean"] == pytest.approx([3.1, 4.3, 6.7]) and plain["std"][0] == pytest.approx(0.1414, abs=1e-3)
    # Results arrive one by one: a partial plot.
    first = dict(list(results.items())[:1])
    fig = figure_data("depth", first, seeds=2)
    assert fig["done"] == 1 and sum(len(s["x"]) for s in fig["series"]) == 1


def test_a_room_runs_a_class_experiment():
    store = _store()
    room, key = store.create()
    for i in range(7):
        store.update(room.code, lambda r, i=i: r.join(f"p{i}", f"S{i}"))
    store.drive(room.code, key, lambda r: r.start_pool("depth"))
    dealt = set()
    for i in range(7):
        index, n = room.pool_index(f"p{i}")
        dealt |= set(assign("depth", index, n))
    assert dealt == set(EXPERIMENTS["depth"].runs(1))
    room.join("late")
    assert room.pool_index("late") == (7, 7)
    a = EXPERIMENTS["depth"].runs(1)[0]
    assert room.add_result(a.key(), a.to_dict(), {"loss": 1.5})
    assert not room.add_result(a.key(), a.to_dict(), {"loss": 9.0})  # the same run lands once
    view = room.student_view("p3")
    assert view["pool"]["figure"]["done"] == 1 and view["pool"]["figure"]["series"][0]["mean"] == [1.5]
    # The spotlight shows one student's run without their name.
    room.set_run("p2", "done", {"loss": 1.5, "assignment": a.to_dict()})
    store.drive(room.code, key, lambda r: r.show("p2"))
    spot = json.dumps(room.student_view("p5")["spotlight"])
    assert "1.5" in spot and "S2" not in spot and "p2" not in spot
    # More seeds keep what is in.
    store.drive(room.code, key, lambda r: r.start_pool("depth", seeds=3))
    assert room.projector_view()["pool"]["figure"]["total"] == 18 and room.pool["results"]


def test_one_tiny_pooled_run_end_to_end(monkeypatch):
    """A real race of one network, at a few steps (the experiment's own job with its steps cut), through the pool's
    own run and numbers, into a room's plot."""
    monkeypatch.setattr(pool, "RACE_STEPS", 4)
    monkeypatch.setattr(pool, "RACE_EVERY", 2)
    a = assign("depth", 1, 30)[0]
    assert a.values == {"depth": 20, "shortcuts": True}
    updates = list(run_assignment(a, threading.Event()))
    assert [u.step for u in updates] == [2, 4]
    n = numbers(a, updates[-1])
    assert n["steps"] == 4 and 0 < n["loss"] < 10
    room, _ = _store().create()
    room.start_pool("depth")
    room.add_result(a.key(), a.to_dict(), n)
    fig = room.projector_view()["pool"]["figure"]
    residual = next(s for s in fig["series"] if s["name"] is True)
    assert residual["x"] == [20] and residual["mean"] == [n["loss"]]


def test_a_class_started_before_anyone_joined_still_spreads_the_runs():
    room, _ = _store().create()
    room.start_pool("transfer")
    for i in range(12):
        room.join(f"p{i}")
    dealt = [assign("transfer", *room.pool_index(f"p{i}")) for i in range(12)]
    assert all(len(d) == 1 for d in dealt) and len({d[0] for d in dealt}) == 12
    a = dealt[0][0]
    room.add_result(a.key(), a.to_dict(), {"val_acc": 0.5})
    assert a not in missing("transfer", room.pool["results"]) and len(missing("transfer", room.pool["results"])) == 11
