"""Lab 2: over 1000 layers. ResNet-1202 beside the plain net of the same depth: one forward and backward pass each,
and how much gradient arrives at every layer."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterator

from ... import budget
from ...checks import short, what_text, whole
from ...errors import BadSetting
from ...i18n import Text, error
from .cost import lab_step
from .data import real_batch
from .gradient_flow import GradientProfile, layer_gradients
from .job import LabJob
from .nets import CIFAR_NETS, SETTINGS, lab_net, net_depth


@dataclass
class DeepResult:
    """ResNet-1202 beside the plain net of the same depth: size, time, and how much gradient arrives."""

    depth: int
    residual: GradientProfile
    plain: GradientProfile | None  # None while the plain net is still being measured (``deep_network_steps``)
    batch_size: int
    image_size: int


def first_finite_fraction(p: GradientProfile) -> float:
    """Share of layers whose gradient is a finite, non-zero number (the rest vanished or overflowed)."""
    ok = [math.isfinite(v) and v > 0 for v in p.norms]
    return sum(ok) / len(ok)


def deep_network(name: str = "cifar1202", *, batch_size: int = 2, image_size: int = 32, setting: str = "bn",
                 seed: int = 0) -> DeepResult:
    """Build the net (ResNet-1202: n = 200, 19.4 M parameters) with and without shortcuts and run one
    forward and backward pass on a small batch of real images, timing it."""
    *_, result = deep_network_steps(name, batch_size=batch_size, image_size=image_size, setting=setting, seed=seed)
    return result


def deep_network_steps(name: str = "cifar1202", *, batch_size: int = 2, image_size: int = 32, setting: str = "bn",
                       seed: int = 0) -> Iterator[DeepResult]:
    """``deep_network`` as it goes: the result once the residual net is measured (``plain`` None), then with both
    nets, so that a page shows the first curve while the plain net (as slow again) is built and measured."""
    job = DeepNetworkJob(name, batch_size, image_size, setting, seed).validated()  # BN needs 2 or more
    budget.admit(job)
    batch_size, image_size = job.batch_size, job.image_size
    x, y = real_batch(batch_size, image_size, seed)
    profiles = {}
    for residual in (True, False):
        net = lab_net(name, residual, setting=setting, seed=seed)
        profiles[residual] = layer_gradients(net, x, y, name=name, setting=setting, residual=residual)
        del net
        yield DeepResult(net_depth(name), profiles[True], profiles.get(False), batch_size, image_size)


@dataclass(frozen=True)
class DeepNetworkJob(LabJob):
    """``deep_network``'s settings: two nets, one after the other."""

    name: str = "cifar1202"
    batch_size: int = 2
    image_size: int = 32
    setting: str = "bn"
    seed: int = 0

    kind = "deep_network"
    knob, lowest, offer_key = "batch_size", 2, "budget.offer.batch_size"

    def validated(self) -> "DeepNetworkJob":
        if self.name not in CIFAR_NETS:
            raise error(BadSetting, "budget.deep.net", allowed=", ".join(CIFAR_NETS))
        if self.setting not in SETTINGS:
            raise error(BadSetting, "budget.unknown", what=what_text("setting"), value=short(self.setting),
                        allowed=", ".join(SETTINGS))
        return replace(self, batch_size=whole(self.batch_size, 2, 32, "batch size"),
                       image_size=whole(self.image_size, 8, 128, "image size"))

    def need(self) -> tuple[int, float]:
        batch, size = self.batch_size, self.image_size
        mem, work, params = 0, 0.0, 0
        for residual in (True, False):
            acts, p, w = lab_step(self.name, residual, self.setting, (16, 32, 64), size, batch)
            mem, work, params = max(mem, acts + 8 * p), work + w, max(params, p)
        return mem + 4 * params + batch * 3 * size ** 2 * 4 * 3, work

    def what(self) -> Text:
        return Text("budget.lab.deep", depth=net_depth(self.name), size=self.image_size, batch=self.batch_size)

    def otherwise(self) -> Text:
        return Text("budget.offer.size", size=32)

    def run(self, cancel=None) -> Iterator[DeepResult]:
        return deep_network_steps(self.name, batch_size=self.batch_size, image_size=self.image_size,
                                  setting=self.setting, seed=self.seed)
