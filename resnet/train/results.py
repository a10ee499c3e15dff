"""What a fine-tune reports: progress events, each strategy's summary, the run's result and the verdict (is the
leader ahead by more than the noise?). Pretraining reports with the same ``Event``."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..i18n import Text
from ..models.transfer import save_export


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

