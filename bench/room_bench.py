"""A live class's followers on the real server (``python app.py`` in a subprocess on a free loopback port): one
teacher and ``--followers`` students' follow streams, all from 127.0.0.1 (one address, as behind a school NAT).

The room's events are private (not in ``gradio_client``'s API), so they are called as a page calls them: raw
``queue/join`` under a session id of the page's own, the answers read from ``queue/data`` (server-sent events; a
generator's later messages are diffs of its outputs, applied here as the browser applies them).

1. the teacher's session starts a class (``start_class``): the room's code and teacher key;
2. idle cost, reference: the server's CPU time (its process and children) over ``--idle-s`` seconds with the room and
   no follower, as percent of one core (an idle Gradio server is not at zero: its queue loop wakes every 20 ms,
   ``resnet.ui.fairshare.IDLE_POLL_S``; ``python bench/idle_bench.py`` measures that alone);
3. ``--followers`` follow streams (``follow``), each its own session id; each waits for its first message;
4. idle cost with the followers open and nothing changing, the same way;
5. latency: ``--changes`` step changes by the teacher (``moved`` with the key, steps cycling 1 … 10), each timed from
   the teacher's request to the message on every follower's stream whose step is the new one: p50 / p95 / max over
   all (change, follower) pairs, beside the round trip of one cheap named request (``/lesson``, by
   ``gradio_client``) measured in the same run, without and with the followers;
6. a line against the issue's goals: a change reaches every follower within 2 s (p95); thirty idle followers cost
   under 10 % of one core (the difference between 4 and 2).

    python bench/room_bench.py [--followers 30] [--changes 20] [--idle-s 20]

A follow stream ends after a few minutes (``resnet.ui.tabs.classroom.STREAM_S``) and the page starts another; the
simulated followers do the same (counted as rejoins). An idle follower's stream wakes once per
``classroom.WAIT_S`` (its heartbeat), so an idle window shorter than that sees each wake at most once.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import Server, percentile  # noqa: E402  (python app.py on a free port)

GOALS = {"p95_s": 2.0, "idle_pct": 10.0}
STEPS = 10
READ = httpx.Timeout(10.0, read=None)  # a stream may be silent between changes (Gradio's heartbeat: every 15 s)


def dependencies(url: str) -> dict[str, int]:
    """Each function's first dependency id, by its ``api_name`` (private events included)."""
    ids: dict[str, int] = {}
    for d in httpx.get(f"{url}config", timeout=60).json()["dependencies"]:
        if d.get("api_name"):
            ids.setdefault(d["api_name"], d["id"])
    return ids


def cpu_seconds(ps) -> float:
    """CPU time (user + system) of the server process, its live children and the children it has waited for."""
    import psutil
    t = ps.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in ps.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


async def idle_percent(ps, seconds: float) -> float:
    """The server's CPU over ``seconds`` of wall time, as percent of one core."""
    c0, t0 = cpu_seconds(ps), time.perf_counter()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(ps) - c0) / (time.perf_counter() - t0)


async def messages(http: httpx.AsyncClient, url: str, session: str):
    """The session's queue messages (dicts), until its stream closes."""
    async with http.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                yield msg
                if msg.get("msg") == "close_stream":
                    return


async def join(http: httpx.AsyncClient, url: str, fn: int, data: list, session: str) -> None:
    r = await http.post(f"{url}gradio_api/queue/join", json={
        "data": data, "fn_index": fn, "session_hash": session, "event_data": None, "trigger_id": None})
    r.raise_for_status()


async def call(http: httpx.AsyncClient, url: str, fn: int, data: list, session: str) -> list:
    """One event to completion under ``session``: its outputs."""
    await join(http, url, fn, data, session)
    async for msg in messages(http, url, session):
        if msg.get("msg") == "process_completed":
            out = msg.get("output") or {}
            if not msg.get("success", True) or "error" in out:
                raise RuntimeError(f"event {fn} failed: {str(msg)[:300]}")
            return out.get("data", [])
    raise RuntimeError(f"event {fn}: the stream closed before it completed")


def step_of(update) -> int | None:
    """The step an output carries: an update's ``value`` (a skip carries none)."""
    if isinstance(update, dict):
        update = update.get("value")
    try:
        return int(update)
    except (TypeError, ValueError):
        return None


class Follower:
    """One student's page: a follow stream under its own session id, started again when it ends."""

    def __init__(self, bench: "Bench", i: int):
        self.bench, self.i = bench, i
        self.session = uuid.uuid4().hex
        self.first = asyncio.Event()
        self.step: int | None = None
        self.rejoins = self.messages = 0
        self.errors: list[str] = []

    async def run(self) -> None:
        b = self.bench
        while not b.done:
            outputs: list | None = None
            try:
                await join(b.http, b.url, b.ids["follow"], [b.code, ""], self.session)
                async for msg in messages(b.http, b.url, self.session):
                    kind = msg.get("msg")
                    if kind not in ("process_generating", "process_completed"):
                        continue
                    out = msg.get("output") or {}
                    if "error" in out or not msg.get("success", True):
                        self.errors.append(str(out.get("error") or msg)[:200])
                        continue
                    data = out.get("data") or []
                    if kind == "process_generating":
                        # The first message of a run carries the outputs, each later one their diffs.
                        outputs = data if outputs is None else [apply_diff(o, d) for o, d in zip(outputs, data)]
                        self.messages += 1
                        self.seen(step_of(outputs[0]))
                    else:
                        break
            except (httpx.HTTPError, RuntimeError) as e:
                if b.done:
                    return
                self.errors.append(f"{type(e).__name__}: {e}"[:200])
            if b.done:
                return
            self.rejoins += 1
            await asyncio.sleep(1.0)  # as the page does (its ``rejoin`` a second later)

    def seen(self, step: int | None) -> None:
        now = time.perf_counter()
        if step is not None:
            self.step = step
        self.first.set()
        b = self.bench
        if b.target is not None and step == b.target and self.i not in b.arrived:
            b.arrived[self.i] = now - b.t0
            if len(b.arrived) == len(b.followers):
                b.all_in.set()


def apply_diff(obj, diff):
    from gradio_client.utils import apply_diff as gradio_apply_diff
    return gradio_apply_diff(obj, diff)


class Bench:
    def __init__(self, url: str, ids: dict, http: httpx.AsyncClient, code: str, key: str, teacher: str):
        self.url, self.ids, self.http, self.code, self.key, self.teacher = url, ids, http, code, key, teacher
        self.followers: list[Follower] = []
        self.done = False
        self.target: int | None = None
        self.t0 = 0.0
        self.arrived: dict[int, float] = {}
        self.all_in = asyncio.Event()

    async def change(self, step: int, timeout: float) -> tuple[list[float], int, float]:
        """The teacher moves to ``step``: each follower's delay until its stream shows it, the followers that did not
        within ``timeout``, and the teacher's own round trip."""
        self.arrived, self.all_in = {}, asyncio.Event()
        self.target, self.t0 = step, time.perf_counter()
        await call(self.http, self.url, self.ids["moved"], [step, self.code, self.key], self.teacher)
        teacher_s = time.perf_counter() - self.t0
        try:
            await asyncio.wait_for(self.all_in.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self.target = None
        delays = list(self.arrived.values())
        return delays, len(self.followers) - len(delays), teacher_s


def named_round_trips(url: str, n: int) -> list[float]:
    """``n`` calls of the cheap named ``/lesson`` endpoint by ``gradio_client`` (a page session of its own): seconds."""
    from gradio_client import Client
    client = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    times = []
    try:
        client.predict(1, api_name="/lesson")  # the connection warm
        for i in range(n):
            t = time.perf_counter()
            client.predict(i % STEPS + 1, api_name="/lesson")
            times.append(time.perf_counter() - t)
    finally:
        client.close()
    return times


def load_line() -> str:
    import os
    import psutil
    one, five, _ = os.getloadavg()
    return f"machine: {psutil.cpu_count()} cores, load average {one:.2f} (1 min) / {five:.2f} (5 min)"


async def measure(server: Server, args) -> None:
    url = server.url
    ids = dependencies(url)
    missing = [n for n in ("start_class", "follow", "moved") if n not in ids]
    if missing:
        raise RuntimeError(f"no dependency named {missing} in {url}config")
    limits = httpx.Limits(max_connections=args.followers + 20, max_keepalive_connections=args.followers + 20)
    async with httpx.AsyncClient(timeout=READ, limits=limits) as http:
        teacher = uuid.uuid4().hex
        out = await call(http, url, ids["start_class"], [], teacher)
        code, key = out[0], out[1]
        if not code or not key:
            raise RuntimeError(f"start_class gave no room: {str(out)[:300]}")
        print(f"room {code} started by the teacher's session")
        b = Bench(url, ids, http, code, key, teacher)

        await asyncio.sleep(3)  # the start's own work settles
        ref_rt = await asyncio.to_thread(named_round_trips, url, args.round_trips)
        idle0 = await idle_percent(server.ps, args.idle_s)
        print(f"idle, 0 followers:          {idle0:6.2f} % of one core over {args.idle_s:.0f} s   ({load_line()})")

        b.followers = [Follower(b, i) for i in range(args.followers)]
        t_open = time.perf_counter()
        tasks = [asyncio.create_task(f.run()) for f in b.followers]
        try:
            await asyncio.wait_for(asyncio.gather(*(f.first.wait() for f in b.followers)), 120)
        except asyncio.TimeoutError:
            pass
        opened = sum(f.first.is_set() for f in b.followers)
        print(f"{opened}/{args.followers} follow streams gave their first message within "
              f"{time.perf_counter() - t_open:.1f} s")
        await asyncio.sleep(3)  # every join's wake-up delivered
        idle = await idle_percent(server.ps, args.idle_s)
        print(f"idle, {args.followers} followers:         {idle:6.2f} % of one core over {args.idle_s:.0f} s   "
              f"({load_line()})")

        delays, misses, teacher_times = [], 0, []
        for c in range(args.changes):
            step = (c + 1) % STEPS + 1  # 2, 3, … 10, 1, 2, …: each change differs from the step before it
            d, missed, teacher_s = await b.change(step, args.timeout)
            delays += d
            misses += missed
            teacher_times.append(teacher_s)
            if missed:
                late = [f.i for f in b.followers if f.i not in b.arrived]
                print(f"  change {c + 1} (step {step}): {missed} follower(s) not updated within {args.timeout:.0f} s: "
                      f"{late[:10]} (their last step {[b.followers[i].step for i in late[:10]]})")
            await asyncio.sleep(args.pause)
        rt = await asyncio.to_thread(named_round_trips, url, args.round_trips)

        b.done = True
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    pairs = args.changes * args.followers
    ref = statistics.median(ref_rt)
    ref_loaded = statistics.median(rt)
    print(f"latency of a step change to a follower, {len(delays)}/{pairs} (change, follower) pairs, {misses} missed:")
    if delays:
        p50, p95, worst = percentile(delays, 0.5), percentile(delays, 0.95), max(delays)
        print(f"  p50 {p50 * 1e3:7.1f} ms   p95 {p95 * 1e3:7.1f} ms   max {worst * 1e3:7.1f} ms   "
              f"(p50 / /lesson round trip {p50 / ref_loaded:.1f}×, p95 / /lesson round trip {p95 / ref_loaded:.1f}×)")
    else:
        p95 = float("inf")
    print(f"  the teacher's moved, queue join to completed: p50 {statistics.median(teacher_times) * 1e3:.1f} ms, "
          f"max {max(teacher_times) * 1e3:.1f} ms")
    print(f"reference, /lesson by gradio_client ({args.round_trips} calls): median {ref * 1e3:.1f} ms with no "
          f"follower, {ref_loaded * 1e3:.1f} ms with {args.followers} followers (p95 {percentile(rt, 0.95) * 1e3:.1f} ms)")
    errors = [e for f in b.followers for e in f.errors]
    print(f"streams: {sum(f.messages for f in b.followers)} messages, {sum(f.rejoins for f in b.followers)} rejoins, "
          f"{len(errors)} errors" + (f" (first: {errors[0]})" if errors else ""))
    ok_latency = misses == 0 and p95 <= GOALS["p95_s"]
    cost = idle - idle0  # what the followers add: the idle server's own share is Gradio's queue loop
    ok_idle = cost < GOALS["idle_pct"]
    print(f"goals ({args.followers} followers, {load_line()}): p95 {p95:.2f} s vs ≤ {GOALS['p95_s']:.0f} s "
          f"{'met' if ok_latency else 'NOT met'}" + (f" ({misses} missed)" if misses else "")
          + f"; idle followers {cost:+.1f} % of one core vs < {GOALS['idle_pct']:.0f} % "
          f"{'met' if ok_idle else 'NOT met'} (server in all {idle:.1f} %, with no follower {idle0:.1f} %)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--followers", type=int, default=30)
    ap.add_argument("--changes", type=int, default=20)
    ap.add_argument("--idle-s", type=float, default=20.0, help="seconds of each idle CPU measurement")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds a change may take to reach every follower")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between one change's arrival and the next")
    ap.add_argument("--round-trips", type=int, default=10, help="/lesson calls of each reference")
    args = ap.parse_args()
    print(load_line())
    server = Server({})
    print(f"server: python app.py, first page after {server.start_seconds:.1f} s")
    try:
        asyncio.run(measure(server, args))
    finally:
        server.close()


if __name__ == "__main__":
    main()
