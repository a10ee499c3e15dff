"""A fair share of the queue and the workers: a class behind one address is served, one client cannot lock others out.

Checked when a job asks to join Gradio's queue, from the queue's own record of what is waiting and running (so
nothing leaks when a client disconnects or cancels). What a request holds is what it costs the server while it
waits or runs: a quick job or a new training run costs 1; a request that only subscribes to a run the server already
has (waiting, running, or finished and replayed: ``resnet.ui.sharing``, ``resnet.train.jobs``) costs
``SUBSCRIPTION_COST``. Who may hold how much:

- each live page (a session with a heartbeat stream open from this address: ``resnet.ui.pages``) up to
  ``RESNET_JOBS_PER_SESSION``: thirty students behind one school address are thirty pages with a share each;
- all the requests of one address that come from no live page (scripts, fresh session ids) together
  ``RESNET_JOBS_PER_ADDRESS``, and those of every address together half the queue;
- an address at most ``RESNET_RUNS_PER_ADDRESS`` new training runs waiting or running (each is minutes of the
  training slot), and at most three quarters of the queue;
- the whole queue ``RESNET_MAX_QUEUE`` counted requests; past it, "the queue is full, try again".

A quick job over its holder's share waits in line (``WAIT_S``, a bounded number per address) rather than being
refused at once. Cheap endpoints (no concurrency limit: the layer table, estimates, the page's own load events) are
never counted or refused, and the queue's worker slots are sized so that counted jobs cannot take them all
(``worker_slots``): a cheap answer never waits behind a job.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from .. import config
from ..i18n import lang_from_header, t
from ..train.jobs import JOBS
from . import sharing
from .pages import PAGES, client_address

log = logging.getLogger("resnet.ui")
JOB_GROUPS = ("quick", "train", "train-solo")  # the concurrency ids of counted jobs
SUBSCRIPTION_COST = 0.25   # joining or replaying a run: a held connection and copies of its events, no compute
WAIT_S = 4.0               # how long a quick job over its share waits for room (gradio_client's join times out at 5 s)
WAITERS_PER_ADDRESS = 32   # quick jobs of one address waiting for room at once; more are refused at once
CHEAP_SLOTS = 40           # worker slots kept beyond the counted jobs, for cheap answers
# Gradio's queue looks for work to start every millisecond even when there is none (``Queue.sleep_when_free``): an
# idle server with no visitor used 5.6-6.6 % of a core for it; checking every 20 ms, 1.8-2.4 % (``python
# bench/idle_bench.py``), and a click waits at most 20 ms more to start.
IDLE_POLL_S = 0.02


def worker_slots(max_queue: int) -> int:
    """Gradio's worker slots (``max_threads``): every counted request may hold one while it runs (a subscriber holds
    its slot for the whole run), and ``CHEAP_SLOTS`` more stay free for cheap answers."""
    return max_queue + CHEAP_SLOTS


@dataclass(frozen=True)
class Holder:
    """Who a request counts against: its page session, or its address's pages-less pot."""
    address: str
    session: str
    page: bool


@dataclass
class Holdings:
    """What is held now: by a holder, by its address, by every pages-less request, and in all."""
    mine: float = 0.0
    address: float = 0.0
    runs: int = 0          # new training runs of this address
    anonymous: float = 0.0
    events: int = 0        # counted requests in the queue, whatever they cost


@dataclass(eq=False)
class Reservation:
    """A request let in and joining the queue now (Gradio runs its validator first: a budget check, which takes a
    moment): counted like the event it becomes, so that joins need not wait for each other's validators."""
    session_hash: str
    fair_address: str
    fair_cost: float
    fair_run: bool
    concurrency_id: str
    job_key: str | None
    alive: bool = True


RESERVED: dict[int, set] = {}  # id(queue) → its reservations


def _counted_events(queue):
    """Every counted job event waiting or running in Gradio's queue, and every one joining it now."""
    for event_queue in list(queue.event_queue_per_concurrency_id.values()):
        yield from list(event_queue.queue)
    for job in list(queue.active_jobs):
        yield from (job or [])
    yield from list(RESERVED.get(id(queue), ()))


def holdings(queue, holder: Holder) -> Holdings:
    """What is held now. Whether a request comes from a page is asked again here, not remembered from its join: a
    page's first request can arrive a moment before its heartbeat stream, and a page can close."""
    out = Holdings()
    for event in _counted_events(queue):
        if event.concurrency_id not in JOB_GROUPS or not getattr(event, "alive", True):
            continue
        address = getattr(event, "fair_address", None) or client_address(getattr(event, "request", None))
        session = event.session_hash or ""
        page = bool(session) and PAGES.live(session, address)
        cost = getattr(event, "fair_cost", 1.0)  # untagged (joined by a path that skipped the check): in full
        out.events += 1
        out.anonymous += 0.0 if page else cost
        if address == holder.address:
            out.address += cost
            out.runs += bool(getattr(event, "fair_run", False))
            out.mine += cost if (session == holder.session if holder.page else not page) else 0.0
    return out


def queued_keys(queue) -> set[str]:
    """The job keys of every job waiting or running in the queue."""
    return {key for event in _counted_events(queue) if getattr(event, "alive", True)
            and (key := getattr(event, "job_key", None))}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""   # i18n key of the refusal
    n: int = 0         # the limit it names
    full: bool = False  # the whole queue is full (Gradio's own "queue full" answer)


def judge(held: Holdings, holder: Holder, cost: float, run: bool, max_queue: int) -> Verdict:
    """Whether a request of ``cost`` (``run``: a new training run) fits beside what is held."""
    if held.events + 1 > max_queue:
        return Verdict(False, full=True)
    if holder.page:
        per = config.get("RESNET_JOBS_PER_SESSION")
        if held.mine + cost > per + 1e-9:
            return Verdict(False, "fair.session", per)
    else:
        per = config.get("RESNET_JOBS_PER_ADDRESS")
        if held.mine + cost > per + 1e-9:
            return Verdict(False, "fair.address", per)
        if held.anonymous + cost > max(1.0, max_queue / 2):
            return Verdict(False, full=True)
    if run and held.runs + 1 > config.get("RESNET_RUNS_PER_ADDRESS"):
        return Verdict(False, "fair.runs", config.get("RESNET_RUNS_PER_ADDRESS"))
    if held.address + cost > max(1.0, max_queue * 3 / 4):  # a tiny queue still serves one at a time
        return Verdict(False, full=True)
    return Verdict(True)


def _tag(queue, answer, holder: Holder, cost: float, run: bool, key: str | None) -> None:
    """Mark the event that just joined with who holds it, what it costs, and its job key."""
    ok, event_id = answer[0], answer[1]
    event = queue.event_ids_to_events.get(event_id) if ok and isinstance(event_id, str) else None
    if event is not None:
        event.fair_address, event.fair_cost, event.fair_run = holder.address, cost, run
        if key:
            event.job_key, event.job_shared = key, cost < 1


def refusal(verdict: Verdict, lang: str):
    """Gradio's answer for a refused join: a validator's sentence (the page shows it; ``gradio_client`` raises it)
    or Gradio's own "queue full" (the client says "try again")."""
    if verdict.full:
        return False, t("fair.full", lang), "queue_full"
    message = t(verdict.reason, lang, n=verdict.n)
    return False, [{"__type__": "validate", "is_valid": False, "message": message, "parameter_name": "queue"}], \
        "validator_error"


class Waiting:
    """Quick jobs waiting for room, by address (bounded, so a flood cannot park connections here either)."""

    def __init__(self):
        self.by_address: dict[str, int] = {}

    def enter(self, address: str) -> bool:
        if self.by_address.get(address, 0) >= WAITERS_PER_ADDRESS:
            return False
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return True

    def leave(self, address: str) -> None:
        self.by_address[address] -= 1
        if not self.by_address[address]:
            del self.by_address[address]


def install(demo) -> None:
    """Wrap this app's queue (not Gradio's class) so that each join is checked first. The queue's own size limit
    is lifted: counted jobs are bounded here, cheap answers never. Its idle poll is slowed to ``IDLE_POLL_S``."""
    for fn in demo.fns.values():
        # A training-type handler that does not share its work through ``resnet.train.jobs`` (``sharing``) is not
        # limited by it: it gets a Gradio limit of its own instead, the training slots' number.
        if fn.concurrency_id == "train" and not hasattr(fn.fn, "job_key"):
            log.warning("%s is a training-type job that does not share its runs; it gets its own limit", fn.api_name)
            fn.concurrency_id, fn.concurrency_limit = "train-solo", config.train_concurrency()
    queue = demo._queue
    queue.sleep_when_free = max(getattr(queue, "sleep_when_free", 0.0), IDLE_POLL_S)
    max_queue = queue.max_size or config.get("RESNET_MAX_QUEUE")
    queue.max_size = None
    push = queue.push
    one_at_a_time = asyncio.Lock()  # check and reserve together, so that simultaneous joins cannot all pass
    reserved = RESERVED.setdefault(id(queue), set())
    waiting = Waiting()

    async def fair_push(body, request, username):
        fn = _fn(demo, body)
        if fn is None or fn.concurrency_id not in JOB_GROUPS:
            return await push(body, request, username)
        lang = lang_from_header(request.headers.get("accept-language"))
        # Off the event loop: a key may hash an uploaded file and check the budget.
        key = await asyncio.to_thread(sharing.key_of, fn.fn, body.data, lang) if hasattr(fn.fn, "job_key") else None
        address = client_address(request)
        session = body.session_hash or ""
        deadline, parked = time.monotonic() + WAIT_S, False
        try:
            while True:
                async with one_at_a_time:
                    # A page's first request can arrive a moment before its heartbeat stream: asked again each turn.
                    holder = Holder(address, session, bool(session) and PAGES.live(session, address))
                    shared = bool(key) and (JOBS.known(key) is not None or key in queued_keys(queue))
                    cost = SUBSCRIPTION_COST if shared else 1.0
                    run = fn.concurrency_id != "quick" and not shared
                    verdict = judge(holdings(queue, holder), holder, cost, run, max_queue)
                    if verdict.ok:
                        seat = Reservation(session, address, cost, run, fn.concurrency_id, key)
                        reserved.add(seat)
                        break
                    quick = fn.concurrency_id == "quick" and not verdict.full
                    if not quick or time.monotonic() > deadline or (not parked and not waiting.enter(address)):
                        log.info("fair share: refused a job of %s (%s)", "a page" if holder.page else "no page",
                                 verdict.reason or "full")
                        return refusal(verdict, lang)
                    parked = True
                await asyncio.sleep(0.1)
        finally:
            if parked:
                waiting.leave(address)
        try:
            answer = await push(body, request, username)
            _tag(queue, answer, holder, cost, run, key)  # the event counts from here on, the seat until here
        finally:
            reserved.discard(seat)
        return answer

    queue.push = fair_push


def _fn(demo, body):
    try:
        return demo.fns[body.fn_index] if body.fn_index is not None else None
    except (KeyError, IndexError, TypeError):
        return None
