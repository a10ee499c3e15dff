"""Lab 1b: the training race. Plain and residual, shallow and deep, trained side by side on the same batches."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Iterator

from ... import budget
from ...checks import short, whole
from ...errors import BadSetting
from ...i18n import Text, error
from ...profile import SGD_BYTES
from .cost import lab_step
from .data import shapes_dataset
from .job import LabJob
from .loop import sgd_trainer, train_together
from .nets import LAB_NETS, SETTINGS, lab_net, net_title

# The race: plain and residual, shallow and deep, trained side by side on the same batches.
RACE_NETS = (("cifar20", False), ("cifar56", False), ("cifar20", True), ("cifar56", True))
RACE_WIDTHS = (8, 16, 32)  # half the paper's widths: the same depths, a quarter of the work, so it runs live
RACE_IMAGES = 512  # built-in shapes the race trains on


@dataclass
class RaceUpdate:
    step: int
    steps: int
    seconds: float
    losses: dict[str, list[float]]  # title → smoothed training loss at each recorded step
    recorded_steps: list[int]
    done: bool = False

    def final(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.losses.items() if v}


def training_race(steps: int = 120, *, batch_size: int = 16, lr: float = 0.05, nets=RACE_NETS, every: int = 10,
                  seed: int = 0, n_images: int = RACE_IMAGES, widths=RACE_WIDTHS, cancel=None) -> Iterator[RaceUpdate]:
    """Train each net in ``nets`` for ``steps`` SGD steps on the built-in shapes, all on the same
    mini-batches, and yield the loss curves every ``every`` steps (so the UI can redraw while it runs).

    Training loss, not test accuracy: the degradation problem is that the deeper plain net fits its own
    training data *worse*, which overfitting cannot explain.
    """
    job = RaceJob(steps, batch_size, lr, nets, every, seed, n_images, widths).validated()
    budget.admit(job)
    x, y = shapes_dataset(job.n_images, 32, seed)
    runners = {racer_title(*racer): sgd_trainer(lab_net(racer[0], racer[1], setting=racer_setting(racer), seed=seed,
                                                        widths=job.widths).train(), job.lr, x.shape[-1])
               for racer in job.nets}
    losses = {title: [] for title in runners}
    recorded: list[int] = []
    start = time.perf_counter()
    for step, ema in train_together(runners, x, y, steps=job.steps, batch_size=job.batch_size, every=job.every,
                                    seed=seed, smoothing=0.1, flip=True, cancel=cancel):
        recorded.append(step)
        for title in losses:
            losses[title].append(ema[title])
        yield RaceUpdate(step, job.steps, time.perf_counter() - start, {k: list(v) for k, v in losses.items()},
                         list(recorded), done=step == job.steps)


def race_estimate(steps: int, batch_size: int, nets, n_images: int, widths) -> tuple[int, float]:
    """All nets and their SGD state live together; one net's step runs at a time; the set of shapes (and numpy's
    copies while it is drawn)."""
    steps_mem, params, work = 0, 0, 0.0
    for racer in nets:
        acts, p, w = lab_step(racer[0], racer[1], racer_setting(racer), tuple(widths), 32, batch_size)
        steps_mem, params, work = max(steps_mem, acts), params + p, work + w * steps
    return steps_mem + SGD_BYTES * params + n_images * 3 * 32 * 32 * 4 * 3, work


class TrainingLabJob(LabJob):
    """A lab that trains nets on the built-in shapes for ``steps`` at ``batch_size`` (the race, the BN batch run):
    the budget offers fewer steps, else a smaller batch."""

    knob, offer_key = "steps", "budget.offer.steps"
    max_steps = 5000

    def checked_sizes(self) -> tuple[int, int, int]:
        """(steps, batch size, images), each a whole number in its range."""
        return (whole(self.steps, 1, self.max_steps, "number of steps"), whole(self.batch_size, 2, 256, "batch size"),
                whole(self.n_images, 8, 4096, "number of images"))

    def what(self) -> Text:
        return Text("budget.lab.race", steps=self.steps, batch=self.batch_size)

    def otherwise(self) -> Text:
        return Text("budget.offer.smaller_batch")


@dataclass(frozen=True)
class RaceJob(TrainingLabJob):
    """``training_race``'s settings."""

    steps: int = 120
    batch_size: int = 16
    lr: float = 0.05
    nets: tuple = RACE_NETS
    every: int = 10
    seed: int = 0
    n_images: int = RACE_IMAGES
    widths: tuple = RACE_WIDTHS

    kind = "training_race"

    def validated(self) -> "RaceJob":
        """Numbers in range, racers deduplicated (at most 8), three widths, a learning rate in (0, 1]."""
        steps, batch_size, n_images = self.checked_sizes()
        nets = racers(self.nets)
        if not (isinstance(self.widths, (list, tuple)) and len(self.widths) == 3):
            raise error(BadSetting, "budget.race.widths")
        widths = tuple(whole(w, 1, 64, "width") for w in self.widths)
        every = whole(self.every, 1, 5000, "recording interval")
        lr = self.lr
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0 < lr <= 1):  # NaN fails too
            raise error(BadSetting, "engine.race_lr")
        return replace(self, steps=steps, batch_size=batch_size, nets=nets, n_images=n_images, widths=widths,
                       every=every)

    def need(self) -> tuple[int, float]:
        return race_estimate(self.steps, self.batch_size, self.nets, self.n_images, self.widths)

    def run(self, cancel=None) -> Iterator[RaceUpdate]:
        return training_race(self.steps, batch_size=self.batch_size, lr=self.lr, nets=self.nets, every=self.every,
                             seed=self.seed, n_images=self.n_images, widths=self.widths, cancel=cancel)


def racer_setting(racer: tuple) -> str:
    """A racer's normalisation (``nets.SETTINGS``): the third item of (network, residual, setting), else the paper's."""
    return racer[2] if len(racer) > 2 else "bn"


def racer_title(name: str, residual: bool, setting: str = "bn") -> str:
    """``ResNet-20``, or ``ResNet-20 (no BN)`` for a net raced without BatchNorm."""
    return net_title(name, residual) + ("" if setting == "bn" else " (no BN)")


def racers(nets) -> tuple:
    """The race's (network, residual) pairs from the API, or (network, residual, setting) triples for a race with
    and without BatchNorm: a list of them, duplicates collapsed, at most 8."""
    if not isinstance(nets, (list, tuple)) or not nets or len(nets) > 32:
        raise error(BadSetting, "budget.race.pairs")
    pairs = []
    for item in nets:
        if not (isinstance(item, (list, tuple)) and len(item) in (2, 3) and item[0] in LAB_NETS
                and isinstance(item[1], bool) and (len(item) == 2 or item[2] in SETTINGS)):
            raise error(BadSetting, "budget.race.pair", value=short(item))
        racer = tuple(item[:2]) if racer_setting(item) == "bn" else tuple(item)
        if racer not in pairs:
            pairs.append(racer)
    if len(pairs) > 8:
        raise error(BadSetting, "budget.race.at_most")
    return tuple(pairs)
