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

import dataclasses
import gc
import math
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterator

import torch

from .. import budget, config
from .. import device as devices
from ..data import ImageSet
from ..errors import BadSetting
from ..i18n import Text, error
from ..job import Cost, Job
from ..keys import canonical, file_identity, job_key, weights_identity
from ..models.resnet import ARCHS
from ..models.transfer import STRATEGIES
from ..profile import Profile
from ..weights import downloads_allowed
from . import finetune_offers
from .console import follow
from .engine import BN_IMAGES, Shard  # noqa: F401 - BN_IMAGES: the precise-BN sample, as before
from .estimate import dataset_counts
from .finetune_cost import finetune_cost
from .finetune_data import RunData
from .finetune_run import train_all
from .results import Event, RunResult, StrategySummary, Verdict, binomial_se, verdict  # noqa: F401 - the public API

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
BUILTIN_DATASETS = ("synthetic", "hymenoptera", "flowers")  # identified by name and parameters, not bytes


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
class FinetuneConfig(Job):
    """Everything one run needs, as a job (``resnet.job``): ``validated()`` checks it against ``LIMITS``."""

    kind = "finetune"

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
    # Not settings (neither in ``to_dict`` nor in the key): how many (training, validation) images the data set
    # holds, once an upload is listed, and per-image counts that price a smaller size without a meta pass.
    counts: tuple | None = field(default=None, compare=False, repr=False)
    profile: Profile | None = field(default=None, compare=False, repr=False)

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
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.compare}
        d["dataset"] = d["dataset"].name if isinstance(d["dataset"], ImageSet) else str(d["dataset"])
        d["strategies"] = list(d["strategies"]) if not isinstance(d["strategies"], str) else d["strategies"]
        return d

    def with_counts(self, n_train: int, n_val: int) -> "FinetuneConfig":
        """The same job on a data set listed at last: its sizes priced, not guessed."""
        return dataclasses.replace(self, counts=(n_train, n_val))

    def image_counts(self) -> tuple[int, int] | None:
        """(training, validation) images: listed, known from the settings, or None (an upload not listed yet)."""
        known = self.counts or dataset_counts(self)
        return tuple(known[:2]) if known else None

    def runs_on(self) -> torch.device:
        return devices.pick_device(self.device)

    def cost(self, device: torch.device) -> Cost:
        """Memory and work (``finetune_cost``). Before an upload is listed, only what does not depend on the data
        set is known (one step's memory): the data limit and the work are checked again once it is."""
        counts = self.image_counts()
        cost = finetune_cost(self, *(counts or (0, 0)), torch.device(device), self.profile)
        if counts is None:
            return dataclasses.replace(cost, work_known=False)
        return dataclasses.replace(cost, data_limit=self.max_decoded_mb * budget.MB)

    def offers(self, why: str, fits) -> tuple[list[Text], bool]:
        return finetune_offers.offers(self, why, fits)

    def refusal(self, why: str, cost: Cost, budget, fits: Text) -> Exception:
        return finetune_offers.refusal(self, why, cost, budget, fits)

    def estimate(self, measure: bool = True) -> float | None:
        """Seconds on this machine (``resnet.train.estimate.estimate``: its parts too), None where not known."""
        from .estimate import estimate
        e = estimate(self, measure=measure)
        return e.seconds if e is not None else None

    def settings(self) -> dict:
        return canonical(self.to_dict())

    def key(self) -> str:
        """Everything that decides a fine-tune's numbers: its settings with the seed, the data (a built-in set's name
        and parameters, or the SHA-256 of the uploaded file), the weights it starts from, and the code."""
        settings = self.to_dict()
        data = settings.pop("dataset")
        for name in ("device", "keep_models", "allow_download", "weights"):  # the weights' identity is below
            settings.pop(name, None)
        settings["strategies"] = list(self.strategies)
        identity = {"builtin": data} if data in BUILTIN_DATASETS else {"file": file_identity(data)}
        needs = any(STRATEGIES[n].pretrained for n in self.strategies)
        weights = weights_identity(self.arch, path=self.weights, allow_download=self.allow_download) if needs else None
        return job_key("finetune", settings=settings, data=identity, weights=weights)

    def run(self, cancel=None) -> Iterator[Event]:
        return run(self, cancel=cancel)


def run(config: FinetuneConfig, *, cancel: threading.Event | None = None,
        shard: Shard = Shard()) -> Iterator[Event]:
    """Train each of ``config.strategies`` in turn, yielding events; the last one carries the ``RunResult``.
    ``shard``: this process's part under torchrun (``resnet.train.distributed``); every rank runs this same code."""
    cfg = config.validated()
    budget.admit(cfg)  # before any data or weights are loaded (again below, once the data set is listed)
    t_run = time.perf_counter()
    data = RunData()
    try:
        yield from train_all(cfg, cancel, t_run, data, shard)
    finally:
        data.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


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
