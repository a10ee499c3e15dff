"""A fine-tune's data, prepared once: the data set loaded in a thread of its own (a download reports its progress
and Stop ends it), ``per_class`` applied, and every image decoded and resized once, damaged ones skipped. Every
large tensor of a run lives in one ``RunData``, so that closing the run frees them at once."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
from torch.utils.data import Subset

from .. import downloads
from ..data import DamagedImage, DatasetError, ImageSet, load_dataset, per_class_subset, targets
from ..i18n import Text, error
from ..preprocess import transform
from .results import Event, RunResult


@dataclass
class Split:
    train: torch.Tensor
    val: torch.Tensor


@dataclass
class RunData:
    """Every large tensor of a run, in one place, so that ``clear`` (closing the generator) frees them at once."""

    train_u8: torch.Tensor | None = None     # decoded, resized images (uint8)
    train_y: torch.Tensor | None = None
    val_u8: torch.Tensor | None = None
    val_y: torch.Tensor | None = None
    val_x: torch.Tensor | None = None        # validation images as the network sees them (eval transform)
    features: dict[str, Split] = field(default_factory=dict)  # cache point → frozen features, computed once
    features_y: torch.Tensor | None = None   # labels of the cached training rows (every view)
    uncached: set[str] = field(default_factory=set)  # cacheable strategies that recompute instead (too big)
    bn_x: torch.Tensor | None = None         # the precise-BN sample, as images

    def clear(self) -> None:
        self.__init__()


class Cancelled(Exception):
    pass


def load(cfg, stopped, t_run: float):
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
                raise Cancelled
            now = seen.get("now")
            if now is not None and now != shown:
                shown, (done, total) = now, now
                yield Event("prepare", step=done >> 20, steps=max(total, done) >> 20 or 1,
                            seconds=time.perf_counter() - t_run, message=Text("engine.downloading"))
    finally:  # Stop, or the run's generator closed: a download still going stops at its next chunk
        left.set()
    if isinstance(out.get("error"), downloads.DownloadCancelled) or stopped():
        raise Cancelled
    if "error" in out:
        raise out["error"]
    return out["ds"]


def keep_per_class(ds: ImageSet, per_class: int, seed: int) -> tuple[ImageSet, list[Text]]:
    """``ds`` with at most ``per_class`` training images per class (``data.per_class_subset``: seeded, stratified);
    the validation split is untouched. Returns it and the notes that say so."""
    train, short = per_class_subset(ds.train, targets(ds.train), per_class, seed)
    out = replace(ds, train=train)
    notes = [Text("pretrain.note_per_class", n=per_class, total=len(train), val=len(ds.val))]
    if short:
        names = ", ".join(ds.classes[c] for c in short[:5]) + (" …" if len(short) > 5 else "")
        notes.append(Text("pretrain.note_per_class_short", names=names, n=per_class))
    return out, notes


def decode(cfg, ds: ImageSet, data: RunData, result: RunResult, stopped, t_run: float) -> Iterator[Event]:
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
                raise Cancelled
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
