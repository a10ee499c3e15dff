"""A job: one kind of work a visitor can start (a fine-tune, a pretraining, each lab), as one settings object.

Everything around a run asks the job itself, so that a new kind of work is one new class:

- ``validated()``: the same job with checked, canonical settings (raises ``BadSetting`` with one sentence);
- ``cost(device)``: its peak memory and its multiply-adds (``Cost``), counted by its own code;
- ``estimate()``: its time on this machine in seconds (``None`` where nothing is measured);
- ``settings()`` and ``key()``: its canonical settings (links, the API, the command line) and its identity (a run
  with the same key is shared and replayed, ``resnet.train.jobs``);
- ``run(cancel)``: its events;
- ``offers(why, fits)`` and ``refusal(...)``: what to offer, and the sentence, when the budget says no.

``resnet.budget.admit(job)`` only compares the cost with this machine and asks the job for an offer that fits.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator

import torch

from .i18n import Text
from .keys import canonical, job_key


@dataclass(frozen=True)
class Cost:
    """Peak memory (bytes on the job's device, and on the host) and total multiply-adds of one job."""

    memory: int                       # on the device (host + device on a CPU)
    host: int
    work: float
    step: int = 0                     # the largest single training step alone, for messages
    data: int = 0                     # decoded images and cached features held at once, at their peak
    what: str = ""                    # where the peak is, in words
    data_limit: int | None = None     # bytes of decoded data this job may hold (None: no such limit)
    work_known: bool = True           # False: the work depends on data not listed yet, and is checked later

    def over(self, memory: int, host: int, work: float) -> str | None:
        """The first limit this cost is over: "memory", "data", "work", or None."""
        if self.memory > memory or self.host > host:
            return "memory"
        if self.data_limit is not None and self.data > self.data_limit:
            return "data"
        return "work" if self.work_known and self.work > work else None


Fits = Callable[..., bool]  # fits(only=None, **change): does this job with ``change`` fit (or pass ``only``)?


class Job:
    """The base of every job's settings dataclass (see the module's docstring)."""

    kind: ClassVar[str] = ""

    def validated(self) -> "Job":
        return self

    def runs_on(self) -> torch.device:
        """Where the job runs (the labs: the CPU). Not ``device``: a fine-tune has a setting of that name."""
        return torch.device("cpu")

    def cost(self, device: torch.device) -> Cost:
        raise NotImplementedError

    def estimate(self) -> float | None:
        return None

    def settings(self) -> dict:
        return canonical(dataclasses.asdict(self))

    def key(self) -> str:
        return job_key(self.kind, settings=self.settings())

    def run(self, cancel=None) -> Iterator[Any]:
        raise NotImplementedError

    def offers(self, why: str, fits: Fits) -> tuple[list[Text], bool]:
        """Settings that fit, best first, and whether they meet every limit (or only the one named)."""
        return [], False

    def refusal(self, why: str, cost: Cost, budget, fits: Text | None) -> Exception:
        """The ``BudgetExceeded`` to raise: what is over which limit, and ``fits`` (the offer in words; None when
        ``offers`` found none, and the job says what to change instead)."""
        raise NotImplementedError
