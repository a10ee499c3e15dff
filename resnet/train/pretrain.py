"""Pretraining on the built-in source set: a stand-in for ImageNet weights when they cannot be had.

    for event in pretrain("resnet18", image_size=64, epochs=6):
        ...                       # event.kind: start, prepare, step, epoch, done | cancelled
    event.result.path             # <weights folder>/resnet18-source-<sha256 prefix>.pth

The arch learns the ``resnet.data.source`` glyphs (many classes, none of them the target's shapes) through the one
engine (``resnet.train.engine``: ``Trainer.step``, AdamW with a cosine rate, precise BatchNorm, ``evaluate``), and
its weights (with the source classes' fc) are stored beside the other weights, hash-named. From then on, when
ImageNet weights are unavailable, ``resnet.train.finetune`` starts the pretrained strategies from it (their
summaries say ``source="builtin-source"``). Events are ``resnet.train.results.Event``s, so a progress bar or a
page shows both the same way. Cancel-safe like ``finetune.run``: ``cancel`` (a ``threading.Event``) is checked
every step, and closing the generator stops it; nothing is stored unless it finishes.
"""
from __future__ import annotations

import dataclasses
import math
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

import torch

from .. import budget
from .. import device as devices
from ..data.source import EASY, SOURCE_CLASSES, class_names, paint_source
from ..errors import BadSetting, BudgetExceeded
from ..i18n import Text, error
from ..job import Cost, Job
from ..keys import file_identity, job_key
from ..models.resnet import ARCHS, build_model
from ..preprocess import transform
from ..weights import save_source
from .console import follow
from .engine import BN_IMAGES, EVAL_BATCH, Shard, Totals, adamw_cosine, evaluate, precise_bn
from .finetune import FinetuneConfig
from .finetune_cost import finetune_cost
from .finetune_offers import epochs_text
from .results import Event

# The recipe (bench/source_sweep.py compared recipes, bench/transfer_bench.py measures this one): at 48 px, ten
# epochs of 24 classes × 250 pictures, new pictures every epoch (60,000 different ones seen), AdamW 2e-3 reached
# after a warm-up of 5 % of the steps. Without the warm-up, learning stayed near chance for several epochs and took
# off at a point that varied from run to run, and so did the transfer margins (+7 to +24 points); with it, last and
# head beat scratch at 10 images per class by +24 to +35 points over 4 pretraining seeds × 2 fine-tune seeds on a
# GPU, and by +27 to +33 on 2 CPU cores (one pretraining, 2 fine-tune seeds; 204 s of pretraining).
DEFAULTS = {"image_size": 48, "epochs": 10, "per_class": 250, "batch_size": 32, "lr": 2e-3, "warmup": 0.05}
LIMITS = {"image_size": (32, 224), "epochs": (1, 50), "per_class": (2, 1000), "batch_size": (2, 256),
          "val_per_class": (1, 100)}


@dataclass
class PretrainConfig(Job):
    """One pretraining on the source set, as a job (``resnet.job``)."""

    kind = "pretrain"

    arch: str = "resnet18"
    image_size: int = DEFAULTS["image_size"]
    epochs: int = DEFAULTS["epochs"]
    per_class: int = DEFAULTS["per_class"]        # training pictures per source class
    val_per_class: int = 10
    batch_size: int = DEFAULTS["batch_size"]
    lr: float = DEFAULTS["lr"]
    seed: int = 0
    num_classes: int = SOURCE_CLASSES
    augment: bool = False                         # random crops and flips on top of the drawn variety
    fresh: bool = True                            # new pictures every epoch (the series is endless): no memorising
    draw_size: int | None = None                  # drawn at this size, then decoded to image_size (the target's way)
    ramp: int = 0                                 # epochs over which clutter and noise rise from none to full
    warmup: float = DEFAULTS["warmup"]            # share of the steps over which the rate rises linearly from 0
    device: str | None = None
    folder: str | None = None                     # where to store it (default: resnet.weights.source_folder())

    def validated(self) -> "PretrainConfig":
        if self.arch not in ARCHS:
            raise error(BadSetting, "engine.unknown_arch", name=self.arch, choices=", ".join(ARCHS))
        for name, (lo, hi) in LIMITS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise error(BadSetting, "engine.bad_whole", name=Text(f"pretrain.setting_{name}"), lo=lo, hi=hi,
                            value=repr(value))
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) \
                or not 0 < self.lr <= 1:
            raise error(BadSetting, "engine.bad_lr", lo=0, hi=1, value=repr(self.lr))
        for name, (lo, hi), value in (("draw_size", LIMITS["image_size"], self.draw_size or self.image_size),
                                      ("ramp", (0, 50), self.ramp)):
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise error(BadSetting, "engine.bad_whole", name=Text(f"pretrain.setting_{name}"), lo=lo, hi=hi,
                            value=repr(value))
        if not isinstance(self.warmup, (int, float)) or isinstance(self.warmup, bool) or not 0 <= self.warmup < 1:
            raise error(BadSetting, "pretrain.bad_warmup", value=repr(self.warmup))
        return PretrainConfig(**{f.name: getattr(self, f.name) for f in fields(self)})

    def to_dict(self) -> dict:
        return asdict(self)

    def runs_on(self) -> torch.device:
        return devices.pick_device(self.device)

    def cost(self, device: torch.device) -> Cost:
        """One network trained in full on the decoded source pictures: the phases of a from-scratch fine-tune
        (``finetune_cost``), and one slice of pictures being painted with its decoded copies."""
        n_train, n_val = self.per_class * self.num_classes, self.val_per_class * self.num_classes
        as_finetune = FinetuneConfig(dataset="source", arch=self.arch, strategies=("scratch",), epochs=self.epochs,
                                     image_size=self.image_size, batch_size=self.batch_size, keep_models=False)
        cost = finetune_cost(as_finetune.validated(), n_train, n_val, torch.device(device))
        painting = EVAL_BATCH * self.image_size ** 2 * 3 * 2
        return dataclasses.replace(cost, memory=cost.memory + painting, host=cost.host + painting)

    def offers(self, why: str, fits) -> tuple[list[Text], bool]:
        """A batch size (memory) or a number of epochs (work) that fits, and the largest smaller size that does."""
        knob, lo = ("batch_size", 2) if why == "memory" else ("epochs", 1)
        best = budget.largest(lo, getattr(self, knob) - 1, lambda v: fits(**{knob: v}))
        size = next((s for s in range(self.image_size - 16, 31, -16) if fits(image_size=s)), None)
        options = [Text("budget.offer.batch_size", n=best) if knob == "batch_size" else epochs_text(best)] \
            if best else []
        return options + ([Text("budget.offer.size", size=size)] if size else []), True

    def refusal(self, why: str, cost: Cost, limits, fits: Text | None) -> Exception:
        fits = fits or Text("budget.pretrain.none")
        title = ARCHS[self.arch].title
        if why == "memory":
            need, limit = (cost.memory, limits.memory) if cost.memory > limits.memory else (cost.host, limits.host)
            return error(BudgetExceeded, "budget.pretrain.memory", title=title, size=self.image_size,
                         batch=self.batch_size, need=budget.show_bytes(need), limit=budget.show_bytes(limit),
                         fits=fits)
        return error(BudgetExceeded, "budget.pretrain.work", title=title, size=self.image_size,
                     epochs=epochs_text(self.epochs), images=self.per_class * self.num_classes,
                     need=budget.show_macs(cost.work), limit=budget.show_macs(limits.work), fits=fits)

    def estimate(self, measure: bool = True) -> float | None:
        """Seconds on this machine (``resnet.train.estimate.estimate_pretrain``: its parts too)."""
        from .estimate import estimate_pretrain
        e = estimate_pretrain(self, measure=measure)
        return e.seconds if e is not None else None

    def key(self) -> str:
        """A pretraining's settings with the seed, where it stores its backbone, the backbone stored there now (a
        run replaced since is not replayed as if its file were still there), and the code."""
        from .. import weights
        settings = self.to_dict()
        settings.pop("device", None)
        folder = settings.pop("folder", None) or str(weights.source_folder())
        stored = weights.find_source(self.arch)
        return job_key("pretrain", settings=settings, folder=folder, stored=file_identity(stored) if stored else None)

    def run(self, cancel=None) -> Iterator[Event]:
        budget.admit(self)
        return _pretrain(self.validated(), cancel)


@dataclass
class PretrainResult:
    """What was stored: ``path`` (the server's; show ``file``, its name, to visitors) and how well it learnt."""

    config: dict
    path: Path | None
    file: str | None
    classes: list[str]
    val_acc: float
    val_count: int
    seconds: float
    device: str
    history: dict = field(default_factory=dict)
    cancelled: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        return d


def pretrain(arch: str = "resnet18", *, image_size: int = DEFAULTS["image_size"], epochs: int = DEFAULTS["epochs"],
             seed: int = 0, cancel: threading.Event | None = None, **options) -> Iterator[Event]:
    """Train ``arch`` on the source set and store it (see the module's docstring). ``options``: the other fields
    of ``PretrainConfig`` (``per_class``, ``batch_size``, ``lr``, ``device``, ``folder`` …)."""
    cfg = PretrainConfig(arch=arch, image_size=image_size, epochs=epochs, seed=seed, **options).validated()
    budget.admit(cfg)  # before anything is painted
    return _pretrain(cfg, cancel)


def _pretrain(cfg: PretrainConfig, cancel) -> Iterator[Event]:
    t_run = time.perf_counter()
    dev = devices.pick_device(cfg.device)
    shard = Shard()
    history = {k: [] for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds")}
    result = PretrainResult(config=cfg.to_dict(), path=None, file=None, classes=[], val_acc=0.0, val_count=0,
                            seconds=0.0, device=devices.describe(dev, cfg.image_size), history=history)

    def finish(kind: str) -> Event:
        result.seconds = time.perf_counter() - t_run
        result.cancelled = kind == "cancelled"
        return Event(kind, seconds=result.seconds, result=result,
                     message=Text(f"pretrain.{kind}", file=result.file or "", acc=result.val_acc))

    def stopped() -> bool:
        return cancel is not None and cancel.is_set()

    yield Event("start", message=Text("pretrain.start", arch=ARCHS[cfg.arch].title, classes=cfg.num_classes,
                                      n=cfg.per_class * cfg.num_classes, size=cfg.image_size, epochs=cfg.epochs))
    # Paint and decode (resize, as every data set is decoded) a slice at a time, so Stop is noticed while painting.
    decode, ev = transform("decode", cfg.image_size), transform("eval", cfg.image_size, decoded=True)
    result.classes = class_names(cfg.num_classes)
    n_train, n_val = cfg.per_class * cfg.num_classes, cfg.val_per_class * cfg.num_classes
    draw = cfg.draw_size or cfg.image_size

    def painted(start: int, n: int, stream: int, level: float, shown: int = 0):
        """Pictures ``start … start+n-1`` of ``stream`` at clutter ``level`` (1: full), decoded; yields a
        "prepare" event per slice when ``shown`` > 0 (the total the bar counts to) and returns (uint8, labels)."""
        images, labels = [], []
        easy = EASY + (1 - EASY) * (1 - level) / 2  # the plain share falls from about two in three to EASY
        for i in range(start, start + n, 64):
            if stopped():
                return None
            pics, ys = paint_source(min(64, start + n - i), draw, seed=cfg.seed, num_classes=cfg.num_classes,
                                    start=i, clutter=level, easy=easy, stream=stream)
            images += [decode(p) for p in pics]
            labels += ys
            if shown:
                yield Event("prepare", step=len(images) + (stream == 0) * n_val, steps=shown,
                            seconds=time.perf_counter() - t_run, message=Text("pretrain.painting"))
        return torch.stack(images), torch.tensor(labels, dtype=torch.long)

    def level(epoch: int) -> float:
        return 1.0 if cfg.ramp == 0 else min(1.0, (epoch - 1) / cfg.ramp)

    held_out = yield from painted(0, n_val, 1, 1.0, shown=n_val + n_train)
    train = None if held_out is None else (yield from painted(0, n_train, 0, level(1), shown=n_val + n_train))
    if train is None:
        yield finish("cancelled")
        return
    x_val, y_val = torch.stack([ev(img) for img in held_out[0]]), held_out[1]
    result.val_count = len(y_val)

    gen = torch.Generator().manual_seed(cfg.seed + 17)
    net = devices.prepare(build_model(cfg.arch, cfg.num_classes, generator=gen), dev, cfg.image_size)
    augment = transform("train", cfg.image_size, decoded=True, generator=gen)
    steps = len(shard.batches(n_train, cfg.batch_size, seed=cfg.seed, epoch=0))
    trainer = adamw_cosine(net, net.parameters(), lr=cfg.lr, steps=cfg.epochs * steps, device=dev,
                           size=cfg.image_size, warmup=round(cfg.warmup * cfg.epochs * steps))
    t_train = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        if epoch > 1 and (cfg.fresh or level(epoch) != level(epoch - 1)):  # this epoch's pictures
            train = yield from painted((epoch - 1) * n_train if cfg.fresh else 0, n_train, 0, level(epoch))
            if train is None:
                yield finish("cancelled")
                return
        x_train, y_train = train
        x_eval = None if cfg.augment else torch.stack([ev(img) for img in x_train])
        net.train()
        t_epoch, totals = time.perf_counter(), Totals()
        for step, idx in enumerate(shard.batches(n_train, cfg.batch_size, seed=cfg.seed, epoch=epoch), 1):
            if stopped():
                yield finish("cancelled")
                return
            x = torch.stack([augment(x_train[i]) for i in idx.tolist()]) if cfg.augment else x_eval[idx]
            loss, logits, y = trainer.step(x, y_train[idx])
            totals.add(loss * len(y), logits, y)
            now = time.perf_counter()
            yield Event("step", strategy="pretrain", epoch=epoch, epochs=cfg.epochs, step=step, steps=steps,
                        train_loss=totals.mean_loss, train_acc=totals.acc, seconds=now - t_train,
                        images_per_s=totals.seen / max(now - t_epoch, 1e-9))
        pick = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed))[:BN_IMAGES]
        bn_x = torch.stack([ev(x_train[i]) for i in pick.tolist()])
        precise_bn(net, bn_x, dev, cfg.image_size)
        val = evaluate(net, x_val, y_val, dev, cfg.image_size)
        elapsed = time.perf_counter() - t_train
        for key, v in zip(history, (epoch, totals.mean_loss, totals.acc, val.mean_loss, val.acc, elapsed)):
            history[key].append(v)
        result.val_acc = val.acc
        yield Event("epoch", strategy="pretrain", epoch=epoch, epochs=cfg.epochs, step=steps, steps=steps,
                    train_loss=totals.mean_loss, train_acc=totals.acc, val_loss=val.mean_loss, val_acc=val.acc,
                    seconds=elapsed, images_per_s=totals.seen / max(time.perf_counter() - t_epoch, 1e-9))
    state = {k: v.float() if v.is_floating_point() else v for k, v in net.cpu().state_dict().items()}
    meta = {"source": "builtin-source", "image_size": cfg.image_size, "epochs": cfg.epochs,
            "per_class": cfg.per_class, "seed": cfg.seed, "classes": result.classes, "val_acc": float(result.val_acc),
            "val_count": result.val_count}
    result.path = save_source(cfg.arch, state, meta, cfg.folder)
    result.file = result.path.name
    yield finish("done")


# ---------------------------------------------------------------- command line

def config_from_args(args) -> PretrainConfig:
    """The command's recipe: its flags, the rest ``PretrainConfig``'s defaults (the server's own preparation of the
    source, ``resnet.train.prepare.recipe``, is this at the flags' defaults)."""
    return PretrainConfig(arch=args.arch, image_size=args.image_size, epochs=args.epochs, seed=args.seed,
                          per_class=args.per_class, folder=args.out or None).validated()


def run_cli(args) -> int:
    """``python -m resnet pretrain [--arch A] [--image-size N] [--epochs N]``: a tqdm bar, then where it was
    stored and its source accuracy."""
    import json

    events = pretrain(**config_from_args(args).to_dict())
    try:
        final = follow(events, step_label=lambda ev: f"pretrain {args.arch}")
    except KeyboardInterrupt:
        return 130
    print(f"stored {final.path} (source accuracy {final.val_acc:.1%} on {final.val_count} pictures of "
          f"{len(final.classes)} classes, {final.seconds:.0f} s on {final.device})")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(final.to_dict(), indent=2, ensure_ascii=False))
    return 0
