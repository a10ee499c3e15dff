"""Identical jobs run once (``resnet.train.jobs``): subscribers share a run's events, one leaving does not stop the
others, the last leaving cancels it, a finished run is replayed from a bounded cache, and keys tell runs apart.

Real producers: the real fine-tuning engine and the real training race, small; the producer counts are the
registry's own (``Jobs.runs``), checked against a count kept by the producer itself."""
from __future__ import annotations

import asyncio
import threading
from functools import partial

import pytest

from resnet.analysis import labs
from resnet.train.finetune import FinetuneConfig, run
from resnet.keys import job_key
from resnet.train.jobs import TICK, Jobs

# The fast tier (conftest gives an unmarked test ``unit``), but for the tests marked ``slow`` below.

# val_fraction: validated on 12 of the 48 images, not on the 400 of the separate series (what is compared is the same).
TINY = dict(arch="resnet18", dataset="synthetic", image_size=32, batch_size=16, epochs=2, synthetic_images=48,
            strategies=("head", "scratch"), allow_download=False, seed=3, val_fraction=0.25)


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    monkeypatch.delenv("RESNET_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))


class Counted:
    """A producer that counts how many times it was started, and can be held at a gate after its first event."""

    def __init__(self, make):
        self.make, self.calls, self.cancelled = make, 0, threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, cancel):
        self.calls += 1
        try:
            for i, item in enumerate(self.make(cancel)):
                if i:  # the first event always comes; the gate holds the rest
                    assert self.gate.wait(120)
                yield item
        finally:  # the registry closes a cancelled run's iterator
            if cancel.is_set():
                self.cancelled.set()


def finetune(cfg):
    return lambda cancel: run(cfg, cancel=cancel)


def numbers(events) -> list:
    """Every event's numbers (not its timings)."""
    out = []
    for ev in events:
        d = ev.to_dict()
        for k in ("seconds", "images_per_s", "result", "summary"):
            d.pop(k)
        out.append(d)
    return out


def final(events):
    return {n: {k: v for k, v in h.items() if k != "seconds"} for n, h in events[-1].result.history.items()}


def in_threads(subs) -> list:
    out = [None] * len(subs)

    def read(i):
        out[i] = list(subs[i])
    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(subs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    return out


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_three_subscribers_share_one_run_and_a_later_one_gets_a_marked_replay(no_weights):
    jobs = Jobs(limit=1, cache_entries=4, cache_mb=512)
    cfg = FinetuneConfig(**TINY).validated()
    key = cfg.key()
    producer = Counted(finetune(cfg))
    subs = [jobs.subscribe(key, producer) for _ in range(3)]
    assert [s.joined for s in subs] == [False, True, True] and not any(s.replay for s in subs)
    histories = in_threads(subs)
    assert producer.calls == 1 and jobs.runs[key] == 1
    assert histories[0][-1].kind == "done"
    assert histories[0] == histories[1] == histories[2]  # the very same events, in the same order
    # Asked again once finished: a replay, marked, with the original run's timing, equal to the original.
    again = jobs.subscribe(key, producer)
    replayed = list(again)
    assert again.replay and again.original_seconds > 0 and again.at == pytest.approx(subs[0].at)
    assert numbers(replayed) == numbers(histories[0]) and final(replayed) == final(histories[0])
    assert producer.calls == 1 and jobs.runs[key] == 1 and jobs.counts["replayed"] == 1
    # The same job computed alone, afresh, gives the same numbers (deterministic by construction).
    alone = list(run(cfg))
    assert numbers(alone) == numbers(histories[0]) and final(alone) == final(histories[0])


def test_one_leaving_does_not_stop_the_others_and_the_last_leaving_cancels():
    jobs = Jobs(limit=1)
    race = partial(labs.training_race, 12, batch_size=8, every=2, n_images=64,
                   nets=(("cifar20", False), ("cifar20", True)))
    producer = Counted(lambda cancel: race(cancel=cancel.is_set))
    producer.gate.clear()  # held after its first update until the first subscriber has left
    key = job_key("race", steps=12)
    first, second, third = (jobs.subscribe(key, producer) for _ in range(3))
    it = iter(first)
    assert next(it).step == 2
    first.close()  # Stop from one subscriber: it gets nothing more
    assert list(it) == []
    producer.gate.set()
    rest = in_threads([second, third])
    assert [u.step for u in rest[0]] == [2, 4, 6, 8, 10, 12] and rest[0] == rest[1]
    assert rest[0][-1].done and producer.calls == 1 and not producer.cancelled.is_set()
    # Everyone leaving a run under way cancels it; the next request starts a fresh run.
    key2 = job_key("race", steps=12, seed=1)
    producer2 = Counted(lambda cancel: race(cancel=cancel.is_set, seed=1))
    producer2.gate.clear()
    a, b = jobs.subscribe(key2, producer2), jobs.subscribe(key2, producer2)
    got = iter(a)
    next(got)
    a.close()
    b.close()
    producer2.gate.set()
    assert producer2.cancelled.wait(60)
    c = jobs.subscribe(key2, producer2)
    assert not c.replay and not c.joined and [u.step for u in c][-1] == 12 and jobs.runs[key2] == 2


def test_keys_differ_by_seed_data_and_weights(no_weights, tmp_path):
    base = FinetuneConfig(**TINY).validated()
    same = FinetuneConfig(**{**TINY, "strategies": ["head", "scratch", "head"]}).validated()
    assert base.key() == same.key()
    keys = {base.key()}
    keys.add(FinetuneConfig(**{**TINY, "seed": 4}).validated().key())
    keys.add(FinetuneConfig(**{**TINY, "synthetic_images": 64}).validated().key())
    # Uploaded data is known by its bytes, wherever it was stored.
    a, b, c = tmp_path / "a.zip", tmp_path / "copy.zip", tmp_path / "c.zip"
    a.write_bytes(b"PK first")
    b.write_bytes(b"PK first")
    c.write_bytes(b"PK other")
    upload = {n: FinetuneConfig(**{**TINY, "dataset": str(p)}).validated().key() for n, p in
              (("a", a), ("b", b), ("c", c))}
    assert upload["a"] == upload["b"] != upload["c"]
    keys |= {upload["a"], upload["c"]}
    assert len(keys) == 5
    # The weights a pretrained strategy starts from are part of the key; scratch needs none.
    checkpoint = tmp_path / "w.pth"
    checkpoint.write_bytes(b"weights")
    assert FinetuneConfig(**{**TINY, "weights": str(checkpoint)}).validated().key() != base.key()
    scratch = dict(TINY, strategies=("scratch",))
    assert FinetuneConfig(**{**scratch, "weights": str(checkpoint)}).validated().key() == \
        FinetuneConfig(**scratch).validated().key()
    assert job_key("race", steps=10, lr=0.05) != job_key("race", steps=10, lr=0.5)
    assert job_key("race", a=1, b=2) == job_key("race", b=2, a=1)


def test_the_cache_is_bounded_in_entries_and_megabytes():
    import torch

    def tensor(mb):
        return lambda cancel: iter([torch.zeros(mb * 2**18)])  # mb MiB of float32
    jobs = Jobs(limit=2, cache_entries=2, cache_mb=5)
    for i in range(3):
        list(jobs.subscribe(f"k{i}", tensor(1)))
    assert jobs.known("k0") is None and jobs.known("k1") == jobs.known("k2") == "cached"
    assert jobs.counts["evicted"] == 1
    list(jobs.subscribe("big", tensor(3)))  # 3 + 1 MiB fit; the least recently used (k1) goes
    assert jobs.known("big") == "cached" and jobs.known("k1") is None and jobs.known("k2") == "cached"
    list(jobs.subscribe("huge", tensor(6)))  # over the whole bound: never kept
    assert jobs.known("huge") is None and jobs.known("big") == "cached"
    again = jobs.subscribe("k2", tensor(1))
    assert again.replay and torch.equal(list(again)[0], torch.zeros(2**18)) and jobs.runs["k2"] == 1


def test_distinct_runs_wait_their_turn_holding_no_thread():
    jobs = Jobs(limit=1)
    first = Counted(lambda cancel: iter([1, 2]))
    first.gate.clear()  # runs until the gate opens
    a = jobs.subscribe("a", first)
    b = jobs.subscribe("b", lambda cancel: iter(["b"]))
    c = jobs.subscribe("c", lambda cancel: iter(["c"]))
    assert (a.state, b.state, c.state) == ("running", "waiting", "waiting")
    assert jobs.ahead() == 3 and jobs.ahead("b") == 1 and jobs.ahead("c") == 2 and c.ahead() == 2
    assert jobs.ahead("a") == 0

    async def watch(sub):  # awaits on the event loop: ticks while waiting, then the events
        return [item async for item in sub.aevents(timeout=0.05)]
    c.close()  # nobody waits for it any more: it never starts
    first.gate.set()
    got = asyncio.run(watch(b))
    assert got[-1] == "b" and set(got[:-1]) <= {TICK} and c.state == "cancelled" and "c" not in jobs.runs
    assert list(a) == [1, 2]


def test_a_failure_reaches_every_subscriber_and_is_not_cached():
    jobs = Jobs(limit=1)

    def broken(cancel):
        yield 1
        raise ValueError("boom")
    subs = [jobs.subscribe("x", broken) for _ in range(2)]
    for sub in subs:
        with pytest.raises(ValueError, match="boom"):
            list(sub)
    assert jobs.known("x") is None


def test_shutdown_stops_every_run_and_waits_for_its_thread():
    """Even a run nobody watches any more is waited for (an exit while its thread is inside torch aborts)."""
    jobs = Jobs(limit=1)
    inside, left = threading.Event(), threading.Event()

    def busy(cancel):
        try:
            while True:
                inside.set()
                yield "step"
                cancel.wait(0.2)  # a step of work that does not look at the switch until it is done
        finally:
            left.set()
    running = jobs.subscribe("running", busy)
    queued = jobs.subscribe("queued", lambda cancel: iter(["never"]))
    assert inside.wait(60) and queued.state == "waiting"
    watcher = jobs.subscribe("running", busy)
    running.close()  # one watcher leaves; the run goes on for the other
    assert jobs.shutdown(timeout=60)
    assert left.is_set() and running.state == "cancelled" and queued.state == "cancelled"
    assert list(queued) == [] and "queued" not in jobs.runs and jobs.stats()["live"] == 0
    watcher.close()
