"""The lesson's steps, in the note's order: what each asks, the lesson-sized job it runs, and the numbers it keeps.

A step is data: an id, the tab that shows the experiment in full, the answers a student can commit to (or a number),
and ``run(cancel)``, the real experiment at lesson settings (a job of ``resnet.analysis`` or ``resnet.train``, admitted
by the budget like any other). ``numbers(item)`` turns the run's last update into plain numbers; ``truth(numbers)``
is the answer the run gave, which the student's prediction is compared with (``resnet.lesson.readings``).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .. import budget
from ..analysis import labs
from ..analysis.note_table import block_comparison, note_table
from ..train.finetune import FinetuneConfig
from ..train.results import verdict

SAME = 0.25      # two costs or losses within this fraction of each other read as "about the same"
LOSS_TIE = 0.05  # smoothed training losses closer than this are level (the race reading's threshold)

# Lesson-sized settings: each run a minute or so on 2 cores, small enough that a class can do them all in a lesson.
RACE = labs.RaceJob(steps=80, batch_size=16, lr=0.05, every=8)
BN_RACE = labs.RaceJob(steps=80, batch_size=16, lr=0.05, every=8,
                       nets=(("cifar20", True), ("cifar20", True, "none")))
FLOW = labs.GradientFlowJob(("cifar56",), ("none", "bn"), 16)
DEEP = labs.DeepNetworkJob("cifar1202", 2, 32, "bn")
BN_BATCH = labs.BNBatchRunJob(steps=48, every=8)
GROUP = labs.GroupConvJob(128, 128, 32, 28)
TRANSFER = dict(dataset="synthetic", arch="resnet18", strategies=("all", "last", "head"), epochs=8, image_size=48,
                batch_size=10, per_class=10, keep_models=False)


@dataclass(frozen=True)
class Step:
    id: str
    tab: str                              # the tab with the full experiment (``?tab=<tab>``)
    run: Callable[[threading.Event], Iterator]
    numbers: Callable[[object], dict]      # the last update → plain numbers (JSON)
    truth: Callable[[dict], object]        # what the run answered: a choice id, or a number
    choices: tuple = ()                    # the answers offered; () → the student types a number
    trains: bool = False                   # takes one of the server's training slots
    key: dict = field(default_factory=dict)  # what it runs: steps with the same key share one run (3 and 4)
    weights: Callable[[], str] | None = None  # the weights it would start from now, when that can change

    def identity(self) -> dict:
        """What makes two runs of the step the same run, now: its key, and the weights it would start from (a
        run started from random weights is not replayed once the built-in source is ready)."""
        return self.key | ({"weights": self.weights()} if self.weights else {})

    @property
    def numeric(self) -> bool:
        return not self.choices


def _lab(job) -> Callable[[threading.Event], Iterator]:
    """A lab job's run, checked against the budget first; ``cancel`` set stops it after the current step."""
    def run(cancel: threading.Event):
        checked = job.validated()
        budget.admit(checked)
        yield from checked.run(cancel.is_set)
    return run


def _level(a: float, b: float, tie: float) -> int:
    """-1: a is lower, 1: b is lower, 0: level within ``tie``."""
    return 0 if abs(a - b) <= tie else (-1 if a < b else 1)


# ---- 1 · the table and its multiply-adds ----------------------------------------------------------------------

def _table(cancel):
    table = note_table(v1=True)  # the note's FLOPs row counts the paper's v1 block
    yield {arch: {"gmacs": table.gmacs[arch], "params_m": table.params[arch] / 1e6,
                  "paper": table.paper_gmacs[arch]} for arch in table.archs}


def _table_truth(n: dict) -> str:
    ratio = n["resnet50"]["gmacs"] / n["resnet34"]["gmacs"]
    return "same" if abs(ratio - 1) <= SAME else ("higher" if ratio > 1 else "lower")


# ---- 2 · the bottleneck ------------------------------------------------------------------------------------------

def _blocks(cancel):
    """A basic block and a bottleneck at 256 channels, and the basic block at 64 that ResNet-34 has in their place."""
    yield block_comparison(256, 56)


# ---- 9 · the three transfer strategies -------------------------------------------------------------------------

@dataclass
class TransferUpdate:
    """The three ways so far: per strategy the lists ``epoch``, ``val_acc``, ``val_loss``, ``train_loss`` (as
    ``RunResult.history``), the latest event, and the run's classes and validation images once known."""

    history: dict
    event: object
    num_classes: int | None = None
    n_val: int | None = None


def _transfer(cancel):
    history, info = {}, {}
    for ev in FinetuneConfig(**TRANSFER).run(cancel):
        if ev.kind == "start":
            params = getattr(ev.message, "params", None) or {}
            info = {"num_classes": params.get("classes"), "n_val": params.get("n_val")}
        elif ev.kind == "epoch":
            h = history.setdefault(ev.strategy, {"epoch": [], "val_acc": [], "val_loss": [], "train_loss": []})
            for name, value in (("epoch", ev.epoch), ("val_acc", ev.val_acc), ("val_loss", ev.val_loss),
                                ("train_loss", ev.train_loss)):
                h[name].append(value)
        if ev.kind in ("start", "epoch", "done", "cancelled"):
            yield TransferUpdate({k: {n: list(v) for n, v in h.items()} for k, h in history.items()}, ev, **info)


def _transfer_numbers(update) -> dict:
    result = update.event.result
    if result is None:
        return {}
    return {"summaries": [{"strategy": s.strategy, "best_val_acc": s.best_val_acc, "best_val_acc_se": s.best_val_acc_se,
                           "source": s.source} for s in result.summaries],
            "pretrained": result.pretrained, "chance": 1 / max(1, len(result.classes))}


def _transfer_truth(n: dict) -> str:
    v = verdict(n.get("summaries", []))
    return v.best or "tie"


# ---- the lab steps' numbers ------------------------------------------------------------------------------------

def _race_numbers(update) -> dict:
    return {"final": update.final(), "steps": update.steps, "seconds": update.seconds}


def _flow_numbers(profiles) -> dict:
    out = {}
    for setting in ("none", "bn"):
        by = {p.residual: p for p in profiles if p.setting == setting}
        out[setting] = {"plain_first": by[False].first, "res_first": by[True].first,
                        "ratio": labs.gradient_ratio(profiles, "cifar56", setting)}
    return out


def _deep_numbers(r) -> dict:
    def counts(p):
        return {"bad": sum(not math.isfinite(v) for v in p.norms), "zero": sum(v == 0 for v in p.norms),
                "layers": len(p.norms)}
    return {"depth": r.depth, "residual": counts(r.residual), "plain": counts(r.plain) if r.plain else None}


def _bn_batch_numbers(u) -> dict:
    return {str(g): {"acc": u.val_acc[g][-1], "loss": u.loss[g][-1]} for g in u.loss} | {"val_count": u.val_count}


def _bn_batch_truth(n: dict) -> str:
    """The larger accuracy, unless the two are within two standard errors of their difference."""
    a, b, count = n["2"]["acc"], n["32"]["acc"], n["val_count"]
    noise = 2 * math.sqrt(max(a * (1 - a), 0) / count + max(b * (1 - b), 0) / count)
    return "same" if abs(a - b) <= noise else ("2" if a > b else "32")


def _group_numbers(costs) -> dict:
    return {c.kind: {"params": c.params, "macs": c.macs, "groups": c.groups} for c in costs}


STEPS: tuple[Step, ...] = (
    Step("table", "architecture", _table, lambda n: n, _table_truth, ("lower", "same", "higher"),
         key={"note_table": {"v1": True, "image_size": 224}}),
    Step("bottleneck", "architecture", _blocks,
         lambda blocks: {b.kind: {"params": b.params, "macs": b.macs} for b in blocks},
         lambda n: n["basic"]["params"] / n["bottleneck"]["params"], key={"blocks": {"width": 256, "size": 56}}),
    Step("degradation", "labs", _lab(RACE), _race_numbers,
         lambda n: ("plain20", "same", "plain56")[1 + _level(n["final"]["plain-20"], n["final"]["plain-56"], LOSS_TIE)],
         ("plain20", "plain56", "same"), trains=True, key={"race": RACE.settings()}),
    Step("residual", "labs", _lab(RACE), _race_numbers,
         lambda n: ("res20", "same", "res56")[1 + _level(n["final"]["ResNet-20"], n["final"]["ResNet-56"], LOSS_TIE)],
         ("res20", "res56", "same"), trains=True, key={"race": RACE.settings()}),
    Step("gradient", "labs", _lab(FLOW), _flow_numbers,
         lambda n: "plain_less" if n["none"]["ratio"] > 3 else ("plain_more" if n["none"]["ratio"] < 1 / 3 else "same"),
         ("plain_less", "same", "plain_more"), key={"flow": FLOW.settings()}),
    Step("deep", "labs", _lab(DEEP), _deep_numbers,
         lambda n: "yes" if n["residual"]["bad"] == n["residual"]["zero"] == 0 else "no",
         ("yes", "no"), trains=True, key={"deep": DEEP.settings()}),
    Step("bn_batch", "labs", _lab(BN_BATCH), _bn_batch_numbers, _bn_batch_truth, ("2", "32", "same"), trains=True,
         key={"bn_batch": BN_BATCH.settings()}),
    Step("bn_on_off", "labs", _lab(BN_RACE), _race_numbers,
         lambda n: ("with", "same", "without")[1 + _level(n["final"]["ResNet-20"], n["final"]["ResNet-20 (no BN)"],
                                                            LOSS_TIE)],
         ("with", "without", "same"), trains=True, key={"race": BN_RACE.settings()}),
    Step("transfer", "finetune", _transfer, _transfer_numbers, _transfer_truth, ("all", "last", "head", "tie"),
         trains=True, key={"finetune": TRANSFER}, weights=lambda: FinetuneConfig(**TRANSFER).key()),
    Step("group_conv", "labs", _lab(GROUP), _group_numbers, lambda n: n["grouped"]["params"],
         key={"group": GROUP.settings()}),
)
BY_ID = {s.id: s for s in STEPS}


def step_at(number) -> Step:
    """The step a link or the API names: 1 … len(STEPS) (a step id is accepted too)."""
    if isinstance(number, str) and number in BY_ID:
        return BY_ID[number]
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not float(number).is_integer() \
            or not 1 <= number <= len(STEPS):
        raise ValueError(number)
    return STEPS[int(number) - 1]


def close_enough(predicted: float, actual: float) -> bool:
    """A number prediction counts as right within a quarter of the answer."""
    return actual != 0 and abs(predicted - actual) <= SAME * abs(actual)
