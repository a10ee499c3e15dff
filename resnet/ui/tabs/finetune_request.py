"""The Fine-tune tab's Start request: its nine settings as the page or the API sends them, read once into a
``FinetuneRequest`` whose ``config`` checks them (the ``FinetuneConfig``, refused over the budget); and the presets
that set seven of them."""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields, replace

from ... import budget
from ...errors import BadSetting
from ...i18n import Text, error
from ...models.transfer import STRATEGIES
from ...train import estimate as estimates
from ...train.finetune import FinetuneConfig
from ..common import payload_path

DATASETS = ("synthetic", "hymenoptera", "flowers", "upload")  # labels: finetune.dataset_<name>
PER_CLASS = ("5", "10", "25", "50", "all")  # the small-data knob's choices (FinetuneConfig.per_class; "all": None)
PRESETS = estimates.PRESETS  # labels: finetune.preset_<name>; "custom" when the settings match none
PRESET_KEYS = ("strategies", "arch", "epochs", "image_size", "batch_size", "lr", "per_class")  # what a preset sets


def to_int(value, name: str) -> int:
    """A whole number from a UI or API value; limits are checked by ``FinetuneConfig.validated``."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise error(BadSetting, "finetune.not_number", name=Text(f"engine.setting_{name}"), value=repr(value)) \
            from None
    if f != f or f in (float("inf"), float("-inf")) or f != int(f):
        raise error(BadSetting, "finetune.not_whole", name=Text(f"engine.setting_{name}"), value=repr(value))
    return int(f)


def to_per_class(value) -> int | None:
    """The small-data knob: a whole number of training images per class, or None for all of them."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all", "none")):
        return None
    return to_int(value, "per_class")


def to_lr(value) -> float | None:
    """The learning rate: None (the strategies' own) for 0 or empty."""
    try:
        lr = float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        raise error(BadSetting, "finetune.not_number", name=Text("engine.setting_lr"), value=repr(value)) from None
    return None if lr == 0 else lr


@dataclass
class FinetuneRequest:
    """The Start button's settings as sent (unchecked): the page's values or an API caller's anything."""

    dataset: object
    zip_file: object
    strategies: object
    arch: object
    epochs: object
    image_size: object
    batch_size: object
    lr: object
    per_class: object = None

    def config(self, L: str = "en") -> FinetuneConfig:
        """The run's settings, checked: the data set (an upload only if uploaded here), the limits, the budget."""
        dataset, strategies = self.dataset, self.strategies
        if dataset not in DATASETS:
            raise error(BadSetting, "finetune.bad_dataset", value=repr(dataset))
        if dataset == "upload":
            dataset = payload_path(self.zip_file, L)
            if not dataset:
                raise error(BadSetting, "finetune.no_zip")
        if not strategies:
            raise error(BadSetting, "finetune.no_strategy")
        lr = to_lr(self.lr)
        if not isinstance(strategies, (list, tuple)) or len(strategies) > len(STRATEGIES) * 2:
            raise error(BadSetting, "engine.no_strategy", choices=", ".join(STRATEGIES))
        cfg = FinetuneConfig(dataset=dataset, arch=self.arch, strategies=tuple(strategies),
                             epochs=to_int(self.epochs, "epochs"), image_size=to_int(self.image_size, "image_size"),
                             batch_size=to_int(self.batch_size, "batch_size"), lr=lr,
                             per_class=to_per_class(self.per_class))
        cfg = cfg.validated()  # duplicated strategies collapse to one run each
        budget.admit(cfg)  # memory and work, before any data or weights are loaded
        return cfg

    def as_estimated(self) -> FinetuneRequest:
        """What the estimate weighs before Start: an upload (unknown until it is read) as the synthetic set."""
        return replace(self, dataset="synthetic" if self.dataset == "upload" else self.dataset, zip_file=None)


SETTINGS = tuple(f.name for f in fields(FinetuneRequest))  # the Start button's inputs before the session's state


def on_start_inputs(fn):
    """``fn(request, L)`` as a function of the Start button's inputs (the settings, then the state) and the
    language: the parameters that ``common.early`` (a validator) and ``sharing.keyed`` (a job key) read."""
    def call(*values):
        *settings, _state, L = values
        return fn(FinetuneRequest(*settings), L)
    functools.update_wrapper(call, fn)
    P = inspect.Parameter
    call.__signature__ = inspect.Signature([P(n, P.POSITIONAL_OR_KEYWORD) for n in (*SETTINGS, "state", "L")])
    return call


def matching_preset(strategies, arch, epochs, image_size, batch_size, lr, per_class) -> str:
    """The preset whose values the page shows, or "custom"."""
    here = dict(zip(PRESET_KEYS, (strategies, arch, epochs, image_size, batch_size, lr, per_class)))
    for preset, values in PRESETS.items():
        try:
            if all(_same(k, here[k], values[k]) for k in PRESET_KEYS):
                return preset
        except (TypeError, ValueError):
            continue
    return "custom"


def _same(key: str, a, b) -> bool:
    if key == "strategies":
        return set(a or ()) == set(b)
    if key == "arch":
        return a == b
    if key == "per_class":
        return to_per_class(a) == to_per_class(b)
    return float(a or 0) == float(b or 0)


def preset_values(preset: str) -> tuple:
    """The page's values for a preset, in ``PRESET_KEYS`` order (the per-class choice as the radio shows it)."""
    v = PRESETS[preset]
    return tuple(str(v[k]) if k == "per_class" and v[k] is not None else "all" if k == "per_class" else v[k]
                 for k in PRESET_KEYS)
