"""The app's side of shared runs (``resnet.train.jobs``): a job key from a request's inputs, work done once per run
(figures drawn once per event and language), each visitor's own download files, and the lines that say a run was
joined, is waiting, or is a replay.

A handler that shares its work is marked with ``@keyed(key_fn)``: ``key_fn(*inputs, L)`` is the job key of a
request's inputs (as the queue receives them), so that ``fairshare`` can tell, when a request joins the queue,
that it would only subscribe to a run that is already there (which does not count against a visitor's share).
"""
from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import inspect
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ..i18n import t
from ..keys import file_identity, job_key
from ..train.jobs import JOBS, TICK, Subscription  # noqa: F401
from .common import lang, payload_path, request_of

log = logging.getLogger("resnet.ui")


def keyed(key_fn: Callable[..., str | None]):
    """Mark a handler with the function that computes its job key from its inputs and the language."""
    def mark(fn):
        fn.job_key = key_fn
        return fn
    return mark


def key_of(fn, data, L: str = "en") -> str | None:
    """The job key of a queued request of handler ``fn`` (None: not a shared handler, or inputs with no key,
    which the handler itself will refuse)."""
    key_fn = getattr(fn, "job_key", None)
    if key_fn is None:
        return None
    n = len(inspect.signature(key_fn).parameters) - 1
    values = list(data or [])[:n]
    values += [None] * (n - len(values))
    try:
        return key_fn(*values, L)
    except Exception:  # noqa: BLE001 - a bad request has no key; the validator and handler say why
        return None


_plot = None
# Matplotlib's mathtext parser (pyparsing) is not thread-safe: two figures with log axes ($10^{-2}$ tick labels) drawn
# at once in two worker threads failed with "ParseException" (a lab's figure, seen in tests/test_zh_browser.py).
_draw_lock = threading.Lock()


def plot_data(fig) -> Any:
    """A figure as ``gr.Plot`` sends it to the page (drawn and encoded once, one figure at a time; the figure is
    closed)."""
    global _plot
    with _draw_lock:
        if _plot is None:
            import gradio as gr
            _plot = gr.Plot(render=False)
        return _plot.postprocess(fig)


async def shared_plot(sub: Subscription, name, make: Callable[[], Any]) -> Any:
    """``make()``'s figure, drawn once per run for ``name`` (include the language) in a worker thread; every
    subscriber gets the same encoded plot, so thirty students cost one drawing."""
    return await sub.amemo(("plot", name), lambda: plot_data(make()))


def own_copy(sub: Subscription, name: str, dst: Path, export: Callable[[Path], Path]) -> Path:
    """A visitor's own download file at ``dst``: a hard link to the file this run's first subscriber wrote (no
    extra disk; deleting either leaves the other), else written anew with ``export(dst)``."""
    first = Path(sub.memo(("file", name), lambda: str(export(dst))))
    if first == dst:
        return dst
    try:
        os.link(first, dst)
        return dst
    except OSError:  # the first copy is gone (its visitor started again), or links are not possible here
        return export(dst)


async def aown_copy(sub: Subscription, name: str, dst: Path, export: Callable[[Path], Path]) -> Path:
    return await asyncio.to_thread(own_copy, sub, name, dst, export)


class Sessions:
    """Each session's subscription to its run of one endpoint, so that Stop detaches only that session (the run goes
    on for anyone else watching it and stops when its last watcher leaves); one run per session: a new start
    leaves the session's previous one."""

    def __init__(self):
        self._lock = threading.Lock()
        self._subs: dict[str, Subscription] = {}

    def start(self, session: str, sub: Subscription) -> None:
        with self._lock:
            old = self._subs.get(session)
            self._subs[session] = sub
        if old is not None and old is not sub:
            old.close()

    def stop(self, session: str) -> bool:
        with self._lock:
            sub = self._subs.pop(session, None)
        if sub is not None:
            sub.close()
        return sub is not None

    def finish(self, session: str, sub: Subscription) -> None:
        with self._lock:
            if self._subs.get(session) is sub:
                del self._subs[session]
        sub.close()


# A Stop button detaches its own session's subscriptions on the server, so the page's event then ends as a normal
# finish ("Stopped."). Gradio's client-side ``cancels`` raced the run's last streamed updates: in 3 of 14 runs of
# tests/test_screens.py's race, the progress strip then showed "Error" although the server had sent none.
_stoppable: dict[str, set[Subscription]] = {}  # by "endpoint|session": that session's runs of that endpoint
_stoppable_lock = threading.Lock()


@contextlib.contextmanager
def stoppable(endpoint: str, request: gr.Request | None, sub: Subscription):
    """While the block runs, ``sub`` is one of the request's session's runs of ``endpoint``, which
    ``stopper(endpoint)`` detaches (an API client may hold several in one session); the subscription is closed at
    the end. A call with no request (no session) cannot be stopped by a button."""
    session = getattr(request, "session_hash", None)
    name = f"{endpoint}|{session}" if session else None
    if name:
        with _stoppable_lock:
            _stoppable.setdefault(name, set()).add(sub)
    try:
        yield
    finally:
        if name:
            with _stoppable_lock:
                subs = _stoppable.get(name, set())
                subs.discard(sub)
                if not subs:
                    _stoppable.pop(name, None)
        sub.close()


def stopper(endpoint: str):
    """The handler of a Stop button for ``endpoint``: it detaches the pressing session from its runs (each goes on
    for anyone else watching it), and their events end with the line ``jobs.stopped``."""
    def stop(request: gr.Request = None) -> None:
        session = getattr(request, "session_hash", None)
        with _stoppable_lock:
            subs = list(_stoppable.pop(f"{endpoint}|{session}", ())) if session else []
        for sub in subs:
            sub.close()
    return stop


def note(sub: Subscription, L: str) -> str:
    """A line saying the run was joined or is a replay (empty for a run of one's own)."""
    if sub.replay:
        return t("jobs.replay", L, seconds=sub.original_seconds or 0.0)
    if sub.joined:
        return t("jobs.joined", L)
    return ""


def waiting(sub: Subscription, L: str) -> str:
    return t("jobs.waiting", L, ahead=sub.ahead())


# ------------------------------------------------------------------------------- shared handlers (the labs)

def identity(value, L: str = "en"):
    """A request input as a job key sees it: an uploaded file by its bytes, whole floats as ints."""
    if isinstance(value, dict) and "path" in value:
        path = payload_path(value, L)
        return {"file": file_identity(path)} if path else None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, tuple)):
        return [identity(v, L) for v in value]
    return value


def model_weights(arch: str) -> str:
    """The weights the app's model cache serves ``arch`` with (``ModelCache``: a file on disk, else seeded
    random ones): ``sha256:<hex>`` or ``"random"``."""
    from .. import weights
    try:
        return file_identity(weights.find_weights(arch, download_ok=False))
    except (weights.WeightsUnavailable, OSError):
        return "random"


def _inputs(fn) -> list[str]:
    """A handler's input parameters (not the request or a progress tracker)."""
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) or p.name in ("request", "progress"):
            break
        out.append(p.name)
    return out


def _frozen(item):
    """A handler's output as it can be shared and replayed: figures drawn and encoded once (``plot_data``)."""
    from matplotlib.figure import Figure
    if isinstance(item, Figure):
        return plot_data(item)
    if isinstance(item, tuple):
        return tuple(_frozen(v) for v in item)
    if isinstance(item, list):
        return [_frozen(v) for v in item]
    return item


def _marked(item, line: str):
    """``item`` (one output or a tuple of them) with ``line`` added to its last text output."""
    if not line:
        return item
    if isinstance(item, str):
        return line + "\n\n" + item
    if isinstance(item, tuple):
        for i in range(len(item) - 1, -1, -1):
            if isinstance(item[i], str):
                return item[:i] + (line + "\n\n" + item[i],) + item[i + 1:]
    return item


def shared(endpoint: str, *, limited: bool = False, outputs: int | None = None,
           extra: Callable[[], dict] | None = None):
    """Make a handler (a function, or a generator of updates) share its work: identical requests (same inputs,
    language and ``extra()`` identity, e.g. the weights a model is served with) subscribe to one run of it,
    which ``JOBS`` starts in its own thread; a finished one is replayed from the cache, its text marked as a
    replay. Figures in its outputs are drawn once per run. ``limited``: a training-type job (one of the
    ``RESNET_TRAIN_CONCURRENCY`` slots); while it waits, a generator with ``outputs`` outputs says how many
    runs are ahead (in its last output). The handler itself must depend on nothing but its inputs."""
    def wrap(fn):
        names = _inputs(fn)
        generator = inspect.isgeneratorfunction(fn)

        def key(*values) -> str:
            *inputs, L = values
            return job_key(endpoint, inputs=[identity(v, L) for v in inputs], lang=L, **(extra() if extra else {}))
        key.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in [*names, "L"]])

        def subscribe(args, kwargs) -> tuple[Subscription | None, str]:
            L = lang(request_of(args, kwargs))
            try:
                k = key(*args[:len(names)], L)
            except Exception:  # noqa: BLE001 - a request with no key runs unshared and says what is wrong
                return None, L

            def produce(cancel):
                if generator:
                    for item in fn(*args, **kwargs):
                        yield _frozen(item)
                        if cancel.is_set():
                            return
                else:
                    yield _frozen(fn(*args, **kwargs))
            return JOBS.subscribe(k, produce, limited=limited, label=endpoint), L

        def deliver(sub: Subscription, item, L: str):
            item = copy.deepcopy(item)  # each visitor's own outputs (Gradio may change what it is handed)
            return _marked(item, note(sub, L))

        if generator:
            @functools.wraps(fn)
            async def handler(*args, **kwargs):
                sub, L = await asyncio.to_thread(subscribe, args, kwargs)
                if sub is None:  # the handler's own sentence says what is wrong
                    it, end = fn(*args, **kwargs), object()
                    while (item := await asyncio.to_thread(next, it, end)) is not end:
                        yield item
                    return
                with stoppable(endpoint, request_of(args, kwargs), sub):
                    async for item in sub.aevents(timeout=1.0):
                        if item is TICK:
                            if sub.state == "waiting" and outputs:
                                yield (gr.skip(),) * (outputs - 1) + (waiting(sub, L),)
                            continue
                        if sub.behind:  # catching up: only the newest state is worth drawing
                            continue
                        yield deliver(sub, item, L)
                    if sub.closed and outputs:  # its Stop button detached it
                        yield (gr.skip(),) * (outputs - 1) + (t("jobs.stopped", L),)
        else:
            @functools.wraps(fn)
            async def handler(*args, **kwargs):
                sub, L = await asyncio.to_thread(subscribe, args, kwargs)
                if sub is None:
                    return await asyncio.to_thread(fn, *args, **kwargs)
                try:
                    result = None
                    async for item in sub.aevents():
                        result = item
                    return deliver(sub, result, L)
                finally:
                    sub.close()
        handler.job_key = key
        return handler
    return wrap
