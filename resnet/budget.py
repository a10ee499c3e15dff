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
(``finetune_estimate`` lists them).

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
from .checks import whole  # noqa: F401 - budget.whole: callers check their own settings with it
from .errors import BudgetExceeded
from .i18n import Text, error
from .job import Cost, Job
from .profile import ADAM_BYTES, TRANSIENT, Profile, act_bytes, resnet_profile

GB = 2 ** 30
MB = 2 ** 20
CPU_WORK_TMACS, GPU_WORK_TMACS = 60.0, 2000.0
MEMORY_SHARE = 0.6          # of the memory available when a job is checked
# (train, val) of a named data set, for the check before it is loaded (flowers: 10 % of each class held out)
KNOWN_COUNTS = {"hymenoptera": (244, 153), "flowers": (3303, 367)}
# What finetune.run keeps per run beside its arrays (see finetune.EVAL_BATCH / BN_IMAGES; copied to avoid a cycle).
EVAL_BATCH, BN_IMAGES = 64, 64


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
    dev = torch.device(device) if device is not None else job.device()
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


# ---------------------------------------------------------------------------- fine-tuning

FROZEN_TO_LAYER3 = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
LAST_PART = ("layer4", "avgpool", "fc")


def cache_row_bytes(prof: Profile) -> dict:
    """Bytes of one image's row in each of the engine's feature caches (fp32)."""
    return {"conv4_x": prof.out["layer3"] * 4, "avgpool": prof.out["avgpool"] * 4, "fc": prof.out["fc"] * 4}


@dataclass
class Estimate:
    """Peak memory (bytes, on the job's device and on the host) and total multiply-adds of one job."""

    memory: int                  # on the device (host + device on a CPU)
    host: int
    work: float
    step: int                    # the largest single training step alone (activations + its model), for messages
    data: int                    # decoded images and cached features held at once, at their peak
    what: str = ""               # where the peak is, in words


def _counts(cfg, n_images: int | None) -> tuple[int, int]:
    """(train, val) images: given, known from the configuration, or (0, 0) when not known yet (an upload)."""
    from .data import ImageSet
    if n_images is None:
        if isinstance(cfg.dataset, ImageSet):
            return len(cfg.dataset.train), len(cfg.dataset.val)
        name = str(cfg.dataset).strip()
        if name in KNOWN_COUNTS:
            return KNOWN_COUNTS[name]
        if name == "synthetic" and not cfg.val_fraction:  # every image trains; a separate validation series
            from .data.synthetic import TARGET_CLASSES, VAL_PER_CLASS
            n_train = cfg.synthetic_images
            if getattr(cfg, "per_class", None):
                n_train = min(n_train, cfg.per_class * TARGET_CLASSES)
            return n_train, VAL_PER_CLASS * TARGET_CLASSES
        n_images = cfg.synthetic_images if name == "synthetic" else 0
    vf = cfg.val_fraction or (0.25 if str(cfg.dataset) == "synthetic" else 0.2)
    n_val = min(n_images, max(1, round(n_images * vf))) if n_images else 0
    return n_images - n_val, n_val


def _in_memory_bytes(cfg, n: int) -> int:
    """The data set's own copy in memory: the synthetic set's images (files on disk are read as needed)."""
    from .data import ImageSet
    ds = cfg.dataset
    if isinstance(ds, ImageSet):
        base = getattr(ds.train, "dataset", ds.train)
        images = getattr(base, "images", None)
        return sum(im.size[0] * im.size[1] * len(im.getbands()) for im in images) if images else 0
    return n * cfg.image_size ** 2 * 3 if str(ds).strip() == "synthetic" else 0


def finetune_estimate(cfg, n_images: int | None = None, *, n_train: int | None = None, n_val: int | None = None,
                      device: torch.device | None = None, profile: Profile | None = None) -> Estimate:
    """Peak memory and total work of ``finetune.run(cfg)``, phase by phase, as the engine really runs.

    Alive for the whole run: the data set's own images (synthetic), the decoded uint8 squares, the
    normalised validation images, the seeded BatchNorm sample, the feature cache, the 1000-class backbone
    state, and each finished strategy's model (``keep_models``). On top, the largest of: loading the
    weights (state, model and file), stacking the decoded images (the list and the stack), the one-off
    cache pass (frozen net at ``EVAL_BATCH``, the feature lists and their concatenation), and each
    strategy's training (its network, gradients, AdamW state and autocast copies, one step's activations
    or an evaluation pass at ``EVAL_BATCH``, whichever is larger).
    """
    from .train.finetune import cache_plan  # the engine's own decision of what is cached
    from .models.transfer import STRATEGIES
    cfg = cfg.validated()
    dev = torch.device(device) if device is not None else devices.pick_device(cfg.device)
    on_gpu = dev.type != "cpu"
    if n_train is None or n_val is None:
        n_train, n_val = _counts(cfg, n_images)
    n = n_train + n_val
    s, b = cfg.image_size, cfg.batch_size
    prof = profile or resnet_profile(cfg.arch, s)
    P = prof.total("params")
    views = 1 + cfg.augmented_views
    rows = n_train * views + n_val
    r = round(s / 0.875)  # resnet.preprocess.recipe(size).resize
    u8, val_x = n * 3 * r * r, n_val * 3 * s * s * 4
    row_bytes = cache_row_bytes(prof)
    points, uncached, _ = cache_plan(cfg, row_bytes, rows)
    cache = rows * sum(row_bytes[p] for p in points)

    def cached(name: str) -> bool:
        return STRATEGIES[name].cache_point in points and name not in uncached

    full_net = [x for x in cfg.strategies if not cached(x)]
    bn_x = min(BN_IMAGES, n_train) * 3 * s * s * 4 if full_net else 0
    host = _in_memory_bytes(cfg, n) + u8 + val_x + bn_x
    dev_mem = cache if on_gpu else 0
    host += 0 if on_gpu else cache
    pretrained = any(STRATEGIES[x].pretrained for x in cfg.strategies)
    state = 4 * P if pretrained else 0
    host += state
    ab_full = act_bytes(dev, s)
    amp_copy = 2 * P if ab_full == 2 else 0

    # One-off phases.
    phases = {"loading the weights": (8 * P, 0), "stacking the decoded images": (u8, 0)}
    if points:
        deepest = FROZEN_TO_LAYER3 if points == {"conv4_x"} else tuple(prof.params)
        work_set = EVAL_BATCH * (TRANSIENT * prof.total("widest", deepest) * ab_full + 2 * 3 * s * s * 4)
        frozen = 4 * P + amp_copy + work_set + cache  # the net, one batch, and the feature lists before torch.cat
        phases["the feature cache pass"] = (0, frozen) if on_gpu else (frozen, 0)
    # Training, strategy by strategy; finished strategies' models stay (on the CPU).
    step_max, work = 0, 0.0
    m_full, m_frozen = prof.total("macs"), prof.total("macs", FROZEN_TO_LAYER3)
    if points:
        work += (n_train * views + n_val) * (m_full if points - {"conv4_x"} else m_frozen)
    for k, name in enumerate(cfg.strategies):
        st = STRATEGIES[name]
        if st.cache_point is None:
            trained, fed = tuple(prof.params), s
        elif st.cache_point == "conv4_x":
            trained, fed = LAST_PART, max(1, s // 16)
        else:
            trained, fed = ("fc",), 1
        on_cache = cached(name)
        ab = act_bytes(dev, fed if on_cache else s)
        p_train = prof.total("params", trained) if st.cache_point != "fc" else prof.params["fc"]
        macs_trained = prof.total("macs", trained)
        acts = b * prof.total("saved", trained) * ab
        widest = prof.total("widest", trained if on_cache else tuple(prof.params))
        passes = max(b, EVAL_BATCH) * TRANSIENT * widest * ab
        x_in = 0 if on_cache else 2 * b * 3 * s * s * 4
        step = 4 * P + (ADAM_BYTES - 4) * p_train + (amp_copy if ab == 2 else 0) + acts + passes + x_in
        kept = 4 * P * k if cfg.keep_models else 0
        phases[f"training '{name}'"] = (kept, step) if on_gpu else (kept + step, 0)
        step_max = max(step_max, step)
        fwd_extra = 0 if on_cache else (m_full - macs_trained)  # the frozen part, recomputed every step
        per_epoch = n_train * (views if on_cache else 1) * (3 * macs_trained + fwd_extra) \
            + (n_val + min(BN_IMAGES, n_train)) * (macs_trained if on_cache else m_full)
        work += cfg.epochs * per_epoch
    what = max(phases, key=lambda k: sum(phases[k]))
    host_peak = host + max(h for h, _ in phases.values())
    dev_peak = dev_mem + max(d for _, d in phases.values())
    data = u8 + max(u8, val_x + bn_x + 2 * cache)  # the list and its stack; later the features' lists and their cat
    return Estimate(dev_peak if on_gpu else host_peak, host_peak, work, step_max, data, what)


def _smaller_size(cfg, ok) -> int | None:
    """The largest image size below cfg's, a multiple of 16 as on the page's slider, that passes ``ok(size,
    guess)``: first by the scaled counts (no meta pass), then confirmed, stepping down, with exact ones."""
    sizes = [v for v in range(512, 31, -16) if v < cfg.image_size]  # descending
    start = next((i for i, v in enumerate(sizes) if ok(v, True)), len(sizes) - 1)
    if start > 0 and ok(sizes[start - 1], False):  # the guess was cautious: one size up fits too
        return sizes[start - 1]
    return next((v for v in sizes[start:] if ok(v, False)), None)


def check_finetune(cfg, n_images: int | None = None, *, n_train: int | None = None, n_val: int | None = None,
                   device: torch.device | str | None = None) -> Estimate:
    """Refuse (``BudgetExceeded``) a fine-tuning run over this machine's budget; return its estimate otherwise.

    ``cfg``: a ``FinetuneConfig`` (validated here; a bad setting raises ``ValueError``). ``n_images``, or
    ``n_train`` and ``n_val``: how many images the data set holds. Unknown (an upload not yet listed), only what
    does not depend on the data set is checked (one step's memory), so call again once it is known. The limits,
    in order: memory (``machine_budget``), the decoded images and their features (``cfg.max_decoded_mb``, the
    operator's ``RESNET_MAX_DATASET_MB``), work. The setting offered in the message fits all three.
    """
    from .models.resnet import ARCHS
    cfg = cfg.validated()
    dev = torch.device(device) if device is not None else devices.pick_device(cfg.device)
    budget = machine_budget(dev)
    if n_train is not None and n_val is not None:
        n_images = n_train + n_val
    elif n_images is None and _counts(cfg, None)[0] > 0:
        n_train, n_val = _counts(cfg, None)
        n_images = n_train + n_val
    known = n_images is not None
    data_limit = cfg.max_decoded_mb * MB

    def estimate(guess: bool = False, **change) -> Estimate | None:
        try:
            new = dataclasses.replace(cfg, **change).validated()
        except ValueError:
            return None
        prof = resnet_profile(cfg.arch, cfg.image_size).scaled(new.image_size / cfg.image_size) if guess else None
        same = known and n_train is not None and not guess and new.image_size == cfg.image_size
        return finetune_estimate(new, n_images, n_train=n_train if same else None, n_val=n_val if same else None,
                                 device=dev, profile=prof)

    def over(e: Estimate) -> str | None:
        if e.memory > budget.memory or e.host > budget.host:
            return "memory"
        if known and e.data > data_limit:
            return "data"
        return "work" if known and e.work > budget.work else None

    e = finetune_estimate(cfg, n_images, n_train=n_train, n_val=n_val, device=dev)
    why = over(e)
    if why is None:
        return e
    order = ("memory", "data", "work")

    def fits(only: str | None, guess: bool = False, **change) -> bool:
        """Does ``cfg`` with ``change`` meet every limit (``only=None``), or at least ``only`` and those before it
        (a later limit may then speak, with its own offer)?"""
        x = estimate(guess, **change)
        left = "invalid" if x is None else over(x)
        return left is None or (only is not None and left in order and order.index(left) > order.index(only))

    def offers(only: str | None) -> list[Text]:
        out = []
        if why == "memory":
            bs = largest(1, cfg.batch_size - 1, lambda v: fits(only, batch_size=v))
            out += [Text("budget.offer.batch_size", n=bs)] if bs else []
        if why == "work":
            ep = largest(1, cfg.epochs - 1, lambda v: fits(only, epochs=v))
            out += [_epochs(ep)] if ep else []
        size = _smaller_size(cfg, lambda v, guess: fits(only, guess, image_size=v))
        return out + ([Text("budget.offer.size", size=size)] if size else [])

    options = offers(None)
    whole = bool(options)  # an offer that meets every limit, or (below) one that meets this limit only
    options = options or offers(why)
    if not options and why in ("memory", "work"):  # no one knob is enough: a smaller size, then the most that fits
        knob, lo = ("batch_size", 2) if why == "memory" else ("epochs", 1)
        size = _smaller_size(cfg, lambda v, guess: fits(why, guess, image_size=v, **{knob: lo}))
        best = size and largest(lo, getattr(cfg, knob), lambda v: fits(why, image_size=size, **{knob: v}))
        if best:
            offer = Text("budget.offer.batch_size", n=best) if knob == "batch_size" else _epochs(best)
            options.append(Text("budget.offer.at_size", offer=offer, size=size))
    if not options:
        smaller = next((ARCHS[a].title for a in ARCHS if a != cfg.arch and fits(None, arch=a)), None)
        whole = smaller is not None
        options.append(Text("budget.offer.arch", title=smaller) if smaller else
                       Text("budget.offer.fewer_images") if known else Text("budget.offer.fewer_strategies"))
    fits = fits_text(*options[:2], whole=whole)
    title = ARCHS[cfg.arch].title
    images = Text("budget.images.one" if n_images == 1 else "budget.images", n=n_images)
    if why == "memory":
        need, limit = (e.memory, budget.memory) if e.memory > budget.memory else (e.host, budget.host)
        where = Text("budget.where.step") if e.what.startswith("training") else _phase(e.what)
        key = "budget.finetune.memory_data" if known and e.data > 0.25 * need else "budget.finetune.memory"
        raise error(BudgetExceeded, key, title=title, size=cfg.image_size, batch=cfg.batch_size, images=images,
                    need=show_bytes(need), where=where, limit=show_bytes(limit), fits=fits)
    if why == "data":
        raise error(BudgetExceeded, "budget.finetune.data", images=images, size=cfg.image_size,
                    need=f"{e.data / MB:,.0f} MB", limit=f"{cfg.max_decoded_mb:,} MB", fits=fits)
    n_s = len(cfg.strategies)
    raise error(BudgetExceeded, "budget.finetune.work", title=title, size=cfg.image_size, epochs=_epochs(cfg.epochs),
                strategies=Text("budget.strategies.one" if n_s == 1 else "budget.strategies", n=n_s), images=images,
                need=show_macs(e.work), limit=show_macs(budget.work), fits=fits)


def _epochs(n: int) -> Text:
    return Text("budget.offer.epochs.one" if n == 1 else "budget.offer.epochs", n=n)


# The one-off phases of ``finetune_estimate`` that may be a run's largest, as the refusal names them.
PHASES = {"loading the weights": "budget.phase.loading", "stacking the decoded images": "budget.phase.stacking",
          "the feature cache pass": "budget.phase.cache"}


def _phase(what: str) -> Text:
    return Text(PHASES[what]) if what in PHASES else Text("budget.phase.other", phase=what)


# ---------------------------------------------------------------------------- pretraining on the built-in source

def pretrain_estimate(cfg, device: torch.device | None = None) -> Estimate:
    """Peak memory and work of ``resnet.train.pretrain`` (a validated ``PretrainConfig``): one network trained in
    full on the decoded source pictures, the same phases as a from-scratch fine-tune (``finetune_estimate``)."""
    from .train.finetune import FinetuneConfig
    dev = torch.device(device) if device is not None else devices.pick_device(cfg.device)
    n_train, n_val = cfg.per_class * cfg.num_classes, cfg.val_per_class * cfg.num_classes
    as_finetune = FinetuneConfig(dataset="source", arch=cfg.arch, strategies=("scratch",), epochs=cfg.epochs,
                                 image_size=cfg.image_size, batch_size=cfg.batch_size, keep_models=False)
    e = finetune_estimate(as_finetune, n_train=n_train, n_val=n_val, device=dev)
    painting = EVAL_BATCH * cfg.image_size ** 2 * 3 * 2  # one slice of pictures and its decoded copies
    return dataclasses.replace(e, memory=e.memory + painting, host=e.host + painting)


def check_pretrain(cfg, device: torch.device | str | None = None) -> Estimate:
    """Refuse (``BudgetExceeded``) a pretraining run over this machine's memory or work budget, offering a batch
    size, a number of epochs or an image size that fits; return its estimate otherwise."""
    from .models.resnet import ARCHS
    cfg = cfg.validated()
    dev = torch.device(device) if device is not None else devices.pick_device(cfg.device)
    budget = machine_budget(dev)

    def over(c) -> str | None:
        e = pretrain_estimate(c, dev)
        if e.memory > budget.memory or e.host > budget.host:
            return "memory"
        return "work" if e.work > budget.work else None

    why = over(cfg)
    if why is None:
        return pretrain_estimate(cfg, dev)
    e = pretrain_estimate(cfg, dev)
    knob, lo = ("batch_size", 2) if why == "memory" else ("epochs", 1)
    best = largest(lo, getattr(cfg, knob) - 1, lambda v: over(dataclasses.replace(cfg, **{knob: v})) is None)
    sizes = [s for s in range(cfg.image_size - 16, 31, -16) if over(dataclasses.replace(cfg, image_size=s)) is None]
    options = ([Text("budget.offer.batch_size", n=best) if knob == "batch_size" else _epochs(best)] if best else []) \
        + ([Text("budget.offer.size", size=sizes[0])] if sizes else [])
    fits = fits_text(*options[:2]) if options else Text("budget.pretrain.none")
    title = ARCHS[cfg.arch].title
    if why == "memory":
        need, limit = (e.memory, budget.memory) if e.memory > budget.memory else (e.host, budget.host)
        raise error(BudgetExceeded, "budget.pretrain.memory", title=title, size=cfg.image_size, batch=cfg.batch_size,
                    need=show_bytes(need), limit=show_bytes(limit), fits=fits)
    raise error(BudgetExceeded, "budget.pretrain.work", title=title, size=cfg.image_size, epochs=_epochs(cfg.epochs),
                images=cfg.per_class * cfg.num_classes, need=show_macs(e.work), limit=show_macs(budget.work),
                fits=fits)
