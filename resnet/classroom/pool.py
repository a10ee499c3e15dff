"""Class experiments: one lesson question spread over the students, each running one cell of a grid, every result
landing in one class plot.

An experiment is data: its grid (the settings that vary: BatchNorm's group size; depth and shortcuts; images per
class and strategy), the lesson-sized job one cell runs (``resnet.analysis.labs`` and ``resnet.train.finetune``
jobs, at the lesson's settings with one network or one strategy each), the number the class plot shows, and
what it reads from the run's last update. ``assign(i, n, seeds)`` gives student ``i`` of ``n`` their runs: the grid
times the seeds, dealt out in turn, so every run has a student and identical assignments are one run (their key,
``Assignment.key()``, is the job's own key, which ``resnet.train.jobs`` shares and replays). ``figure_data`` groups
the results for the class plot: per series and x, the mean and spread over the seeds that are in.

Sized for a class of thirty on 2 cores, where one training run computes at a time (``RESNET_TRAIN_CONCURRENCY``):
every run of one seed together takes a few minutes (``bench/pool_bench.py`` measures each). Measured with one torch
thread on a busy 2-core machine (one core's CPU seconds, the work itself): a BatchNorm run 13–17 s (77 s for all
five), a depth run 8 s (20 layers) to 22 s (56 layers) (87 s for all six), a transfer run 6 s (``head``) to
36 s (``all``, 20 images per class) (199 s for all twelve); an idle 2-core server, two threads a run, is faster.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from itertools import product
from typing import Callable, Iterator

from .. import budget
from ..analysis import labs
from ..i18n import error
from ..keys import job_key
from ..train.finetune import FinetuneConfig
from .errors import RoomError

# The lesson's settings (``resnet.lesson.steps``), one network or one strategy per run.
RACE_STEPS, RACE_BATCH, RACE_LR, RACE_EVERY = 80, 16, 0.05, 8
BN_STEPS, BN_EVERY = 48, 16
TRANSFER = dict(dataset="synthetic", arch="resnet18", epochs=5, image_size=48, batch_size=10, keep_models=False)


@dataclass(frozen=True)
class Assignment:
    """One run of a class experiment: the experiment, its grid cell (``(name, value)`` pairs) and the seed."""

    experiment: str
    cell: tuple
    seed: int = 0

    @property
    def values(self) -> dict:
        return dict(self.cell)

    def job(self):
        return EXPERIMENTS[self.experiment].job(self.values, self.seed)

    def key(self) -> str:
        """The run's identity: the experiment and its job's own key (settings, seed, weights, code)."""
        return job_key("class_pool", experiment=self.experiment, run=self.job().key())

    def to_dict(self) -> dict:
        return {"experiment": self.experiment, "values": self.values, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> "Assignment":
        exp = EXPERIMENTS[d["experiment"]]
        return cls(exp.id, tuple((name, d["values"][name]) for name, _ in exp.axes), int(d.get("seed", 0)))


@dataclass(frozen=True)
class ClassExperiment:
    """A grid over ``axes`` (``(name, values)``; the first is the plot's x, the second, if any, its series), the job
    one cell runs (``job(values, seed)``), and ``numbers(last update)``, of which ``metric`` is plotted."""

    id: str
    steps: tuple                 # the lesson steps it answers
    axes: tuple
    job: Callable[[dict, int], object]
    numbers: Callable[[object], dict]
    metric: str
    higher_is_better: bool = True

    def grid(self) -> list[tuple]:
        names = [name for name, _ in self.axes]
        return [tuple(zip(names, values)) for values in product(*(v for _, v in self.axes))]

    def runs(self, seeds: int = 1) -> list[Assignment]:
        """Every run: the grid once per seed, seed 0's first (so a class of the grid's size covers it with one seed)."""
        return [Assignment(self.id, cell, seed) for seed in range(seeds) for cell in self.grid()]

    def assign(self, student_index: int, n_students: int, seeds: int = 1) -> list[Assignment]:
        """Student ``student_index`` (0 …) of ``n_students``: runs i, i + n, i + 2n … of ``runs(seeds)`` when the
        class is smaller than that list; in a larger class, run i mod its length (the students of one run share
        it)."""
        runs = self.runs(seeds)
        n = max(1, int(n_students))
        i = int(student_index)
        if i >= n or n >= len(runs):
            return [runs[i % len(runs)]]
        return runs[i::n]


# ---- the jobs ---------------------------------------------------------------------------------------------

def _bn_job(v: dict, seed: int):
    return labs.BNBatchRunJob(steps=BN_STEPS, groups=(v["group"],), every=BN_EVERY, seed=seed)


def _bn_numbers(u) -> dict:
    g = next(iter(u.loss))
    return {"val_acc": u.val_acc[g][-1], "loss": u.loss[g][-1], "val_count": u.val_count, "chance": u.chance,
            "steps": u.step, "seconds": u.seconds}


def _depth_job(v: dict, seed: int):
    return labs.RaceJob(steps=RACE_STEPS, batch_size=RACE_BATCH, lr=RACE_LR, every=RACE_EVERY, seed=seed,
                        nets=((f"cifar{v['depth']}", v["shortcuts"]),))


def _depth_numbers(u) -> dict:
    (loss,) = u.final().values()
    return {"loss": loss, "steps": u.step, "seconds": u.seconds}


def _transfer_job(v: dict, seed: int):
    return FinetuneConfig(strategies=(v["strategy"],), per_class=v["per_class"], seed=seed, **TRANSFER)


def _transfer_numbers(ev) -> dict:
    result = getattr(ev, "result", None)
    if result is None or not result.summaries:
        return {}
    s = result.summaries[0]
    return {"val_acc": s.best_val_acc, "val_acc_se": s.best_val_acc_se, "final_val_acc": s.final_val_acc,
            "pretrained": result.pretrained, "source": result.source, "chance": result.chance,
            "seconds": result.seconds}


EXPERIMENTS: dict[str, ClassExperiment] = {e.id: e for e in (
    # The note's batch-size rule: BatchNorm's statistics from 2 … 32 images, one ResNet-20 each.
    ClassExperiment("bn_batch", ("bn_batch",), (("group", (2, 4, 8, 16, 32)),), _bn_job, _bn_numbers, "val_acc"),
    # Degradation and its cure: plain and residual at three depths (the lab's nets: 20, 32, 56 layers).
    ClassExperiment("depth", ("degradation", "residual"), (("depth", (20, 32, 56)), ("shortcuts", (False, True))),
                    _depth_job, _depth_numbers, "loss", higher_is_better=False),
    # The three ways to transfer, by how many training images each class has.
    ClassExperiment("transfer", ("transfer",), (("per_class", (2, 5, 10, 20)), ("strategy", ("all", "last", "head"))),
                    _transfer_job, _transfer_numbers, "val_acc"),
)}
BY_STEP = {step: e for e in EXPERIMENTS.values() for step in e.steps}


def experiment_for(step_id: str) -> ClassExperiment:
    """The class experiment of a lesson step; ``RoomError`` for a step that has none."""
    if step_id in EXPERIMENTS:
        return EXPERIMENTS[step_id]
    if step_id not in BY_STEP:
        raise error(RoomError, "classroom.no_pool")
    return BY_STEP[step_id]


def assign(experiment: str, student_index: int, n_students: int, seeds: int = 1) -> list[Assignment]:
    return experiment_for(experiment).assign(student_index, n_students, seeds)


def missing(experiment: str, results: dict, seeds: int = 1) -> list[Assignment]:
    """The runs of ``seeds`` whose result is not in ``results`` (run key → result) yet: what the teacher can start
    for a class too small, or for students who left."""
    return [a for a in EXPERIMENTS[experiment].runs(seeds) if a.key() not in results]


# ---- running one ------------------------------------------------------------------------------------------

def run_assignment(a: Assignment, cancel: threading.Event | None = None) -> Iterator:
    """The assignment's run, as ``resnet.train.jobs`` runs it (``produce(cancel)``): the job's updates, checked
    against this server's budget first."""
    job = a.job().validated()
    budget.admit(job)
    stop = cancel.is_set if cancel is not None else None
    if isinstance(job, FinetuneConfig):
        yield from job.run(cancel)
    else:
        yield from job.run(stop)


def numbers(a: Assignment, last) -> dict:
    """The plain numbers of a run's last update (what the class plot shows; JSON)."""
    return _json(EXPERIMENTS[a.experiment].numbers(last))


def run_to_result(a: Assignment, cancel: threading.Event | None = None) -> dict:
    """Run ``a`` to the end here (the command line, tests, the bench): its numbers."""
    last = None
    for last in run_assignment(a, cancel):
        pass
    return numbers(a, last)


def _json(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return value


# ---- the class plot ---------------------------------------------------------------------------------------

def _number(value) -> float | None:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def figure_data(experiment: str, results: dict, seeds: int = 1) -> dict:
    """The class plot's data from ``results`` (run key → ``{"assignment": Assignment.to_dict(), "numbers": …}``, as
    ``Room.add_result`` keeps them): per series (the second axis's value, or one series) and x (the first axis's),
    the mean of the metric over the seeds in, its spread (sample standard deviation; 0 with one seed), its min and
    max, and how many seeds are in. ``done`` of ``total`` runs are in."""
    exp = EXPERIMENTS[experiment]
    x_name = exp.axes[0][0]
    s_name = exp.axes[1][0] if len(exp.axes) > 1 else None
    cells: dict[tuple, list[float]] = {}
    for r in results.values():
        a = r.get("assignment") or {}
        if a.get("experiment") != experiment:
            continue
        v = _number((r.get("numbers") or {}).get(exp.metric))
        values = a.get("values") or {}
        key = (values.get(s_name) if s_name else None, values.get(x_name))
        cells.setdefault(key, [])
        if v is not None:
            cells[key].append(v)
    series = []
    for s_value in (exp.axes[1][1] if s_name else (None,)):
        xs = [x for x in exp.axes[0][1] if (s_value, x) in cells]
        rows = [cells[(s_value, x)] for x in xs]
        series.append({"name": s_value, "x": xs,
                       "mean": [sum(r) / len(r) if r else None for r in rows],
                       "std": [_std(r) for r in rows],
                       "min": [min(r) if r else None for r in rows], "max": [max(r) if r else None for r in rows],
                       "n": [len(r) for r in rows]})
    return {"experiment": experiment, "x": x_name, "series_by": s_name, "metric": exp.metric,
            "higher_is_better": exp.higher_is_better, "series": series,
            "done": sum(1 for r in results.values() if (r.get("assignment") or {}).get("experiment") == experiment),
            "total": len(exp.grid()) * seeds}


def _std(values: list[float]) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return 0.0
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
