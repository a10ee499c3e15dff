"""Fine-tuning: several transfer strategies on one data set, as an iterator of progress events.

    for event in run(FinetuneConfig(dataset="synthetic", strategies=("all", "last", "head"))):
        ...                      # event.kind: start, prepare, step, epoch, strategy_done, done | cancelled
    result = event.result        # the last event carries a RunResult: summaries, history, trained models

This module prepares data and networks; training is ``resnet.train.engine`` (one step, one evaluation, precise
BatchNorm, a cosine learning rate), the engine torchrun (``run(…, shard=)``, see ``resnet.train.distributed``) and the
labs use too.

Why it is fast on a CPU: each image is decoded and resized once, and the frozen part of every strategy is
computed once per image (one shared pass for ``last``, ``replace`` and ``head``), not once per epoch. The
cached features use the eval transform (no augmentation; optionally ``augmented_views`` extra random views
per training image), which the result notes. ``all`` and ``scratch`` freeze nothing and train on augmented
images every epoch. After every epoch the BatchNorm layers that train get statistics re-estimated from the
current weights (``engine.precise_bn``), so that validation curves do not lag the training ones.

Text for people (``Event.message``, ``RunResult.notes``) is ``resnet.i18n.Text``, a key and its values: English as
``str`` (the command line, the JSON), in the visitor's language in the app.

Cancel-safe: the engine yields after every step, so ``generator.close()`` stops it at the next step; a
``threading.Event`` passed as ``cancel`` is checked every step too and ends the run with a ``cancelled`` event.
"""
from __future__ import annotations

import gc
import math
import os
import threading
import time
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

import logging

import torch
from torch import nn
from torch.utils.data import Subset

from .. import budget, config, downloads
from .. import device as devices
from ..data import DamagedImage, DatasetError, ImageSet, load_dataset, per_class_subset, targets
from ..errors import BadSetting
from ..i18n import Text, error
from ..models.resnet import ARCHS, build_model, from_state
from ..models.transfer import STRATEGIES, TransferNet, frozen_features, prepare, save_export
from ..preprocess import transform
from ..weights import WeightsUnavailable, downloads_allowed, find_source, load_pretrained, read_source
from .console import follow
from .engine import EVAL_BATCH, Shard, Totals, adamw_cosine, evaluate, precise_bn, state_checksum

# Documented limits of the numeric settings (the UI and the CLI both check these): (lowest, highest), inclusive.
LIMITS = {
    "epochs": (1, 100),
    "image_size": (32, 512),
    "batch_size": (1, 256),
    "lr": (0.0, 1.0),            # must also be finite and strictly above 0
    "augmented_views": (0, 8),
    "synthetic_images": (8, 20_000),
    "per_class": (1, 10_000),    # training images per class (None: all of them)
}
log = logging.getLogger("resnet.train")
BN_IMAGES = 64    # training images that re-estimate BatchNorm statistics after every epoch (engine.precise_bn)


def check_setting(name: str, value) -> None:
    """Raise ``BadSetting`` (a ``ValueError``) with one sentence when ``value`` is outside ``LIMITS[name]``."""
    lo, hi = LIMITS[name]
    if name == "lr":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not lo < value <= hi:
            raise error(BadSetting, "engine.bad_lr", lo=lo, hi=hi, value=repr(value))
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise error(BadSetting, "engine.bad_whole", name=Text(f"engine.setting_{name}"), lo=lo, hi=hi,
                    value=repr(value))


@dataclass
class FinetuneConfig:
    """Everything one run needs; ``validated()`` checks it against ``LIMITS``."""

    dataset: object = "synthetic"        # "synthetic" | "hymenoptera" | a folder or .zip path | an ImageSet
    arch: str = "resnet18"
    strategies: tuple = ("all", "last", "head")
    epochs: int = 5
    image_size: int = 128
    batch_size: int = 32
    lr: float | None = None              # None: each strategy's default (STRATEGIES[name].lr)
    weights: str | None = None           # an explicit pretrained checkpoint; else the cache / a download
    allow_download: bool = field(default_factory=downloads_allowed)  # the setting, unless found unreachable
    seed: int = 0
    cache_features: bool = True          # False: recompute the frozen part every step (for comparison)
    augmented_views: int = 0             # extra augmented views per training image in the feature cache
    cache_mb: int = 2048                 # above this, ``last`` recomputes its frozen part instead of caching it
    max_decoded_mb: int = field(default_factory=lambda: config.get("RESNET_MAX_DATASET_MB"))
    val_fraction: float | None = None    # where the dataset has no split (default 0.25 synthetic, 0.2 others)
    synthetic_images: int = 400
    per_class: int | None = None         # training images per class, a seeded stratified sample (None: all)
    device: str | None = None            # None: resnet.device.pick_device()
    keep_models: bool = True

    def validated(self) -> "FinetuneConfig":
        names = self.strategies.split(",") if isinstance(self.strategies, str) else list(self.strategies)
        names = [n.strip() for n in names if n and n.strip()]
        if not names:
            raise error(BadSetting, "engine.no_strategy", choices=", ".join(STRATEGIES))
        unknown = [n for n in names if n not in STRATEGIES]
        if unknown:
            raise error(BadSetting, "engine.unknown_strategy", name=unknown[0], choices=", ".join(STRATEGIES))
        if self.arch not in ARCHS:
            raise error(BadSetting, "engine.unknown_arch", name=self.arch, choices=", ".join(ARCHS))
        for name in ("epochs", "image_size", "batch_size", "augmented_views", "synthetic_images"):
            check_setting(name, getattr(self, name))
        if self.lr is not None:
            check_setting("lr", self.lr)
        if self.per_class is not None:
            check_setting("per_class", self.per_class)
        if self.batch_size == 1 and self.image_size < 64 and any(n in ("all", "last", "scratch") for n in names):
            raise error(BadSetting, "engine.batch_of_one")
        out = FinetuneConfig(**{f.name: getattr(self, f.name) for f in fields(self)})
        out.strategies = tuple(dict.fromkeys(names))
        return out

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["dataset"] = d["dataset"].name if isinstance(d["dataset"], ImageSet) else str(d["dataset"])
        d["strategies"] = list(d["strategies"]) if not isinstance(d["strategies"], str) else d["strategies"]
        return d


@dataclass
class StrategySummary:
    """How one strategy did."""

    strategy: str
    arch: str
    pretrained: bool               # started from pretrained weights, ImageNet or the built-in source (False: random)
    trainable_params: int
    total_params: int
    best_val_acc: float
    best_epoch: int
    final_val_acc: float
    final_val_loss: float
    final_train_acc: float
    seconds: float                 # training and validation of this strategy (the shared cache is separate)
    seconds_per_epoch: float
    images_per_s: float            # training samples per second (cached feature rows for cached strategies)
    epochs: int
    lr: float
    cached_features: bool
    features: str                  # what the trainable part was fed
    rank_checksums: list = field(default_factory=list)  # per process: a hash of weights and BN statistics
    source: str = "random"         # where its weights started: "imagenet", "builtin-source" or "random"
    val_count: int = 0             # validation images each accuracy is measured on
    best_val_acc_se: float = 0.0   # binomial standard error of best_val_acc: sqrt(p (1 - p) / val_count)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunResult:
    """Summaries, per-epoch history (``history[strategy][key]`` lists) and the trained models."""

    config: dict
    dataset: dict
    classes: list[str]
    device: str
    pretrained: bool               # the pretrained strategies started from pretrained weights (source != "random")
    weights: str                   # where the weights came from, or why there were none
    notes: list[Text]
    summaries: list[StrategySummary]
    history: dict
    seconds: float
    decode_seconds: float
    cache_seconds: float
    cancelled: bool = False
    world_size: int = 1            # processes that trained together (torchrun)
    backend: str | None = None     # their torch.distributed backend
    models: dict = field(default_factory=dict, repr=False)  # strategy → TransferNet (CPU), not in to_dict
    source: str = "random"         # what the pretrained strategies started from: imagenet | builtin-source | random
    chance: float = 0.0            # the accuracy of guessing: 1 / classes

    def summary(self, strategy: str) -> StrategySummary:
        return next(s for s in self.summaries if s.strategy == strategy)

    def to_dict(self) -> dict:
        """The JSON summary: the same schema for one process and for torchrun."""
        return {"config": self.config, "dataset": self.dataset, "classes": list(self.classes), "device": self.device,
                "pretrained": self.pretrained, "weights": self.weights, "notes": [str(n) for n in self.notes],
                "strategies": [s.to_dict() for s in self.summaries], "history": self.history,
                "seconds": self.seconds, "decode_seconds": self.decode_seconds, "cache_seconds": self.cache_seconds,
                "cancelled": self.cancelled, "world_size": self.world_size, "backend": self.backend,
                "source": self.source, "chance": self.chance, "verdict": verdict(self.summaries).to_dict()}

    def export(self, strategy: str, path: str | os.PathLike) -> Path:
        """Save ``strategy``'s model as a plain ResNet state_dict file (see ``transfer.save_export``)."""
        if strategy not in self.models:
            raise ValueError(f"No trained model for strategy '{strategy}' in this run.")
        return save_export(self.models[strategy], path, classes=self.classes, strategy=strategy,
                           image_size=self.config["image_size"], pretrained=self.summary(strategy).pretrained)


@dataclass
class Event:
    """One progress report. ``kind``: start | prepare | step | epoch | strategy_done | done | cancelled."""

    kind: str
    strategy: str | None = None
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    train_loss: float | None = None
    train_acc: float | None = None
    val_loss: float | None = None
    val_acc: float | None = None
    seconds: float = 0.0              # since this strategy (or, outside one, the run) started
    images_per_s: float | None = None
    message: Text | None = None       # for people; ``str()`` is English
    summary: StrategySummary | None = None   # on strategy_done
    result: RunResult | None = None          # on done and cancelled

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("summary", "result")}
        d["message"] = str(self.message or "")
        d["summary"] = self.summary.to_dict() if self.summary else None
        d["result"] = self.result.to_dict() if self.result else None
        return d


@dataclass
class _Split:
    train: torch.Tensor
    val: torch.Tensor


@dataclass
class _Data:
    """Every large tensor of a run, in one place, so that ``clear`` (closing the generator) frees them at once."""

    train_u8: torch.Tensor | None = None     # decoded, resized images (uint8)
    train_y: torch.Tensor | None = None
    val_u8: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    val_x: torch.Tensor | None = None        # validation images as the network sees them (eval transform)
    features: dict[str, _Split] = field(default_factory=dict)  # cache point → frozen features, computed once
    features_y: torch.Tensor | None = None   # labels of the cached training rows (every view)
    uncached: set[str] = field(default_factory=set)  # cacheable strategies that recompute instead (too big)
    bn_x: torch.Tensor | None = None         # the precise-BN sample, as images

    def clear(self) -> None:
        self.__init__()


class _Cancelled(Exception):
    pass


class _Trainable(nn.Module):
    """The part of a ``TransferNet`` that trains, as a module: what a step (and DDP) calls on cached features."""

    def __init__(self, net: TransferNet):
        super().__init__()
        self.net = net

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.trainable(f)


def _backbone_state(cfg: FinetuneConfig) -> tuple[dict, str, str, Text]:
    """The pretrained strategies' starting weights: (state_dict, source, where they came from, a note saying so).

    ImageNet weights if they can be had (``source="imagenet"``); else the backbone ``python -m resnet pretrain``
    stored for this arch (``"builtin-source"``: its fc has the source set's classes, so ``head`` stacks its new
    layer on those logits); else a seeded random 1000-class network (``"random"``)."""
    try:
        model = load_pretrained(cfg.arch, path=cfg.weights, download=cfg.allow_download)
        where = str(getattr(model, "weights_source", cfg.weights or "pretrained"))
        return model.state_dict(), "imagenet", where, Text("pretrain.note_imagenet",
                                                           file=getattr(model, "weights_source", where))
    except WeightsUnavailable as e:
        if cfg.weights:
            raise
        why = str(e)
    path = find_source(cfg.arch)
    if path is not None:
        try:
            state, meta = read_source(path)
            return state, "builtin-source", f"{path.name} (built-in source, hash checked); {why}", Text(
                "pretrain.note_builtin", file=path.name, classes=len(meta.get("classes") or []) or "?",
                size=meta.get("image_size", "?"), acc=float(meta.get("val_acc", 0.0)))
        except WeightsUnavailable as e:  # damaged since it was found: say so in the log, train from random
            log.warning("skipping %s", getattr(e, "detail", e))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    return build_model(cfg.arch, generator=gen).state_dict(), "random", why, Text("engine.note_random")


@dataclass
class Verdict:
    """Which strategy is best, only when it is ahead by more than the noise; otherwise which are tied.

    ``margin``: the leader's best validation accuracy minus the runner-up's. ``noise``: two standard errors of
    that difference (each accuracy a binomial proportion on its validation images). ``best`` is the leader when
    ``margin > noise`` (None otherwise); ``tied``: the strategies within the noise of the leader, leader first
    (empty when there is a best one). A single strategy is best by default (margin and noise 0)."""

    best: str | None
    tied: list
    margin: float
    noise: float

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> Text | None:
        """The sentence for people (``pretrain.verdict_best`` / ``pretrain.verdict_tied``), None for fewer than two."""
        if self.best is not None:
            return Text("pretrain.verdict_best", best=self.best, margin=self.margin, noise=self.noise) \
                if self.margin or self.noise else None
        return Text("pretrain.verdict_tied", names=", ".join(self.tied), noise=self.noise)


def binomial_se(p: float, n: int) -> float:
    """The standard error of an accuracy ``p`` measured on ``n`` images."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else 0.0


def verdict(summaries, z: float = 2.0) -> Verdict:
    """``Verdict`` of ``StrategySummary``s (or dicts of theirs): is the leader ahead of the runner-up by more than
    ``z`` standard errors of the difference of their best validation accuracies?"""
    rows = [(s["strategy"], s["best_val_acc"], s.get("best_val_acc_se", 0.0)) if isinstance(s, dict)
            else (s.strategy, s.best_val_acc, s.best_val_acc_se) for s in summaries]
    if not rows:
        return Verdict(None, [], 0.0, 0.0)
    rows.sort(key=lambda r: -r[1])
    lead = rows[0]
    if len(rows) == 1:
        return Verdict(lead[0], [], 0.0, 0.0)

    def noise(r) -> float:
        return z * math.sqrt(lead[2] ** 2 + r[2] ** 2)

    second = rows[1]
    margin = lead[1] - second[1]
    if margin > noise(second):
        return Verdict(lead[0], [], margin, noise(second))
    return Verdict(None, [r[0] for r in rows if lead[1] - r[1] <= noise(r)], margin, noise(second))


def _strategy_seed(seed: int, name: str) -> int:
    """Each strategy's randomness depends on the seed and its name only, not on which others run."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31


def run(config: FinetuneConfig, *, cancel: threading.Event | None = None,
        shard: Shard = Shard()) -> Iterator[Event]:
    """Train each of ``config.strategies`` in turn, yielding events; the last one carries the ``RunResult``.
    ``shard``: this process's part under torchrun (``resnet.train.distributed``); every rank runs this same code."""
    cfg = config.validated()
    budget.check_finetune(cfg)  # before any data or weights are loaded (again below, once the data set is listed)
    t_run = time.perf_counter()
    data = _Data()
    try:
        yield from _run(cfg, cancel, t_run, data, shard)
    finally:
        data.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _load(cfg: FinetuneConfig, stopped, t_run: float):
    """``load_dataset`` in a thread of its own, so that a download (ants & bees, flowers: minutes on a slow line)
    reports its progress as "prepare" events (in MiB) and Stop ends it; returns the ImageSet."""
    out, seen, left = {}, {}, threading.Event()  # left: nobody waits for the data set any more

    def load():
        try:
            with downloads.watched(lambda done, total: seen.update(now=(done, total)),
                                   lambda: stopped() or left.is_set()):
                out["ds"] = load_dataset(cfg.dataset, val_fraction=cfg.val_fraction, seed=cfg.seed,
                                         synthetic_images=cfg.synthetic_images, image_size=cfg.image_size)
        except BaseException as e:  # noqa: BLE001 - raised again below, in the run's own thread
            out["error"] = e

    worker = threading.Thread(target=load, name="load-dataset", daemon=True)
    worker.start()
    shown = None
    try:
        while worker.is_alive():
            worker.join(0.25)
            if stopped():  # the thread notices too (a download stops within a chunk); nobody waits for it
                raise _Cancelled
            now = seen.get("now")
            if now is not None and now != shown:
                shown, (done, total) = now, now
                yield Event("prepare", step=done >> 20, steps=max(total, done) >> 20 or 1,
                            seconds=time.perf_counter() - t_run, message=Text("engine.downloading"))
    finally:  # Stop, or the run's generator closed: a download still going stops at its next chunk
        left.set()
    if isinstance(out.get("error"), downloads.DownloadCancelled) or stopped():
        raise _Cancelled
    if "error" in out:
        raise out["error"]
    return out["ds"]


def _run(cfg: FinetuneConfig, cancel, t_run: float, data: _Data, shard: Shard) -> Iterator[Event]:
    def stopped() -> bool:
        return cancel is not None and cancel.is_set()

    dev = devices.pick_device(cfg.device)
    try:
        ds = yield from _load(cfg, stopped, t_run)
    except _Cancelled:  # stopped while the data set was downloading: nothing trained, nothing to show but that
        seconds = time.perf_counter() - t_run
        yield Event("cancelled", seconds=seconds, message=Text("engine.cancelled"), result=RunResult(
            config=cfg.to_dict(), dataset={}, classes=[], device=devices.describe(dev, cfg.image_size),
            pretrained=False, weights="", notes=[], summaries=[], history={}, seconds=seconds, decode_seconds=0.0,
            cache_seconds=0.0, world_size=shard.world, backend=shard.backend, cancelled=True))
        return
    # Every image is decoded once and kept in memory: refuse before decoding what would not fit (every copy of the
    # decoded images and cached features counted), so that a tiny zip of many small files asked for at a large
    # size cannot take the server's memory, and a large data set cannot take its time.
    notes = [n if isinstance(n, Text) else Text("engine.note_dataset", text=n) for n in ds.notes]
    if cfg.per_class is not None:
        ds, note = _keep_per_class(ds, cfg.per_class, cfg.seed)
        notes += note
    budget.check_finetune(cfg, n_train=len(ds.train), n_val=len(ds.val), device=dev)
    classes = list(ds.classes)
    if any(STRATEGIES[n].pretrained for n in cfg.strategies):
        state, source, weights_note, note = _backbone_state(cfg)
        notes.append(note)
        if source == "random":
            notes.append(Text("pretrain.note_random_hint"))
    else:
        state, source, weights_note = None, "random", "not needed: training from scratch"
    pretrained = source != "random"
    history = {n: {"epoch": [], "train_loss": [], "train_acc": [], "val_loss": [], "val_acc": [], "seconds": []}
               for n in cfg.strategies}
    result = RunResult(config=cfg.to_dict(), dataset=ds.to_dict(), classes=classes,
                       device=devices.describe(dev, cfg.image_size), pretrained=pretrained, weights=weights_note,
                       notes=notes, summaries=[], history=history, seconds=0.0, decode_seconds=0.0, cache_seconds=0.0,
                       world_size=shard.world, backend=shard.backend, source=source, chance=1 / len(classes))

    def finish(kind: str) -> Event:
        result.seconds = time.perf_counter() - t_run
        result.cancelled = kind == "cancelled"
        return Event(kind, seconds=result.seconds, result=result, message=Text(f"engine.{kind}"))

    yield Event("start", message=Text("engine.start", dataset=ds.name, n_train=len(ds.train), n_val=len(ds.val),
                                      classes=len(classes), arch=cfg.arch,
                                      weights=Text(WEIGHTS_WORD[source])))
    try:
        yield from _decode(cfg, ds, data, result, stopped, t_run)
        if any(STRATEGIES[n].cache_point for n in cfg.strategies) and cfg.cache_features:
            yield from _cache(cfg, state, dev, data, result, stopped, t_run)
        for name in cfg.strategies:
            summary = yield from _train(cfg, name, state, pretrained, dev, data, result, stopped, shard)
            result.summaries.append(summary)
            yield Event("strategy_done", strategy=name, epoch=cfg.epochs, epochs=cfg.epochs,
                        val_acc=summary.final_val_acc, seconds=summary.seconds, summary=summary,
                        message=Text("engine.strategy_done", strategy=name, acc=summary.best_val_acc))
    except _Cancelled:
        yield finish("cancelled")
        return
    yield finish("done")


WEIGHTS_WORD = {"imagenet": "engine.weights_pretrained", "builtin-source": "pretrain.weights_builtin",
                "random": "engine.weights_random"}


def _keep_per_class(ds: ImageSet, per_class: int, seed: int) -> tuple[ImageSet, list[Text]]:
    """``ds`` with at most ``per_class`` training images per class (``data.per_class_subset``: seeded, stratified);
    the validation split is untouched. Returns it and the notes that say so."""
    from dataclasses import replace
    train, short = per_class_subset(ds.train, targets(ds.train), per_class, seed)
    out = replace(ds, train=train)
    notes = [Text("pretrain.note_per_class", n=per_class, total=len(train), val=len(ds.val))]
    if short:
        names = ", ".join(ds.classes[c] for c in short[:5]) + (" …" if len(short) > 5 else "")
        notes.append(Text("pretrain.note_per_class_short", names=names, n=per_class))
    return out, notes


def _decode(cfg, ds: ImageSet, data: _Data, result: RunResult, stopped, t_run: float) -> Iterator[Event]:
    """Decode and resize every image once; skip (and name) damaged ones."""
    t0 = time.perf_counter()
    decode = transform("decode", cfg.image_size)
    damaged: list[DamagedImage] = []
    decoded = {}
    for split in ("train", "val"):
        part, labels = getattr(ds, split), targets(getattr(ds, split))
        images, kept = [], []
        for i in range(len(part)):
            if stopped():
                raise _Cancelled
            try:
                images.append(decode(part[i][0]))
                kept.append(labels[i])
            except DamagedImage as e:  # its header looked fine; skip it and say so, as for other bad files
                damaged.append(e)
            if (i + 1) % 32 == 0 or i + 1 == len(part):
                yield Event("prepare", step=i + 1, steps=len(part), seconds=time.perf_counter() - t_run,
                            message=Text(f"engine.decoding_{split}"))
        decoded[split] = (images, kept, labels)
    if damaged:
        _refill_splits(decoded, result.classes, damaged, split_given=not _split_by_us(ds))
        names = ", ".join(e.name for e in damaged[:3]) + (" …" if len(damaged) > 3 else "")
        result.notes.append(Text("engine.note_damaged", count=len(damaged), names=names, reason=damaged[0].reason))
        result.dataset.update(damaged=len(damaged), n_train=len(decoded["train"][1]), n_val=len(decoded["val"][1]))
    for split, (images, kept, _) in decoded.items():
        setattr(data, split + "_u8", torch.stack(images))
        setattr(data, split + "_y", torch.tensor(kept, dtype=torch.long))
        images.clear()  # the stack is the one copy from here on
    del decoded
    ev = transform("eval", cfg.image_size, decoded=True)
    data.val_x = torch.stack([ev(img) for img in data.val_u8])
    result.decode_seconds = time.perf_counter() - t0


def _split_by_us(ds: ImageSet) -> bool:
    """Were train and val drawn from one pool by ``stratified_split`` (rather than given as folders)? A split of
    ours stays ours when ``per_class`` keeps a sample of its training side (a ``Subset`` of the training ``Subset``),
    so both sides are followed down to the pool they were drawn from."""
    def pool(part):
        while isinstance(part, Subset):
            part = part.dataset
        return part
    return isinstance(ds.train, Subset) and isinstance(ds.val, Subset) and pool(ds.train) is pool(ds.val)


def _refill_splits(decoded: dict, classes: list[str], damaged: list, *, split_given: bool) -> None:
    """After skipping damaged images, a class may have lost every image of one split. Where we made the split,
    one image moves over from the other side (which must keep one); a split given in folders is kept as it
    was, and the message says which class ran out."""
    for split, other in (("val", "train"), ("train", "val")):
        images, kept, before = decoded[split]
        o_images, o_kept, _ = decoded[other]
        for k, name in enumerate(classes):
            if k not in before or k in kept:
                continue
            if split_given or o_kept.count(k) < 2:
                raise error(DatasetError, "engine.no_images_left", count=len(damaged), name=name,
                            split=Text(f"engine.split_{split}"), first=damaged[0].name)
            j = len(o_kept) - 1 - o_kept[::-1].index(k)
            images.append(o_images.pop(j))
            kept.append(o_kept.pop(j))




def _cache(cfg, state, dev, data: _Data, result: RunResult, stopped, t_run: float) -> Iterator[Event]:
    """One shared pass of the frozen pretrained network for every cached strategy."""
    t0 = time.perf_counter()
    net = devices.prepare(from_state(cfg.arch, state), dev, cfg.image_size).eval()
    # The augmented views, if any, draw from their own seeded generator (never torch's global RNG).
    gen = torch.Generator().manual_seed(cfg.seed)
    views = [transform("eval", cfg.image_size, decoded=True)]
    views += [transform("train", cfg.image_size, decoded=True, generator=gen)] * cfg.augmented_views
    n_train, n_val = len(data.train_u8), len(data.val_u8)
    row_bytes = budget.cache_row_bytes(budget.resnet_profile(cfg.arch, cfg.image_size))
    points, data.uncached, total_mb = cache_plan(cfg, row_bytes, n_train * len(views) + n_val)
    if data.uncached:
        result.notes.append(Text("engine.note_cache_over", mb=total_mb, budget=cfg.cache_mb))
    if not points:
        return
    jobs = [("train", view) for view in views] + [("val", views[0])]
    total, done = len(views) * n_train + n_val, 0
    out = {p: {"train": [], "val": []} for p in points}
    for split, view in jobs:
        u8 = data.train_u8 if split == "train" else data.val_u8
        for i in range(0, len(u8), EVAL_BATCH):
            if stopped():
                raise _Cancelled
            x = devices.layout(torch.stack([view(img) for img in u8[i:i + EVAL_BATCH]]).to(dev), dev, cfg.image_size)
            with devices.autocast(dev, cfg.image_size):
                feats = frozen_features(net, x, points)
            for p, t in feats.items():
                out[p][split].append(t.float().contiguous())
            done += len(x)
            yield Event("prepare", step=done, steps=total, seconds=time.perf_counter() - t_run,
                        message=Text("engine.caching"))
    data.features = {p: _Split(torch.cat(v["train"]), torch.cat(v["val"])) for p, v in out.items()}
    data.features_y = data.train_y.repeat(len(views))
    del net, out
    result.cache_seconds = time.perf_counter() - t0
    result.notes.append(Text("engine.note_cache_views", views=cfg.augmented_views) if cfg.augmented_views
                        else Text("engine.note_cache"))


def cache_plan(cfg: FinetuneConfig, row_bytes: dict, rows: int) -> tuple[set, set, float]:
    """(points the shared pass computes, strategies that recompute their frozen part instead, MiB of the cache
    as asked): ``last`` caches conv4_x's whole feature map, which can be large at big image sizes, so over
    ``cfg.cache_mb`` it recomputes instead. ``resnet.budget`` counts memory with this same plan."""
    points = {STRATEGIES[n].cache_point for n in cfg.strategies if STRATEGIES[n].cache_point and cfg.cache_features}
    total_mb = sum(row_bytes[p] for p in points) * rows / 2**20
    last = STRATEGIES["last"].cache_point
    if last in points and total_mb > cfg.cache_mb:
        return points - {last}, {"last"}, total_mb
    return points, set(), total_mb



def _train(cfg, name, state, pretrained, dev, data: _Data, result: RunResult, stopped,
           shard: Shard) -> Iterator[Event]:
    """One strategy, epoch by epoch, through the engine; returns its ``StrategySummary``."""
    s = STRATEGIES[name]
    seed = _strategy_seed(cfg.seed, name)
    # One generator for the new layers, then for augmentation, never torch's global RNG: two visitors running the
    # same seeded job at once each get what one alone gets. Under torchrun each rank augments its own images.
    gen = torch.Generator().manual_seed(seed)
    net = prepare(name, cfg.arch, len(result.classes), backbone_state=state, generator=gen)
    if shard.rank:
        gen.manual_seed(seed + shard.rank)
    trainable, total = net.param_counts()
    lr = cfg.lr or s.lr
    cached = bool(s.cache_point) and cfg.cache_features and name not in data.uncached
    if cached:
        feats = data.features[s.cache_point]
        x_train, y_train, x_val = feats.train, data.features_y, feats.val
        features = (f"frozen {s.cache_point.replace('_', ' ')} features, computed once with the eval transform"
                    + (f" (+{cfg.augmented_views} augmented views)" if cfg.augmented_views else ""))
    else:
        x_train, y_train, x_val = data.train_u8, data.train_y, data.val_x
        features = "augmented images every step" + (", frozen part recomputed every step" if s.cache_point else "")
    augment = transform("train", cfg.image_size, decoded=True, generator=gen)
    bn_x = _bn_inputs(cfg, x_train, cached, data)
    # What the trained part sees, images or cached features (a small map or a vector), sets precision and layout.
    size = (x_train.shape[-1] if x_train.dim() == 4 else 1) if cached else cfg.image_size
    net = devices.prepare(net, dev, size)
    model = _Trainable(net) if cached else net
    steps = len(shard.batches(len(x_train), cfg.batch_size, seed=seed, epoch=0))
    trainer = adamw_cosine(shard.wrap(model, dev), net.trainable_parameters(), lr=lr, steps=cfg.epochs * steps,
                           device=dev, size=size)
    hist = result.history[name]
    t_start, train_seconds, seen_total = time.perf_counter(), 0.0, 0
    best, best_epoch = -1.0, 0
    for epoch in range(1, cfg.epochs + 1):
        trainer.model.train()
        t_epoch, train = time.perf_counter(), Totals()
        for step, idx in enumerate(shard.batches(len(x_train), cfg.batch_size, seed=seed, epoch=epoch), 1):
            if stopped():
                raise _Cancelled
            x = x_train[idx] if cached else torch.stack([augment(x_train[i]) for i in idx.tolist()])
            loss, logits, y = trainer.step(x, y_train[idx])
            train.add(loss * len(y), logits, y)
            now = time.perf_counter()
            yield Event("step", strategy=name, epoch=epoch, epochs=cfg.epochs, step=step, steps=steps,
                        train_loss=train.mean_loss, train_acc=train.acc, seconds=now - t_start,
                        images_per_s=train.seen / max(now - t_epoch, 1e-9))
        train_seconds += time.perf_counter() - t_epoch
        seen_total += train.seen
        precise_bn(model, bn_x, dev, size)
        shard.share_buffers(net)
        train, val = train.across(shard, dev), evaluate(model, x_val, data.val_y, dev, size, shard)
        if val.acc > best:
            best, best_epoch = val.acc, epoch
        elapsed = time.perf_counter() - t_start
        for key, v in zip(hist, (epoch, train.mean_loss, train.acc, val.mean_loss, val.acc, elapsed)):
            hist[key].append(v)
        yield Event("epoch", strategy=name, epoch=epoch, epochs=cfg.epochs, step=steps, steps=steps,
                    train_loss=train.mean_loss, train_acc=train.acc, val_loss=val.mean_loss, val_acc=val.acc,
                    seconds=elapsed, images_per_s=train.seen / max(time.perf_counter() - t_epoch, 1e-9))
    elapsed = time.perf_counter() - t_start
    checksums = shard.gather(state_checksum(net))
    if cfg.keep_models:
        result.models[name] = net.cpu().eval()
    n_val = len(data.val_y)
    return StrategySummary(
        source=result.source if s.pretrained else "random", val_count=n_val, best_val_acc_se=binomial_se(best, n_val),
        strategy=name, arch=cfg.arch, pretrained=pretrained and s.pretrained, trainable_params=trainable,
        total_params=total, best_val_acc=best, best_epoch=best_epoch, final_val_acc=hist["val_acc"][-1],
        final_val_loss=hist["val_loss"][-1], final_train_acc=hist["train_acc"][-1], seconds=elapsed,
        seconds_per_epoch=elapsed / cfg.epochs, images_per_s=seen_total / max(train_seconds, 1e-9),
        epochs=cfg.epochs, lr=lr, cached_features=cached, features=features, rank_checksums=checksums)


def _bn_inputs(cfg, x_train: torch.Tensor, cached: bool, data: _Data) -> torch.Tensor:
    """A fixed, seeded sample of up to ``BN_IMAGES`` training inputs as validation sees them (eval transform),
    the same on every rank, for ``precise_bn``; class-balanced on average where the split is sorted by class."""
    pick = torch.randperm(len(data.train_u8), generator=torch.Generator().manual_seed(cfg.seed))[:BN_IMAGES]
    if cached:
        return x_train[pick]  # the first rows of a feature cache are the eval-transform view
    if data.bn_x is None:
        ev = transform("eval", cfg.image_size, decoded=True)
        data.bn_x = torch.stack([ev(data.train_u8[i]) for i in pick.tolist()])
    return data.bn_x


# ---------------------------------------------------------------- command line

def config_from_args(args, device: str | None = None) -> FinetuneConfig:
    """The command line's run: its preset's values (``estimate.PRESETS``, the Fine-tune tab's own: the same command
    gives the page's result), each replaced by the flag's where one was given."""
    from .estimate import DEFAULT_PRESET, PRESETS
    preset = PRESETS[getattr(args, "preset", None) or DEFAULT_PRESET]

    def given(name: str):
        value = getattr(args, name, None)
        return preset[name] if value is None else value
    per_class = given("per_class")
    return FinetuneConfig(dataset=args.dataset, arch=given("arch"), strategies=given("strategies"),
                          epochs=given("epochs"), image_size=given("image_size"), batch_size=given("batch_size"),
                          lr=given("lr") or None, weights=args.weights, seed=args.seed,  # lr 0: each strategy's own
                          per_class=None if per_class == "all" else per_class, device=device).validated()


def format_summary(result: RunResult) -> str:
    rows = [f"{'strategy':<9} {'weights':<15} {'trainable / total params':>26} {'best val ± SE':>15} {'final val':>10} "
            f"{'seconds':>8} {'s/epoch':>8}  fed with"]
    for s in result.summaries:
        best = f"{s.best_val_acc:.1%} ± {s.best_val_acc_se:.1%}"
        rows.append(f"{s.strategy:<9} {s.source:<15} "
                    f"{s.trainable_params:>12,} / {s.total_params:>11,} {best:>15} {s.final_val_acc:>10.1%} "
                    f"{s.seconds:>8.1f} {s.seconds_per_epoch:>8.2f}  {s.features}")
    if result.summaries:
        n_val = result.summaries[0].val_count
        rows.append(f"validation: {n_val} images, chance {result.chance:.1%}")
        said = verdict(result.summaries).text()
        if said is not None:
            rows.append(str(said))
    ranks = f", {result.world_size} processes ({result.backend})" if result.world_size > 1 else ""
    rows.append(f"decode {result.decode_seconds:.1f} s, shared feature cache {result.cache_seconds:.1f} s, "
                f"total {result.seconds:.1f} s on {result.device}{ranks}")
    rows += [f"note: {n}" for n in result.notes]
    return "\n".join(rows)


def run_cli(args, *, shard: Shard = Shard(), device: str | None = None) -> int:
    """``python -m resnet finetune …`` (and each torchrun process): tqdm progress, a summary table, optional --json
    and --save-dir. Only the lead process (rank 0) prints and writes."""
    import json

    cfg = config_from_args(args, device)
    lead = shard.rank == 0
    try:
        final = follow(run(cfg, shard=shard), lead=lead)
    except KeyboardInterrupt:
        return 130
    if not lead:
        return 0
    print(format_summary(final))
    if getattr(args, "save_dir", None):
        for name in final.models:
            path = final.export(name, Path(args.save_dir) / f"{cfg.arch}-{name}.pth")
            print(f"saved {name}: {path}")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(final.to_dict(), indent=2, ensure_ascii=False))
    return 0
