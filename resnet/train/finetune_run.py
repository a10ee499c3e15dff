"""The fine-tune itself, after the budget admitted it: load and decode the data, fetch the starting weights, one
shared pass of the frozen network for the cached strategies, then each strategy through the engine
(``resnet.train.engine``). ``resnet.train.finetune.run`` is the entry point."""
from __future__ import annotations

import logging
import time
import zlib
from typing import Iterator

import torch
from torch import nn

from .. import budget
from .. import device as devices
from ..i18n import Text
from ..models.resnet import build_model, from_state
from ..models.transfer import STRATEGIES, TransferNet, frozen_features, prepare
from ..preprocess import transform
from ..profile import resnet_profile
from ..weights import WeightsUnavailable, find_source, load_pretrained, read_source
from .cache_plan import cache_plan, cache_row_bytes
from .engine import BN_IMAGES, EVAL_BATCH, Shard, Totals, adamw_cosine, evaluate, precise_bn, state_checksum
from .finetune_data import Cancelled, RunData, Split, decode, keep_per_class, load
from .results import Event, RunResult, StrategySummary, binomial_se

log = logging.getLogger("resnet.train")


class _Trainable(nn.Module):
    """The part of a ``TransferNet`` that trains, as a module: what a step (and DDP) calls on cached features."""

    def __init__(self, net: TransferNet):
        super().__init__()
        self.net = net

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.net.trainable(f)


def _backbone_state(cfg) -> tuple[dict, str, str, Text]:
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


def _strategy_seed(seed: int, name: str) -> int:
    """Each strategy's randomness depends on the seed and its name only, not on which others run."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % 2**31


def train_all(cfg, cancel, t_run: float, data: RunData, shard: Shard) -> Iterator[Event]:
    def stopped() -> bool:
        return cancel is not None and cancel.is_set()

    dev = devices.pick_device(cfg.device)
    try:
        ds = yield from load(cfg, stopped, t_run)
    except Cancelled:  # stopped while the data set was downloading: nothing trained, nothing to show but that
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
        ds, note = keep_per_class(ds, cfg.per_class, cfg.seed)
        notes += note
    budget.admit(cfg.with_counts(len(ds.train), len(ds.val)), device=dev)
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
        yield from decode(cfg, ds, data, result, stopped, t_run)
        if any(STRATEGIES[n].cache_point for n in cfg.strategies) and cfg.cache_features:
            yield from _cache(cfg, state, dev, data, result, stopped, t_run)
        for name in cfg.strategies:
            summary = yield from _train(cfg, name, state, pretrained, dev, data, result, stopped, shard)
            result.summaries.append(summary)
            yield Event("strategy_done", strategy=name, epoch=cfg.epochs, epochs=cfg.epochs,
                        val_acc=summary.final_val_acc, seconds=summary.seconds, summary=summary,
                        message=Text("engine.strategy_done", strategy=name, acc=summary.best_val_acc))
    except Cancelled:
        yield finish("cancelled")
        return
    yield finish("done")


WEIGHTS_WORD = {"imagenet": "engine.weights_pretrained", "builtin-source": "pretrain.weights_builtin",
                "random": "engine.weights_random"}


def _cache(cfg, state, dev, data: RunData, result: RunResult, stopped, t_run: float) -> Iterator[Event]:
    """One shared pass of the frozen pretrained network for every cached strategy."""
    t0 = time.perf_counter()
    net = devices.prepare(from_state(cfg.arch, state), dev, cfg.image_size).eval()
    # The augmented views, if any, draw from their own seeded generator (never torch's global RNG).
    gen = torch.Generator().manual_seed(cfg.seed)
    views = [transform("eval", cfg.image_size, decoded=True)]
    views += [transform("train", cfg.image_size, decoded=True, generator=gen)] * cfg.augmented_views
    n_train, n_val = len(data.train_u8), len(data.val_u8)
    row_bytes = cache_row_bytes(resnet_profile(cfg.arch, cfg.image_size))
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
                raise Cancelled
            x = devices.layout(torch.stack([view(img) for img in u8[i:i + EVAL_BATCH]]).to(dev), dev, cfg.image_size)
            with devices.autocast(dev, cfg.image_size):
                feats = frozen_features(net, x, points)
            for p, t in feats.items():
                out[p][split].append(t.float().contiguous())
            done += len(x)
            yield Event("prepare", step=done, steps=total, seconds=time.perf_counter() - t_run,
                        message=Text("engine.caching"))
    data.features = {p: Split(torch.cat(v["train"]), torch.cat(v["val"])) for p, v in out.items()}
    data.features_y = data.train_y.repeat(len(views))
    del net, out
    result.cache_seconds = time.perf_counter() - t0
    result.notes.append(Text("engine.note_cache_views", views=cfg.augmented_views) if cfg.augmented_views
                        else Text("engine.note_cache"))



def _train(cfg, name, state, pretrained, dev, data: RunData, result: RunResult, stopped,
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
    cached, x_train, y_train, x_val, features = _fed_with(cfg, name, data)
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
                raise Cancelled
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


def _fed_with(cfg, name: str, data: RunData) -> tuple:
    """(on cached features?, training inputs, their labels, validation inputs, those inputs in words)."""
    point = STRATEGIES[name].cache_point
    if point and cfg.cache_features and name not in data.uncached:
        feats = data.features[point]
        return True, feats.train, data.features_y, feats.val, (
            f"frozen {point.replace('_', ' ')} features, computed once with the eval transform"
            + (f" (+{cfg.augmented_views} augmented views)" if cfg.augmented_views else ""))
    return False, data.train_u8, data.train_y, data.val_x, \
        "augmented images every step" + (", frozen part recomputed every step" if point else "")


def _bn_inputs(cfg, x_train: torch.Tensor, cached: bool, data: RunData) -> torch.Tensor:
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
