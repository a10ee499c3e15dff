"""Identical jobs run once: subscribers share a run, and a finished run is replayed from a bounded cache.

A job's key (``job_key``) is everything that determines its result: the endpoint, its canonical settings with the
seed, the data's identity (a built-in set's parameters, or the SHA-256 of the uploaded file), the weights' identity
and the code version. ``JOBS.subscribe(key, produce)`` then

- attaches to the run of that key if one is waiting or running: the subscription gets every event so far at once,
  then the live ones;
- replays a recently finished run of that key from the cache: the recorded events, all at once, marked
  ``replay=True``, with the original run's timing (``original_seconds``, ``at``);
- else starts ``produce(cancel)`` (an iterator of events) in a background thread of its own, recording every event
  with its time. At most ``limit`` distinct runs compute at once (``RESNET_TRAIN_CONCURRENCY``, which the memory
  budget in ``resnet.budget`` assumes); the others wait in order, holding no thread, and ``ahead()`` says how many
  runs are before a new one.

``Subscription.close()`` detaches one subscriber; a run is cancelled (its ``cancel`` event set) when its last
subscriber leaves, and a run nobody waits for any more is never started. Events are shared objects: a subscriber
reads them and never changes them (copy what you need to change). A subscription is iterable and
async-iterable, so that thirty waiting visitors hold no worker threads in an async server.

No Gradio here: ``resnet.ui`` hooks its handlers onto this module.
"""
from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import sys
import threading
import time
from collections import Counter, OrderedDict, deque
from typing import Any, Callable, Iterable, Iterator

from .. import config

log = logging.getLogger("resnet.jobs")

TICK = object()  # what ``Subscription.events(timeout=…)`` yields when nothing new came within the timeout


# ------------------------------------------------------------------------------------------- sizes

def nbytes(obj: Any, _seen: set | None = None, _depth: int = 0) -> int:
    """Roughly how much memory ``obj`` holds: tensors and modules exactly, containers and dataclasses through."""
    seen = _seen if _seen is not None else set()
    if id(obj) in seen or _depth > 12:
        return 0
    seen.add(id(obj))
    torch = sys.modules.get("torch")
    if torch is not None:
        if isinstance(obj, torch.Tensor):
            return obj.numel() * obj.element_size()
        if isinstance(obj, torch.nn.Module):
            return sum(nbytes(t, seen) for t in obj.state_dict(keep_vars=True).values())
    np = sys.modules.get("numpy")
    if np is not None and isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sys.getsizeof(obj) + sum(nbytes(k, seen, _depth + 1) + nbytes(v, seen, _depth + 1)
                                        for k, v in obj.items())
    if isinstance(obj, (list, tuple, set, frozenset, deque)):
        return sys.getsizeof(obj) + sum(nbytes(v, seen, _depth + 1) for v in obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return sys.getsizeof(obj) + sum(nbytes(getattr(obj, f.name, None), seen, _depth + 1)
                                        for f in dataclasses.fields(obj))
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sys.getsizeof(obj) + nbytes(vars(obj), seen, _depth + 1)
    return sys.getsizeof(obj)


# ------------------------------------------------------------------------------------------- jobs

class Job:
    """One distinct run: its recorded events (each with seconds since it started) and its subscribers."""

    def __init__(self, key: str, produce: Callable, limited: bool, label: str):
        self.key, self.produce, self.limited, self.label = key, produce, limited, label
        self.cancel = threading.Event()
        self.events: list[tuple[float, Any]] = []
        self.state = "waiting"           # waiting → running → done | failed | cancelled
        self.error: BaseException | None = None
        self.subscribers = 0
        self.created = time.time()
        self.started: float | None = None
        self.seconds: float | None = None  # how long the run took, once it is over
        self.size = 0                    # bytes, measured when it finished (for the cache's bound)
        self.cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future]] = []
        self._memo: dict = {}
        self._memo_lock = threading.Lock()

    @property
    def over(self) -> bool:
        return self.state in ("done", "failed", "cancelled")

    def notify(self) -> None:
        """Wake every waiting subscriber, threads and event loops alike (call with ``cond`` held)."""
        self.cond.notify_all()
        for loop, fut in self._waiters:
            try:
                loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop has closed
                pass
        self._waiters.clear()

    def memo(self, name, fn: Callable[[], Any]) -> Any:
        """``fn()`` once per ``name`` for this run, whoever asks first; everyone else gets that same value."""
        with self._memo_lock:
            slot = self._memo.get(name)
            if slot is None:
                slot = self._memo[name] = [threading.Lock(), False, None]
        with slot[0]:
            if not slot[1]:
                slot[2], slot[1] = fn(), True
            return slot[2]


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


class Subscription:
    """One subscriber's view of a job: iterate it (``for``/``async for``) for the job's events, in order, from
    the first. ``replay``: answered from the cache; ``joined``: attached to a run someone else started;
    ``original_seconds``: how long the original run took (None while it runs); ``at``: the original run's time of
    the last event given; ``behind``: events recorded but not yet given (more are ready at once: a caller may skip
    drawing the ones in between)."""

    def __init__(self, jobs: "Jobs", job: Job, replay: bool, joined: bool = False):
        self.jobs, self.job, self.replay = jobs, job, replay
        self.joined = joined  # attached to a run someone else had started
        self.key = job.key
        self.closed = False
        self.at = 0.0
        self._i = 0

    # -- what a caller reads
    @property
    def original_seconds(self) -> float | None:
        return self.job.seconds

    @property
    def behind(self) -> int:
        return max(0, len(self.job.events) - self._i)

    @property
    def state(self) -> str:
        return self.job.state

    def ahead(self) -> int:
        """Distinct runs before this one (0 once it runs)."""
        return self.jobs.ahead(self.key) if self.job.state == "waiting" else 0

    def memo(self, name, fn: Callable[[], Any]) -> Any:
        """Work shared by every subscriber of this run (a figure drawn once per event and language)."""
        return self.job.memo(name, fn)

    async def amemo(self, name, fn: Callable[[], Any]) -> Any:
        """``memo`` from an event loop: ``fn`` runs in a worker thread, and nobody blocks the loop."""
        return await asyncio.to_thread(self.job.memo, name, fn)

    def close(self) -> None:
        """Detach: this subscriber gets no more events; the run stops when its last subscriber has left."""
        self.jobs._leave(self)

    # -- iteration
    def _take(self):
        """(True, event) if one is ready, (False, None) when the job is over, None to wait (``cond`` held)."""
        if self.closed:
            return False, None
        job = self.job
        if self._i < len(job.events):
            self.at, item = job.events[self._i]
            self._i += 1
            return True, item
        if job.over:
            if job.error is not None:
                raise job.error
            return False, None
        return None

    def events(self, timeout: float | None = None) -> Iterator:
        """The events, blocking; with ``timeout``, ``TICK`` whenever nothing new came for that long."""
        while True:
            with self.job.cond:
                got = self._take()
                if got is None:
                    self.job.cond.wait(timeout)
                    got = self._take()
                    if got is None:
                        got = (True, TICK) if timeout is not None else None
            if got is None:
                continue
            ok, item = got
            if not ok:
                return
            yield item

    def __iter__(self) -> Iterator:
        return self.events()

    async def aevents(self, timeout: float | None = None):
        """The events, awaiting without a thread; with ``timeout``, ``TICK`` whenever nothing new came."""
        loop = asyncio.get_running_loop()
        fut = None
        while True:
            with self.job.cond:
                got = self._take()
                if got is None and (fut is None or fut.done()):
                    fut = loop.create_future()  # resolved by the next event (kept across ticks)
                    self.job._waiters.append((loop, fut))
            if got is None:
                try:
                    await asyncio.wait_for(asyncio.shield(fut), timeout)
                except asyncio.TimeoutError:
                    yield TICK
                continue
            ok, item = got
            if not ok:
                return
            yield item

    def __aiter__(self):
        return self.aevents()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<Subscription {self.key[:10]} {self.job.state}{' replay' if self.replay else ''}>"


class Jobs:
    """The registry of runs: waiting and running by key, finished ones in an LRU cache bounded in entries and MB.

    ``limit``: distinct limited runs computing at once (None: ``resnet.config.train_concurrency()`` when a run
    is admitted); ``cache_entries`` / ``cache_mb``: the replay cache's bounds (None: the ``RESNET_REPLAY_CACHE_*``
    settings, read each time)."""

    def __init__(self, limit: int | None = None, *, cache_entries: int | None = None, cache_mb: float | None = None):
        self._limit, self._cache_entries, self._cache_mb = limit, cache_entries, cache_mb
        self._lock = threading.Lock()
        self._live: dict[str, Job] = {}          # waiting or running, by key
        self._queue: deque[Job] = deque()        # limited jobs waiting for a slot, in order
        self._running: set[Job] = set()          # limited jobs holding a slot (until their thread ends)
        self._threads: set[Job] = set()          # every job whose thread has not ended (stopping ones too)
        self._cache: OrderedDict[str, Job] = OrderedDict()
        self.runs: Counter = Counter()           # key → how many times its producer was started
        self.counts: Counter = Counter()         # started, attached, replayed, finished, failed, cancelled, evicted

    # -- settings
    def limit(self) -> int:
        return self._limit if self._limit is not None else config.train_concurrency()

    def cache_entries(self) -> int:
        return self._cache_entries if self._cache_entries is not None else config.get("RESNET_REPLAY_CACHE_ENTRIES")

    def cache_bytes(self) -> float:
        mb = self._cache_mb if self._cache_mb is not None else config.get("RESNET_REPLAY_CACHE_MB")
        return mb * 2**20

    # -- subscribing
    def subscribe(self, key: str, produce: Callable[[threading.Event], Iterable], *, limited: bool = True,
                  label: str = "") -> Subscription:
        """Attach to the run of ``key`` (waiting, running, or finished and cached), else start ``produce(cancel)``.
        ``limited``: the run takes one of the ``limit`` slots (training-type work); quick work (bounded by its
        own queue) starts at once."""
        with self._lock:
            job = self._live.get(key)
            if job is not None:
                with job.cond:
                    job.subscribers += 1
                self.counts["attached"] += 1
                log.info("jobs: attached to %s %s (%s, %d subscribers)", job.label, key[:10], job.state,
                         job.subscribers)
                return Subscription(self, job, replay=False, joined=True)
            job = self._cache.get(key)
            if job is not None:
                self._cache.move_to_end(key)
                self.counts["replayed"] += 1
                log.info("jobs: replayed %s %s (%d events, the original run took %.1f s)", job.label, key[:10],
                         len(job.events), job.seconds or 0.0)
                return Subscription(self, job, replay=True)
            job = Job(key, produce, limited, label)
            job.subscribers = 1
            self._live[key] = job
            if limited:
                self._queue.append(job)
            else:
                self._start(job)
            self._admit()
            return Subscription(self, job, replay=False)

    def ahead(self, key: str | None = None) -> int:
        """Distinct runs before ``key``'s (running ones and those waiting in front of it); without a key (or for
        one not waiting), before a new run: every limited run running or waiting. 0 for a key that runs or is
        cached."""
        with self._lock:
            if key is not None:
                job = self._live.get(key)
                if key in self._cache or (job is not None and job.state != "waiting"):
                    return 0
                if job is not None and job in self._queue:
                    return len(self._running) + list(self._queue).index(job)
            return len(self._running) + len(self._queue)

    def known(self, key: str) -> str | None:
        """``"waiting"``, ``"running"`` or ``"cached"`` for a key that a subscriber would share; else None."""
        with self._lock:
            job = self._live.get(key)
            if job is not None:
                return job.state
            return "cached" if key in self._cache else None

    def stats(self) -> dict:
        with self._lock:
            return {"running": len(self._running), "waiting": len(self._queue), "live": len(self._live),
                    "cached": len(self._cache), "cached_mb": sum(j.size for j in self._cache.values()) / 2**20,
                    "runs": sum(self.runs.values()), **self.counts}

    def forget(self) -> None:
        """Empty the replay cache (running jobs are not touched)."""
        with self._lock:
            self._cache.clear()

    def shutdown(self, timeout: float = 30.0) -> bool:
        """Stop every waiting or running run and wait up to ``timeout`` s for their threads to leave torch: a process
        that exits while a run's thread is inside an operator aborts ("terminate called without an active
        exception"). True when none is left running."""
        with self._lock:
            jobs = list(self._threads)
            for job in jobs:
                job.cancel.set()
            while self._queue:  # never started: over at once for whoever waits on them
                job = self._queue.popleft()
                job.cancel.set()
                self._live.pop(job.key, None)
                with job.cond:
                    job.state = "cancelled"
                    job.notify()
        deadline = time.monotonic() + timeout
        for job in jobs:
            with job.cond:
                while job.state == "running" and time.monotonic() < deadline:
                    job.cond.wait(max(0.0, deadline - time.monotonic()))
        return all(job.state != "running" for job in jobs)

    # -- internals
    def _admit(self) -> None:
        """Start waiting limited jobs while slots are free (``_lock`` held)."""
        while self._queue and len(self._running) < self.limit():
            job = self._queue.popleft()
            self._running.add(job)
            self._start(job)

    def _start(self, job: Job) -> None:
        job.state, job.started = "running", time.perf_counter()
        self._threads.add(job)
        self.runs[job.key] += 1
        self.counts["started"] += 1
        log.info("jobs: started %s %s (run %d of this key; %d limited running, %d waiting)", job.label,
                 job.key[:10], self.runs[job.key], len(self._running), len(self._queue))
        threading.Thread(target=self._work, args=(job,), daemon=True, name=f"job-{job.label or 'run'}-"
                         f"{job.key[:8]}").start()

    def _work(self, job: Job) -> None:
        t0 = job.started
        error = None
        try:
            iterator = iter(job.produce(job.cancel))
            try:
                for item in iterator:
                    with job.cond:
                        job.events.append((time.perf_counter() - t0, item))
                        job.notify()
                    if job.cancel.is_set() and hasattr(iterator, "close"):
                        break
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
        except BaseException as e:  # noqa: BLE001 - handed to every subscriber
            error = e
        seconds = time.perf_counter() - t0
        cancelled = job.cancel.is_set()
        size = 0 if error is not None or cancelled else nbytes([item for _, item in job.events])
        with self._lock:
            with job.cond:
                job.seconds, job.size = seconds, size
                job.error = error
                job.state = "failed" if error is not None else "cancelled" if cancelled else "done"
                job.produce = None  # what it closed over (uploads, models) can go
                job.notify()
            if self._live.get(job.key) is job:
                del self._live[job.key]
            self._running.discard(job)
            self._threads.discard(job)
            self.counts[job.state] += 1
            if job.state == "done":
                self._store(job)
            self._admit()
        if error is not None and not isinstance(error, Exception):
            log.warning("jobs: %s %s ended by %s", job.label, job.key[:10], type(error).__name__)
        log.info("jobs: %s %s %s after %.1f s (%d events, %.1f MB)", job.label, job.key[:10], job.state, seconds,
                 len(job.events), size / 2**20)

    def _store(self, job: Job) -> None:
        """Keep a finished job for replays, dropping the least recently used past the bounds (``_lock`` held)."""
        entries, limit = self.cache_entries(), self.cache_bytes()
        if entries < 1 or job.size > limit:
            return
        self._cache[job.key] = job
        self._cache.move_to_end(job.key)
        while len(self._cache) > entries or sum(j.size for j in self._cache.values()) > limit:
            key, old = self._cache.popitem(last=False)
            self.counts["evicted"] += 1
            log.info("jobs: evicted %s %s from the replay cache", old.label, key[:10])

    def _leave(self, sub: Subscription) -> None:
        with self._lock:
            job = sub.job
            with job.cond:
                if sub.closed:
                    return
                sub.closed = True
                job.notify()
                if sub.replay or job.over:
                    return
                job.subscribers -= 1
                last = job.subscribers <= 0
            if not last:
                log.info("jobs: a subscriber left %s %s (%d remain)", job.label, job.key[:10], job.subscribers)
                return
            job.cancel.set()
            if self._live.get(job.key) is job:
                del self._live[job.key]  # a new request starts afresh instead of joining a run that is stopping
            if job.state == "waiting":
                try:
                    self._queue.remove(job)
                except ValueError:
                    pass
                with job.cond:
                    job.state = "cancelled"
                    job.notify()
                self.counts["cancelled"] += 1
            log.info("jobs: the last subscriber left %s %s: cancelled", job.label, job.key[:10])


JOBS = Jobs()  # the process-wide registry (the app's)
atexit.register(JOBS.shutdown)  # runs before the interpreter tears down the daemon threads of its runs
