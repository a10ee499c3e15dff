"""Every job's memory and work, estimated before it starts and checked against what this machine can give.

Why: one request with values the page itself allows (ResNeXt-101 at 512 px, batch 256) would need hundreds of
gigabytes for one training step; it must be refused in a fraction of a second, with a sentence that names the
limit and a setting that fits, before any data or weights are loaded.

How: each job counts its own memory and work (``Job.cost``: per-image counts from one pass on the meta device,
``resnet.profile``, scaled by its batch, its bytes per element and every copy alive at once); this module only
compares that cost with the machine's budget and, when it is over, asks the job for the best offer that fits
(``admit``).

Budgets (``machine_budget``): memory is ``RESNET_MEMORY_BUDGET_MB`` or 60 % of what is available when the job is
checked (``MemAvailable``; free GPU memory for the part that lives on a GPU); work is ``RESNET_WORK_BUDGET_TMACS``
or 60 TMACs on a CPU (about ten minutes of training on two cores; the app's default run, ResNet-18 at 128 px on
the built-in set with three strategies for five epochs, is 4.1 and needs about 0.6 GB) and 2000 on a GPU.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from . import config
from . import device as devices
from .i18n import Text
from .job import Cost, Job

GB = 2 ** 30
MB = 2 ** 20
CPU_WORK_TMACS, GPU_WORK_TMACS = 60.0, 2000.0
MEMORY_SHARE = 0.6          # of the memory available when a job is checked


# ---------------------------------------------------------------------------- the machine

@dataclass(frozen=True)
class Budget:
    memory: int        # bytes one job may plan to use on its device
    host: int          # bytes of host memory (the same as ``memory`` on a CPU)
    work: float        # multiply-adds
    device: str


def available_ram() -> int:
    """Bytes of memory available now: ``MemAvailable`` from /proc/meminfo, else free pages (no psutil needed)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * GB  # nothing to read: a modest machine


def machine_budget(device: torch.device | str | None = None) -> Budget:
    """What one job may plan to use here and now (the operator's settings win). Without a setting, the share of
    free memory is divided among the training jobs that may run at once, so that jobs admitted together fit."""
    dev = torch.device(device) if device is not None else devices.pick_device()
    set_mb, set_tmacs = config.get("RESNET_MEMORY_BUDGET_MB"), config.get("RESNET_WORK_BUDGET_TMACS")
    share = MEMORY_SHARE / config.train_concurrency()
    host = set_mb * MB if set_mb else int(share * available_ram())
    memory = host
    if dev.type == "cuda" and not set_mb:
        free, _ = torch.cuda.mem_get_info(dev)
        memory = int(share * free)
    work = (set_tmacs if set_tmacs else GPU_WORK_TMACS if dev.type == "cuda" else CPU_WORK_TMACS) * 1e12
    return Budget(memory, host, work, dev.type)


# ---------------------------------------------------------------------------- helpers

def show_bytes(n: float) -> str:
    return f"{n / GB:,.0f} GB" if n >= 10 * GB else f"{n / GB:.1f} GB" if n >= GB else f"{max(n, MB) / MB:,.0f} MB"


def show_macs(n: float) -> str:
    return f"{n / 1e12:,.0f} TMACs" if n >= 1e13 else f"{n / 1e12:.1f} TMACs" if n >= 1e11 else f"{n / 1e9:,.1f} GMACs"


# ---------------------------------------------------------------------------- admitting a job

def admit(job: Job, device: torch.device | str | None = None) -> Cost:
    """``job``'s cost if it fits this machine's budget; else ``BudgetExceeded`` with the job's own sentence and the
    best offer it finds that fits (``job.offers``, searched with the ``fits`` predicate below)."""
    job = job.validated()
    dev = torch.device(device) if device is not None else job.runs_on()
    budget = machine_budget(dev)
    need = job.cost(dev)
    why = need.over(budget.memory, budget.host, budget.work)
    if why is None:
        return need
    order = ("memory", "data", "work")

    def fits(only: str | None = None, **change) -> bool:
        """Does the job with ``change`` meet every limit (``only=None``), or at least ``only`` and the limits
        before it (a later limit may then speak, with its own offer)?"""
        try:
            variant = dataclasses.replace(job, **change).validated()
        except ValueError:
            return False
        left = variant.cost(dev).over(budget.memory, budget.host, budget.work)
        return left is None or (only is not None and left in order and order.index(left) > order.index(only))

    options, every_limit = job.offers(why, fits)
    raise job.refusal(why, need, budget, fits_text(*options[:2], whole=every_limit) if options else None)


def largest(lo: int, hi: int, ok) -> int | None:
    """The largest v in [lo, hi] with ok(v), for ok monotone (true below some point); None if none."""
    if hi < lo or not ok(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def fits_text(offer: Text, other: Text | None = None, *, whole: bool = True) -> Text:
    """"batch size 8 fits." / "batch size 8 (or 96 px) fits."; an offer that meets only the limit named (another
    limit would still refuse it) says so: "… brings it under this limit."."""
    key = "budget.fits" if whole else "budget.fits_limit"
    return Text(key + "_or", offer=offer, other=other) if other else Text(key, offer=offer)


