"""Every job's memory and work, estimated before it starts and checked against what this machine can give.

Why: one request with values the page itself allows (ResNeXt-101 at 512 px, batch 256) would need hundreds of
gigabytes for one training step; it must be refused in a fraction of a second, with a sentence that names the
limit and a setting that fits, before any data or weights are loaded.

How: each network is run once per (network, image size) on the meta device (no memory, no arithmetic) with
forward hooks that count, per part of the network, the elements of every leaf module's output (what autograd
keeps for the backward pass, an over-count on the safe side: ResNet-18 and -50 at 64–128 px keep 0.67–0.75× of
it, and whole runs peaked at 0.65–1.05× the total estimate; ``tests/test_budget.py`` measures both), the widest
single output (the working set of a pass without gradients) and the multiply-adds. Those per-image counts are
then scaled by the batch size and the bytes per element the run will use (bf16 / fp16 where
``resnet.device.amp_dtype`` says so), and added to the parameters, gradients and optimiser state of the part
that trains, and to the data held in memory, phase by phase, every copy that is alive at once
(``resnet.train.finetune_cost`` lists them). Each job counts its own (``Job.cost``); this module only compares.

Budgets (``machine_budget``): memory is ``RESNET_MEMORY_BUDGET_MB`` or 60 % of what is available when the job is
checked (``MemAvailable``; free GPU memory for the part that lives on a GPU); work is ``RESNET_WORK_BUDGET_TMACS``
or 60 TMACs on a CPU (about ten minutes of training on two cores; the app's default run, ResNet-18 at 128 px on
the built-in set with three strategies for five epochs, is 4.1 and needs about 0.6 GB) and 2000 on a GPU.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import lru_cache

import torch

from . import config
from . import device as devices
from .checks import choices, short, what_text, whole
from .errors import BadSetting, BudgetExceeded
from .i18n import Text, error
from .job import Cost, Job
from .profile import META_LOCK, SGD_BYTES, TRANSIENT, Profile, count, resnet_profile

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


@lru_cache(maxsize=256)
def lab_profile(name: str, residual: bool, setting: str, widths: tuple, size: int) -> Profile:
    """``count`` for ``resnet.analysis.labs.lab_net``. A CIFAR net of n blocks per stage counts exactly what one of one
    block does plus n − 1 times the difference to two blocks (every further block is the same): ResNet-1202
    is counted in milliseconds instead of the seconds a 1202-layer meta pass takes."""
    from .analysis.labs import CIFAR_NETS, lab_net
    if name not in CIFAR_NETS:
        with META_LOCK:
            return count(lab_net(name, residual, setting=setting, widths=widths, device="meta"), size)

    one, two = (_cifar_profile(n, residual, setting, widths, size) for n in (1, 2))
    k = CIFAR_NETS[name] - 1
    grow = lambda a, b: {p: a[p] + k * (b[p] - a[p]) for p in a}  # noqa: E731
    return Profile(grow(one.saved, two.saved), dict(two.widest), grow(one.macs, two.macs),
                   grow(one.params, two.params), dict(two.out))


@lru_cache(maxsize=64)
def _cifar_profile(n: int, residual: bool, setting: str, widths: tuple, size: int) -> Profile:
    from .analysis.labs import SETTINGS, CifarResNet, _strip_batchnorm
    with torch.device("meta"):
        net = CifarResNet(n, residual, 10, widths)
    if not SETTINGS[setting].batchnorm:
        _strip_batchnorm(net)
    with META_LOCK:
        return count(net, size)


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


# ---------------------------------------------------------------------------- labs

def _check_lab(what: Text, need, value: int, lo: int, offer: str, otherwise: Text) -> None:
    """Refuse a lab whose ``need(value)`` = (bytes, multiply-adds) is over this server's budget (labs run on the
    CPU), offering the largest value from ``lo`` up that fits (``Text(offer, n=that value)``), else ``otherwise``."""
    budget = machine_budget("cpu")

    def within(v: int) -> bool:
        mem, work = need(v)
        return mem <= budget.host and work <= budget.work

    if within(value):
        return
    best = largest(lo, value - 1, within)
    fits = fits_text(Text(offer, n=best) if best else otherwise)
    mem, work = need(value)
    if mem > budget.host:
        raise error(BudgetExceeded, "budget.lab.memory", what=what, need=show_bytes(mem),
                    limit=show_bytes(budget.host), fits=fits)
    raise error(BudgetExceeded, "budget.lab.work", what=what, need=show_macs(work), limit=show_macs(budget.work),
                fits=fits)


def _lab_step(name, residual, setting, widths, size, batch) -> tuple[int, int, float]:
    """(one step's memory without parameters, parameters, multiply-adds of forward + backward) of a lab net, fp32."""
    p = lab_profile(name, residual, setting, tuple(widths), size)
    acts = batch * (p.total("saved") + TRANSIENT * p.total("widest")) * 4 + 2 * batch * 3 * size * size * 4
    return acts, p.total("params"), 3.0 * batch * p.total("macs")


def gradient_flow_estimate(nets, settings, batch_size: int, sizes: dict) -> tuple[int, float]:
    """Nets are built and run one at a time (the previous one still alive while the next is built); one batch of
    the built-in shapes per size (and numpy's copies while it is drawn)."""
    mem, work, params = 0, 0.0, 0
    for setting in settings:
        for name in nets:
            for residual in (True, False):
                acts, p, w = _lab_step(name, residual, setting, (16, 32, 64), sizes[name], batch_size)
                mem, work, params = max(mem, acts + 8 * p), work + w, max(params, p)
    data = sum(max(batch_size, 8) * 3 * sizes[n] ** 2 * 4 * 3 for n in set(nets))
    return mem + 4 * params + data, work


def check_gradient_flow(nets, settings, batch_size, image_size=None) -> tuple[tuple, tuple, int, dict]:
    """Validate the gradient-flow lab's settings (lists from the API deduplicated and capped) and refuse what
    is over the budget; returns (nets, settings, batch size, input size per net)."""
    from .analysis.labs import LAB_NETS, SETTINGS, default_size
    nets = choices(nets, LAB_NETS, "networks")
    settings = choices(settings, tuple(SETTINGS), "settings")
    batch_size = whole(batch_size, 2, 256, "batch size")
    if image_size is not None:
        image_size = whole(image_size, 32, 256, "image size")
    sizes = {n: image_size or default_size(n) for n in nets}
    _check_lab(Text("budget.lab.flow", n=len(nets), batch=batch_size),
               lambda b: gradient_flow_estimate(nets, settings, b, sizes), batch_size, 2, "budget.offer.batch_size",
               Text("budget.offer.shallower"))
    return nets, settings, batch_size, sizes


def race_estimate(steps: int, batch_size: int, nets, n_images: int, widths) -> tuple[int, float]:
    """All nets and their SGD state live together; one net's step runs at a time; the set of shapes (and numpy's
    copies while it is drawn)."""
    steps_mem, params, work = 0, 0, 0.0
    for name, residual in nets:
        acts, p, w = _lab_step(name, residual, "bn", tuple(widths), 32, batch_size)
        steps_mem, params, work = max(steps_mem, acts), params + p, work + w * steps
    return steps_mem + SGD_BYTES * params + n_images * 3 * 32 * 32 * 4 * 3, work


def check_training_race(steps, batch_size, nets, n_images, widths) -> tuple[int, int, tuple, int, tuple]:
    """Validate (racers deduplicated, at most 8) and budget the training race; returns (steps, batch size,
    racers, images, widths)."""
    from .analysis.labs import LAB_NETS
    steps = whole(steps, 1, 5000, "number of steps")
    batch_size = whole(batch_size, 2, 256, "batch size")
    n_images = whole(n_images, 8, 4096, "number of images")
    if not isinstance(nets, (list, tuple)) or not nets or len(nets) > 32:
        raise error(BadSetting, "budget.race.pairs")
    pairs = []
    for item in nets:
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and item[0] in LAB_NETS
                and isinstance(item[1], bool)):
            raise error(BadSetting, "budget.race.pair", value=short(item))
        if tuple(item) not in pairs:
            pairs.append(tuple(item))
    if len(pairs) > 8:
        raise error(BadSetting, "budget.race.at_most")
    if not (isinstance(widths, (list, tuple)) and len(widths) == 3):
        raise error(BadSetting, "budget.race.widths")
    widths = tuple(whole(w, 1, 64, "width") for w in widths)
    _check_lab(Text("budget.lab.race", steps=steps, batch=batch_size),
               lambda v: race_estimate(v, batch_size, pairs, n_images, widths), steps, 1, "budget.offer.steps",
               Text("budget.offer.smaller_batch"))
    return steps, batch_size, tuple(pairs), n_images, widths


def check_bn_batch_run(steps, batch_size, groups, n_images, widths) -> tuple[int, int, tuple, int]:
    """Validate and budget the BatchNorm lab's training run (``labs.bn_batch_run``: one ResNet-20 per group size,
    all trained on the same batches, each evaluated on the held-out shapes); returns (steps, batch size, group
    sizes, images)."""
    steps = whole(steps, 1, 2000, "number of steps")
    batch_size = whole(batch_size, 2, 256, "batch size")
    n_images = whole(n_images, 8, 4096, "number of images")
    if not isinstance(groups, (list, tuple)) or not 1 <= len(groups) <= 4:
        raise error(BadSetting, "budget.race.pairs")
    groups = tuple(dict.fromkeys(whole(g, 2, batch_size, "batch size") for g in groups))
    nets = [("cifar20", True)] * len(groups)
    # Evaluation every 8 steps: a pass of 256 training images (the set's statistics), then 256 held-out ones, no
    # backward pass: about 0.7 of those 8 steps' work again at a batch of 32.
    def need(v: int) -> tuple[int, float]:
        mem, work = race_estimate(v, batch_size, nets, n_images + 512, widths)
        return mem, 1.7 * work
    _check_lab(Text("budget.lab.race", steps=steps, batch=batch_size), need, steps, 1, "budget.offer.steps",
               Text("budget.offer.smaller_batch"))
    return steps, batch_size, groups, n_images


def check_deep_network(name, batch_size, image_size, setting) -> tuple[int, int]:
    """Validate and budget the 1000-layer lab (two nets, one after the other); returns (batch size, image size)."""
    from .analysis.labs import CIFAR_NETS, SETTINGS
    if name not in CIFAR_NETS:
        raise error(BadSetting, "budget.deep.net", allowed=", ".join(CIFAR_NETS))
    if setting not in SETTINGS:
        raise error(BadSetting, "budget.unknown", what=what_text("setting"), value=short(setting),
                    allowed=", ".join(SETTINGS))
    batch_size = whole(batch_size, 2, 32, "batch size")
    image_size = whole(image_size, 8, 128, "image size")

    def need(b: int) -> tuple[int, float]:
        mem, work, params = 0, 0.0, 0
        for residual in (True, False):
            acts, p, w = _lab_step(name, residual, setting, (16, 32, 64), image_size, b)
            mem, work, params = max(mem, acts + 8 * p), work + w, max(params, p)
        return mem + 4 * params + b * 3 * image_size ** 2 * 4 * 3, work
    _check_lab(Text("budget.lab.deep", depth=6 * CIFAR_NETS[name] + 2, size=image_size, batch=batch_size), need,
               batch_size, 2, "budget.offer.batch_size", Text("budget.offer.size", size=32))
    return batch_size, image_size


def bn_lab_estimate(pool_size: int, image_size: int, n_photos: int) -> tuple[int, float]:
    """ResNet-18 (a private copy) over the crop pool: no gradients, the whole pool through at once to the chosen
    layer (its features kept), and every photo of the pool decoded at once (each up to the pixel limit)."""
    p = resnet_profile("resnet18", image_size)
    pool = pool_size * 3 * image_size ** 2 * 4
    passes = pool_size * (TRANSIENT + 1) * p.total("widest") * 4
    photos = n_photos * config.get("RESNET_MAX_IMAGE_PIXELS") * 3
    return 8 * p.total("params") + 2 * pool + passes + photos, 4.0 * pool_size * p.total("macs")


def check_bn_lab(pool_size, image_size: int = 128, n_photos: int = 6) -> int:
    """Validate and budget the BatchNorm lab's image pool (``labs.image_pool``); returns the pool size."""
    pool_size = whole(pool_size, 1, 256, "pool size")
    image_size = whole(image_size, 32, 512, "image size")
    n_photos = whole(n_photos, 1, 64, "number of photos")
    _check_lab(Text("budget.lab.pool", n=pool_size, size=image_size),
               lambda n: bn_lab_estimate(n, image_size, n_photos), pool_size, 1, "budget.offer.pool",
               Text("budget.offer.smaller_size"))
    return pool_size


def check_group_conv(cin, cout, groups, size) -> tuple[int, int, int, int]:
    """The group-convolution lab runs on the meta device (no memory, no arithmetic): only the ranges matter."""
    cin, cout = whole(cin, 1, 4096, "number of input channels"), whole(cout, 1, 4096, "number of output channels")
    groups, size = whole(groups, 1, 4096, "number of groups"), whole(size, 1, 512, "feature-map size")
    if cin % groups or cout % groups:
        raise error(BadSetting, "budget.groups", groups=groups, cin=cin, cout=cout)
    return cin, cout, groups, size
