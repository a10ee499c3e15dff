"""A fair share of the queue per visitor: a few queued or running jobs per session and per client address.

Checked when a job asks to join Gradio's queue, from the queue's own record of what is waiting and running
(so nothing can leak when a client disconnects or cancels). A refused job gets one sentence; the queue stays
open to everyone else. Cheap endpoints (those without a concurrency limit, such as the layer table) are not
counted.

Shared runs (``resnet.ui.sharing``, ``resnet.train.jobs``): a request whose job key is already running, waiting,
cached, or asked for by a request in the queue only subscribes to that run. It is let in without counting against
the visitor's share, and is never counted afterwards; distinct jobs still count.
"""
from __future__ import annotations

import asyncio
import logging

from .. import config
from ..i18n import lang_from_header, t
from ..train.jobs import JOBS
from . import sharing

log = logging.getLogger("resnet.ui")
JOB_GROUPS = ("quick", "train", "train-solo")  # the concurrency ids of counted jobs


def client_address(request) -> str:
    """The visitor's address: the first X-Forwarded-For hop behind a trusted proxy (a Space), else the peer."""
    headers = getattr(request, "headers", None) or {}
    if config.trust_proxy():
        forwarded = headers.get("x-forwarded-for", "")
        if forwarded.split(",")[0].strip():
            return forwarded.split(",")[0].strip()
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


def _counted_events(queue):
    """Every job event waiting or running in Gradio's queue."""
    for event_queue in list(queue.event_queue_per_concurrency_id.values()):
        yield from list(event_queue.queue)
    for job in list(queue.active_jobs):
        yield from (job or [])


def holdings(queue, session: str, address: str) -> tuple[int, int]:
    """How many counted jobs this session and this address hold now (subscriptions to shared runs are not)."""
    by_session = by_address = 0
    for event in _counted_events(queue):
        if event.concurrency_id not in JOB_GROUPS or not getattr(event, "alive", True) \
                or getattr(event, "job_shared", False):
            continue
        by_session += event.session_hash == session
        by_address += client_address(event.request) == address
    return by_session, by_address


def queued_keys(queue) -> set[str]:
    """The job keys of every job waiting or running in the queue."""
    return {key for event in _counted_events(queue) if getattr(event, "alive", True)
            and (key := getattr(event, "job_key", None))}


def _tag(queue, answer, key: str | None, shared: bool) -> None:
    """Mark the event that just joined with its job key, and whether it only subscribes to a shared run."""
    ok, event_id = answer[0], answer[1]
    event = queue.event_ids_to_events.get(event_id) if ok and isinstance(event_id, str) else None
    if event is not None and key:
        event.job_key, event.job_shared = key, shared


def install(demo) -> None:
    """Wrap this app's queue (not Gradio's class) so that each join is checked first."""
    for fn in demo.fns.values():
        # A training-type handler that does not share its work through ``resnet.train.jobs`` (``sharing``) is not
        # limited by it: it gets a Gradio limit of its own instead, the training slots' number.
        if fn.concurrency_id == "train" and not hasattr(fn.fn, "job_key"):
            log.warning("%s is a training-type job that does not share its runs; it gets its own limit", fn.api_name)
            fn.concurrency_id, fn.concurrency_limit = "train-solo", config.train_concurrency()
    queue = demo._queue
    push = queue.push
    one_at_a_time = asyncio.Lock()  # check and join together, so that simultaneous joins cannot all pass

    async def fair_push(body, request, username):
        fn = _fn(demo, body)
        if fn is None or fn.concurrency_id not in JOB_GROUPS:
            return await push(body, request, username)
        # Off the event loop: a key may hash an uploaded file and check the budget.
        lang = lang_from_header(request.headers.get("accept-language"))
        key = await asyncio.to_thread(sharing.key_of, fn.fn, body.data, lang) if hasattr(fn.fn, "job_key") else None
        async with one_at_a_time:
            if key and (JOBS.known(key) or key in queued_keys(queue)):
                log.info("fair share: a request subscribes to a shared run (not counted)")
                answer = await push(body, request, username)
                _tag(queue, answer, key, True)
                return answer
            session, address = body.session_hash or "", client_address(request)
            per_session, per_address = config.get("RESNET_JOBS_PER_SESSION"), config.get("RESNET_JOBS_PER_ADDRESS")
            mine, ours = holdings(queue, session, address)
            if mine >= per_session or ours >= per_address:
                lang = lang_from_header(request.headers.get("accept-language"))
                log.info("fair share: refused a job (session holds %d, address holds %d)", mine, ours)
                limit = per_session if mine >= per_session else per_address
                key = "fair.session" if mine >= per_session else "fair.address"
                message = t(key, lang, n=limit)
                return False, [{"__type__": "validate", "is_valid": False, "message": message,
                                "parameter_name": "queue"}], "validator_error"
            answer = await push(body, request, username)
            _tag(queue, answer, key, False)
            return answer

    queue.push = fair_push


def _fn(demo, body):
    try:
        return demo.fns[body.fn_index] if body.fn_index is not None else None
    except (KeyError, IndexError, TypeError):
        return None
