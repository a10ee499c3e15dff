"""The app's side of shared runs (``resnet.train.jobs``): a job key from a request's inputs, work done once per run
(figures drawn once per event and language), each visitor's own download files, and the lines that say a run was
joined, is waiting, or is a replay.

A handler that shares its work is marked with ``@keyed(key_fn)``: ``key_fn(*inputs, L)`` is the job key of a
request's inputs (as the queue receives them), so that ``fairshare`` can tell, when a request joins the queue,
that it would only subscribe to a run that is already there (which does not count against a visitor's share).
"""
from __future__ import annotations

import asyncio
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Callable

from ..i18n import t
from ..train.jobs import JOBS, TICK, Subscription, file_identity, job_key, weights_identity  # noqa: F401

log = logging.getLogger("resnet.ui")
BUILTIN_DATASETS = ("synthetic", "hymenoptera", "flowers")  # identified by name and parameters, not bytes


def keyed(key_fn: Callable[..., str | None]):
    """Mark a handler with the function that computes its job key from its inputs and the language."""
    def mark(fn):
        fn.job_key = key_fn
        return fn
    return mark


def key_of(fn, data) -> str | None:
    """The job key of a queued request of handler ``fn`` (None: not a shared handler, or inputs with no key,
    which the handler itself will refuse)."""
    key_fn = getattr(fn, "job_key", None)
    if key_fn is None:
        return None
    n = len(inspect.signature(key_fn).parameters) - 1
    values = list(data or [])[:n]
    values += [None] * (n - len(values))
    try:
        return key_fn(*values, "en")
    except Exception:  # noqa: BLE001 - a bad request has no key; the validator and handler say why
        return None


def finetune_key(cfg) -> str:
    """Everything that decides a fine-tune's numbers: its settings with the seed, the data (a built-in set's name
    and parameters, or the SHA-256 of the uploaded file), the weights it starts from, and the code."""
    from ..models.transfer import STRATEGIES
    settings = cfg.to_dict()
    data = settings.pop("dataset")
    for name in ("device", "keep_models", "allow_download", "weights"):  # the weights' identity is below
        settings.pop(name, None)
    settings["strategies"] = list(cfg.strategies)
    identity = {"builtin": data} if data in BUILTIN_DATASETS else {"file": file_identity(data)}
    needs = any(STRATEGIES[n].pretrained for n in cfg.strategies)
    weights = weights_identity(cfg.arch, path=cfg.weights, allow_download=cfg.allow_download) if needs else None
    return job_key("finetune", settings=settings, data=identity, weights=weights)


_plot = None


def plot_data(fig) -> Any:
    """A figure as ``gr.Plot`` sends it to the page (drawn and encoded once; the figure is closed)."""
    global _plot
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


def note(sub: Subscription, L: str) -> str:
    """A line saying the run was joined or is a replay (empty for a run of one's own)."""
    if sub.replay:
        return t("jobs.replay", L, seconds=sub.original_seconds or 0.0)
    if sub.joined:
        return t("jobs.joined", L)
    return ""


def waiting(sub: Subscription, L: str) -> str:
    return t("jobs.waiting", L, ahead=sub.ahead())
