"""How long a fine-tuning run will take on this machine, before it starts: a short measured calibration, then
arithmetic over what ``finetune.run`` will do.

    cal = calibrate("resnet18", 128)             # a few real steps, timed; cached per (arch, size, device)
    e = estimate(FinetuneConfig(per_class=10))   # seconds, part by part; None when the data set is an upload
    e.seconds, e.parts                           # {"prepare": …, "cache": …, "all": …, "last": …, "head": …}

The calibration runs, once per (arch, image size, device) and process, the engine's own pieces on tiny batches:
painting and resizing a picture, the frozen part's forward pass (conv1 … conv4_x) and the rest of the network
without gradients, a training step of the whole network (with its augmentation), of conv5_x + fc on cached
conv4_x features, and of a new fc on cached vectors, and building a network. Nothing is a constant: the same
settings on a GPU, on a busy CPU or on a faster one give different figures. The estimate then counts, for the
run's strategies, epochs and images (``per_class`` included), what ``finetune.run`` does: decode every image once,
one shared pass of the frozen network for the cached strategies, and per epoch every training image through a
step, the validation images and the precise-BatchNorm sample through an evaluation.

``PRESETS``: the lesson-sized settings the Fine-tune tab offers, named after the ``/finetune`` endpoint's
parameters.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .. import device as devices
from ..data.synthetic import TARGET_CLASSES, VAL_PER_CLASS
from ..models.transfer import STRATEGIES
from ..profile import resnet_profile
from .cache_plan import cache_plan, cache_row_bytes
from .engine import BN_IMAGES, EVAL_BATCH

CAL_TRAIN_BATCHES = (2, 8)  # two timed training steps: their difference is the cost per image, the rest per step
CAL_EVAL_BATCHES = (4, 16)  # two timed passes without gradients, likewise (the engine's passes take 64 at a time)
CAL_IMAGES = 2        # pictures painted and resized to time the decoding
PAINT_IMAGES = 24     # source pictures painted and decoded to time a pretraining's painting (one of each class)
REPEATS = 2           # timed calls of each piece (the shortest counts)
CACHE_SIZE = 64       # calibrations kept (one per arch, size and device)

# Lesson-sized settings, keyed by the /finetune parameters they set. "quick": the default, about a minute on a
# 2-core CPU server (measured: 38 s with both cores, 54 s in the app, where a training job gets one of the two
# cores; the page's estimate says what this server will take); 48 px is the size the built-in source backbone is pretrained at (source and
# target at the same size transfer best), and 20 epochs at batch 10 give the cached strategies enough steps on 10
# images per class (bench/transfer_bench.py measures the margins). "thorough": more images per class, pixels and
# every strategy.
PRESETS: dict[str, dict] = {
    "quick": {"strategies": ["all", "last", "head", "scratch"], "arch": "resnet18", "epochs": 20, "image_size": 48,
              "batch_size": 10, "lr": 0, "per_class": 10},
    "thorough": {"strategies": ["all", "last", "head", "replace", "scratch"], "arch": "resnet18", "epochs": 20,
                 "image_size": 64, "batch_size": 16, "lr": 0, "per_class": 50},
}
DEFAULT_PRESET = "quick"


@dataclass(frozen=True)
class Calibration:
    """Measured seconds on this machine for one (arch, image size, device), per image unless said otherwise."""

    arch: str
    image_size: int
    device: str
    prepare_s: float       # paint (or read) one picture, resize it, and make its validation tensor
    frozen_eval_s: float   # conv1 … conv4_x without gradients (the cache pass of ``last``)
    frozen_eval_fixed_s: float  # and per pass, whatever its batch
    rest_eval_s: float     # conv5_x, pooling and fc without gradients, on conv4_x features
    rest_eval_fixed_s: float    # and per pass
    full_step_s: float     # augment one image and train the whole network on it (``all``, ``scratch``)
    full_step_fixed_s: float  # and per step, whatever its batch
    last_step_s: float     # train conv5_x + fc on one cached conv4_x feature map (``last``)
    last_step_fixed_s: float  # and per step
    fc_step_s: float       # one training step (per step, not per image) of a new fc on cached vectors
    build_s: float         # build one network (random weights), per strategy
    seconds: float         # how long the calibration itself took

    @property
    def full_eval_s(self) -> float:
        """The whole network without gradients: validation of ``all``/``scratch``, the shared cache pass."""
        return self.frozen_eval_s + self.rest_eval_s

    @property
    def full_eval_fixed_s(self) -> float:
        return self.frozen_eval_fixed_s + self.rest_eval_fixed_s

    def to_dict(self) -> dict:
        return asdict(self) | {"full_eval_s": self.full_eval_s, "full_eval_fixed_s": self.full_eval_fixed_s}


@dataclass
class RunEstimate:
    """Seconds a run should take here, in total and part by part, and the image counts it assumed."""

    seconds: float
    parts: dict[str, float]
    n_train: int
    n_val: int
    classes: int
    calibration: Calibration = field(repr=False)

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "parts": dict(self.parts), "n_train": self.n_train, "n_val": self.n_val,
                "classes": self.classes, "calibration": self.calibration.to_dict()}


_CACHE: OrderedDict[tuple, Calibration] = OrderedDict()
_CACHE_LOCK = threading.Lock()
_MEASURE_LOCK = threading.Lock()  # one calibration at a time: two at once would time each other


def cached_calibration(arch: str, image_size: int, device: str | torch.device | None = None) -> Calibration | None:
    """The calibration already measured for these settings, or None (never measures)."""
    key = (arch, int(image_size), str(devices.pick_device(str(device) if device is not None else None)))
    with _CACHE_LOCK:
        return _CACHE.get(key)


def calibrate(arch: str, image_size: int, device: str | torch.device | None = None) -> Calibration:
    """Time the engine's pieces for ``arch`` at ``image_size`` px on ``device`` (default: the one training would
    use), once per process; later calls return the cached figures at once."""
    dev = devices.pick_device(str(device) if device is not None else None)
    key = (arch, int(image_size), str(dev))
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    with _MEASURE_LOCK:
        with _CACHE_LOCK:  # measured by another thread while this one waited
            if key in _CACHE:
                return _CACHE[key]
        cal = _measure(arch, int(image_size), dev)
        with _CACHE_LOCK:
            _CACHE[key] = cal
            while len(_CACHE) > CACHE_SIZE:
                _CACHE.popitem(last=False)
    return cal


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev: torch.device, warm: bool = True, repeats: int = REPEATS) -> float:
    """Seconds of ``fn()``: the shortest of ``repeats`` calls (a busy machine's interruptions only ever add time),
    after one warm-up call (first calls allocate and pick kernels) unless ``warm=False``."""
    if warm:
        fn()
        _sync(dev)
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def _per_image(step, dev: torch.device, batches: tuple[int, int] = CAL_TRAIN_BATCHES) -> tuple[float, float]:
    """(seconds per image, seconds per call) of ``step(batch)``, from calls at each of the two ``batches`` after a
    warm-up at the larger one: a straight line through the two timings."""
    small, large = batches
    step(large)
    _sync(dev)
    t_small = _timed(lambda: step(small), dev, warm=False)
    t_large = _timed(lambda: step(large), dev, warm=False)
    per_image = max(t_large - t_small, 0.0) / (large - small) or t_large / large
    return per_image, max(t_small - small * per_image, 0.0)


class _Rest(nn.Module):
    """What ``last`` trains, as a module: conv5_x, pooling and fc on conv4_x features."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, f):
        return self.net.trainable(f)


def _measure(arch: str, size: int, dev: torch.device) -> Calibration:
    from ..data import draw_shape_image, noise_bank
    from ..models.resnet import build_model
    from ..models.transfer import TransferNet, strategy
    from ..preprocess import transform
    from .engine import adamw_cosine
    t_start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)

    t0 = time.perf_counter()
    backbone = build_model(arch, generator=gen)
    build_s = time.perf_counter() - t0

    # Decoding: pictures painted as the built-in set paints them, resized as every data set is, then the eval view.
    rng = np.random.default_rng(0)
    bank = noise_bank(size, rng)  # once per data set, not per picture
    decode, ev = transform("decode", size), transform("eval", size, decoded=True)
    t0 = time.perf_counter()
    u8 = torch.stack([decode(draw_shape_image("circle", size, rng, bank)) for _ in range(CAL_IMAGES)])
    torch.stack([ev(img) for img in u8])
    prepare_s = (time.perf_counter() - t0) / CAL_IMAGES
    n = max(CAL_EVAL_BATCHES[-1], CAL_TRAIN_BATCHES[-1])
    u8 = u8.repeat(n // CAL_IMAGES + 1, 1, 1, 1)[:n]

    # Without gradients: the frozen part up to conv4_x, then the rest of the network on its output.
    last = devices.prepare(TransferNet(backbone, strategy("last"), 4, generator=gen), dev, size).eval()
    x = torch.randn(n, 3, size, size, generator=gen)
    x = devices.layout(x.to(dev), dev, size)
    with torch.no_grad(), devices.autocast(dev, size):
        frozen_eval_s, frozen_eval_fixed_s = _per_image(lambda b: last.features(x[:b]), dev, CAL_EVAL_BATCHES)
        f = last.features(x).float()
    fsize = f.shape[-1]
    f = devices.layout(f, dev, fsize)
    with torch.no_grad(), devices.autocast(dev, fsize):
        rest_eval_s, rest_eval_fixed_s = _per_image(lambda b: last.trainable(f[:b]), dev, CAL_EVAL_BATCHES)

    # Training steps, through the engine's own Trainer.
    y = torch.arange(n) % 2
    last.train()
    trainer = adamw_cosine(_Rest(last), last.trainable_parameters(), lr=1e-3, steps=10, device=dev, size=fsize)
    last_step_s, last_step_fixed_s = _per_image(lambda b: trainer.step(f[:b], y[:b]), dev)

    head = nn.Linear(1000, 4).to(dev)
    vectors = torch.randn(CAL_TRAIN_BATCHES[-1], 1000, generator=gen)
    trainer = adamw_cosine(head, head.parameters(), lr=1e-2, steps=10, device=dev, size=1)
    fc_step_s = _timed(lambda: trainer.step(vectors, y[:len(vectors)]), dev)

    last = trainer = f = x = None  # freed before the whole network is built
    full = devices.prepare(TransferNet(build_model(arch, generator=gen), strategy("all"), 4, generator=gen), dev, size)
    full.train()
    augment = transform("train", size, decoded=True, generator=gen)
    trainer = adamw_cosine(full, full.trainable_parameters(), lr=3e-4, steps=10, device=dev, size=size)

    def full_step(b: int):
        trainer.step(torch.stack([augment(img) for img in u8[:b]]), y[:b])
    full_step_s, full_step_fixed_s = _per_image(full_step, dev)
    full = trainer = None
    return Calibration(arch=arch, image_size=size, device=str(dev), prepare_s=prepare_s, frozen_eval_s=frozen_eval_s,
                       frozen_eval_fixed_s=frozen_eval_fixed_s, rest_eval_s=rest_eval_s,
                       rest_eval_fixed_s=rest_eval_fixed_s, full_step_s=full_step_s, full_step_fixed_s=full_step_fixed_s,
                       last_step_s=last_step_s, last_step_fixed_s=last_step_fixed_s, fc_step_s=fc_step_s,
                       build_s=build_s, seconds=time.perf_counter() - t_start)


# ------------------------------------------------------------------ what a run does

def dataset_counts(cfg) -> tuple[int, int, int] | None:
    """(training images, validation images, classes) that ``finetune.run(cfg)`` will use, before the data set is
    loaded (``resnet.data``'s own figures: nothing is painted, read or downloaded); ``per_class`` caps the training
    images of each class. None where it cannot be known yet (an upload). The time and the memory estimates both
    count with it."""
    from .. import data
    ds = cfg.dataset
    if isinstance(ds, data.ImageSet):
        per = _per_class_counts(ds.train)
        n_val, classes = len(ds.val), len(ds.classes)
    else:
        name = str(ds).strip()
        if name == "synthetic":
            classes, n = TARGET_CLASSES, cfg.synthetic_images
            labels = [i % classes for i in range(n)]  # the painter cycles through the classes
            if cfg.val_fraction:  # split from the same pictures
                per, n_val = _split(labels, cfg.val_fraction or 0.25)
            else:  # a separate validation series of VAL_PER_CLASS pictures per class
                per, n_val = [labels.count(c) for c in range(classes)], VAL_PER_CLASS * classes
        elif name == "hymenoptera":
            per, n_val = [123, 121], 153  # ants, bees: hymenoptera_data/train (one file is not an image) and /val
            classes = 2
        elif name == "flowers":
            counts = list(data.FLOWERS["counts"].values())
            labels = [c for c, k in enumerate(counts) for _ in range(k)]
            per, n_val = _split(labels, cfg.val_fraction or data.FLOWERS["val_fraction"])
            classes = len(counts)
        else:
            return None
    cap = getattr(cfg, "per_class", None)
    n_train = sum(min(n, cap) if cap else n for n in per)
    return n_train, n_val, classes


def _read_images(cfg, n_train: int, n_val: int) -> int:
    """Pictures the run reads or paints before ``per_class`` keeps some: the built-in set paints them all."""
    if str(cfg.dataset).strip() == "synthetic" and getattr(cfg, "per_class", None):
        return cfg.synthetic_images + n_val
    return n_train + n_val


def needs_download(cfg) -> bool:
    """Is ``cfg``'s data set a named one (ants & bees, flowers) not yet downloaded here? Its download is not part
    of the estimate."""
    from .. import data
    name = str(cfg.dataset).strip()
    spec = {"hymenoptera": getattr(data, "HYMENOPTERA", None), "flowers": getattr(data, "FLOWERS", None)}.get(name)
    return bool(spec) and not (data.data_dir() / spec["folder"] / ".complete").is_file()


def _split(labels: list[int], val_fraction: float) -> tuple[list[int], int]:
    """Training images per class and validation images after ``stratified_split``'s arithmetic."""
    per, n_val = [], 0
    for c in sorted(set(labels)):
        n = labels.count(c)
        k = min(max(1, round(n * val_fraction)), n - 1)
        per.append(n - k)
        n_val += k
    return per, n_val


def _per_class_counts(part) -> list[int]:
    from ..data import targets
    labels = targets(part)
    return [labels.count(c) for c in sorted(set(labels))]


def _steps(n: int, batch: int) -> int:
    """Training steps in an epoch of ``n`` rows (a last batch of one is dropped, as the engine does)."""
    full, rest = divmod(n, batch)
    return max(1, full + (rest > 1))


def _passes(n: int, per_image: float, fixed: float) -> float:
    """Seconds to run ``n`` images through a network without gradients, ``EVAL_BATCH`` at a time."""
    return n * per_image + math.ceil(n / EVAL_BATCH) * fixed


def estimate(cfg, calibration: Calibration | None = None, *, counts: tuple[int, int, int] | None = None,
             measure: bool = True) -> RunEstimate | None:
    """Seconds ``finetune.run(cfg)`` should take here, part by part (``prepare``, ``cache``, ``weights``, then
    each strategy). ``calibration``: measured figures (default: ``calibrate`` for cfg's arch, size and device, or
    only a cached one if ``measure=False``). ``counts``: (train, val, classes) when known better than
    ``dataset_counts``. None when the data set's size cannot be known before it is loaded, or when ``measure`` is
    False and nothing is cached."""
    cfg = cfg.validated()
    counts = counts or dataset_counts(cfg)
    if counts is None:
        return None
    cal = calibration or (calibrate(cfg.arch, cfg.image_size, cfg.device) if measure
                          else cached_calibration(cfg.arch, cfg.image_size, cfg.device))
    if cal is None:
        return None
    n_train, n_val, classes = counts
    views = 1 + cfg.augmented_views
    rows = n_train * views + n_val
    names = list(cfg.strategies)
    parts: dict[str, float] = {"prepare": _read_images(cfg, n_train, n_val) * cal.prepare_s}
    # The run's own cache plan: over ``cache_mb``, ``last`` recomputes its frozen part instead of caching it.
    points, uncached, _ = cache_plan(cfg, cache_row_bytes(resnet_profile(cfg.arch, cfg.image_size)), rows)
    cached = {n for n in names if STRATEGIES[n].cache_point in points and n not in uncached}
    if points:
        parts["cache"] = _passes(rows, cal.frozen_eval_s, cal.frozen_eval_fixed_s) if points == {"conv4_x"} \
            else _passes(rows, cal.full_eval_s, cal.full_eval_fixed_s)
    if any(STRATEGIES[n].pretrained for n in names):
        parts["weights"] = cal.build_s  # reading a checkpoint and filling a network: about one build
    bn = min(BN_IMAGES, n_train)
    for name in names:
        point = STRATEGIES[name].cache_point
        on_cache = name in cached
        if point is None or not on_cache:  # the whole network sees images every step
            steps_s = n_train * cal.full_step_s + _steps(n_train, cfg.batch_size) * cal.full_step_fixed_s
            eval_s = _passes(n_val, cal.full_eval_s, cal.full_eval_fixed_s) + _passes(bn, cal.full_eval_s,
                                                                                       cal.full_eval_fixed_s)
        elif point == "conv4_x":
            rows_seen = n_train * views
            steps_s = rows_seen * cal.last_step_s + _steps(rows_seen, cfg.batch_size) * cal.last_step_fixed_s
            eval_s = _passes(n_val, cal.rest_eval_s, cal.rest_eval_fixed_s) + _passes(bn, cal.rest_eval_s,
                                                                                       cal.rest_eval_fixed_s)
        else:  # a new fc on cached vectors: a step costs about the same whatever the batch
            steps_s = _steps(n_train * views, cfg.batch_size) * cal.fc_step_s
            eval_s = math.ceil(n_val / EVAL_BATCH) * cal.fc_step_s / 2
        parts[name] = cal.build_s + cfg.epochs * (steps_s + eval_s)
    return RunEstimate(seconds=sum(parts.values()), parts=parts, n_train=n_train, n_val=n_val, classes=classes,
                       calibration=cal)


_PAINT: dict[tuple, float] = {}  # seconds per source picture, by (image size, drawing size, classes)


def _paint_s(cfg) -> float:
    """Seconds to paint one source picture at the run's drawing size and decode it: timed here on a few pictures,
    once per process and sizes, one measurement at a time like ``calibrate`` (timed in every request, ten visitors
    at once would each measure the others' painting too)."""
    from ..data.source import paint_source
    from ..preprocess import transform
    size = cfg.draw_size or cfg.image_size
    key = (cfg.image_size, size, cfg.num_classes)
    with _MEASURE_LOCK:
        if key not in _PAINT:
            decode = transform("decode", cfg.image_size)
            decode(paint_source(1, size, num_classes=cfg.num_classes)[0][0])  # the first picture pays one-off costs
            t0 = time.perf_counter()
            pics, _ = paint_source(PAINT_IMAGES, size, num_classes=cfg.num_classes, start=1)
            for p in pics:
                decode(p)
            _PAINT[key] = (time.perf_counter() - t0) / len(pics)
        return _PAINT[key]


def estimate_pretrain(cfg, calibration: Calibration | None = None, *, measure: bool = True,
                      paint_s: float | None = None) -> RunEstimate | None:
    """Seconds ``pretrain.pretrain`` should take here with ``cfg`` (a ``PretrainConfig``), part by part
    (``prepare``: painting, every epoch's pictures when ``fresh``; ``train``: every epoch's steps of the whole
    network, its precise BatchNorm and validation), from the same calibration as ``estimate``. ``paint_s``: seconds
    per painted picture (default: timed now). None when ``measure`` is False and nothing is cached."""
    cfg = cfg.validated()
    cal = calibration or (calibrate(cfg.arch, cfg.image_size, cfg.device) if measure
                          else cached_calibration(cfg.arch, cfg.image_size, cfg.device))
    if cal is None:
        return None
    n_train, n_val = cfg.per_class * cfg.num_classes, cfg.val_per_class * cfg.num_classes
    painted = n_val + n_train * (cfg.epochs if cfg.fresh else 1)
    steps_s = n_train * cal.full_step_s + _steps(n_train, cfg.batch_size) * cal.full_step_fixed_s
    eval_s = _passes(n_val, cal.full_eval_s, cal.full_eval_fixed_s) + _passes(min(BN_IMAGES, n_train), cal.full_eval_s,
                                                                               cal.full_eval_fixed_s)
    paint_s = _paint_s(cfg) if paint_s is None else paint_s
    parts = {"prepare": painted * paint_s, "train": cal.build_s + cfg.epochs * (steps_s + eval_s)}
    return RunEstimate(seconds=sum(parts.values()), parts=parts, n_train=n_train, n_val=n_val,
                       classes=cfg.num_classes, calibration=cal)
