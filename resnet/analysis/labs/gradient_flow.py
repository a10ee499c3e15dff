"""Lab 1a: gradient flow at initialisation. One forward and backward pass of plain and residual nets on the same
batch, and how much gradient reaches each layer."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from ... import budget
from ...checks import choices, whole
from ...i18n import Text
from .cost import lab_step
from .data import real_batch
from .job import LabJob
from .nets import LAB_NETS, SETTINGS, count_params, default_size, lab_net, main_path_layers, net_title


@dataclass
class GradientProfile:
    """‖∂loss/∂W‖ of every main-path layer, from the input side (index 0) to the classifier."""

    net: str
    residual: bool
    setting: str
    layers: list[str]
    norms: list[float]
    loss: float
    params: int
    seconds: float

    @property
    def title(self) -> str:
        return net_title(self.net, self.residual)

    @property
    def first(self) -> float:
        return self.norms[0]

    @property
    def last(self) -> float:
        return self.norms[-2] if len(self.norms) > 1 else self.norms[-1]  # the last conv, not the fc


def layer_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, name: str = "", setting: str = "bn",
                    residual: bool = True) -> GradientProfile:
    """One forward and backward pass in training mode (as in the first step of training); the norms of
    the weight gradients tell how much learning signal reaches each layer."""
    layers = main_path_layers(net)
    net.train()
    net.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    seconds = time.perf_counter() - start
    norms = [float(m.weight.grad.norm()) if m.weight.grad is not None else 0.0 for _, m in layers]
    return GradientProfile(name, residual, setting, [n for n, _ in layers], norms, float(loss.detach()),
                           count_params(net), seconds)


def gradient_flow(nets=("cifar20", "cifar56"), settings=("none", "bn"), *, batch_size: int = 32,
                  image_size: int | None = None, seed: int = 0) -> list[GradientProfile]:
    """Per-layer gradient norms at initialisation for each net in ``nets``, plain and residual, under each
    setting, on the same batch of real images and the same seed. Settings are checked first (lists from the
    API deduplicated, and the job refused if it is over this server's budget: ``GradientFlowJob``)."""
    job = GradientFlowJob(nets, settings, batch_size, image_size, seed).validated()
    budget.admit(job)
    sizes, batch_size = job.sizes(), job.batch_size
    out = []
    for setting in job.lab_settings:
        for name in job.nets:
            x, y = real_batch(batch_size, sizes[name], seed)
            for residual in (True, False):
                net = lab_net(name, residual, setting=setting, seed=seed)
                out.append(layer_gradients(net, x, y, name=name, setting=setting, residual=residual))
    return out


def gradient_ratio(profiles: list[GradientProfile], net: str, setting: str) -> float:
    """First-layer gradient of the residual net over the plain net's (inf when the plain one is 0)."""
    by = {(p.residual): p for p in profiles if p.net == net and p.setting == setting}
    res, plain = by[True].first, by[False].first
    return math.inf if plain == 0 else res / plain


@dataclass(frozen=True)
class GradientFlowJob(LabJob):
    """``gradient_flow``'s settings. Nets are built and run one at a time (the previous one still alive while the
    next is built); one batch of the built-in shapes per size (and numpy's copies while it is drawn)."""

    nets: tuple = ("cifar20", "cifar56")
    lab_settings: tuple = ("none", "bn")
    batch_size: int = 32
    image_size: int | None = None
    seed: int = 0

    kind = "gradient_flow"
    knob, lowest, offer_key = "batch_size", 2, "budget.offer.batch_size"

    def validated(self) -> "GradientFlowJob":
        """Lists from the API deduplicated and capped, numbers in range."""
        nets = choices(self.nets, LAB_NETS, "networks")
        lab_settings = choices(self.lab_settings, tuple(SETTINGS), "settings")
        batch_size = whole(self.batch_size, 2, 256, "batch size")
        image_size = None if self.image_size is None else whole(self.image_size, 32, 256, "image size")
        return replace(self, nets=nets, lab_settings=lab_settings, batch_size=batch_size, image_size=image_size)

    def sizes(self) -> dict:
        """Each net's input size: the one asked for, else the net's own (``default_size``)."""
        return {n: self.image_size or default_size(n) for n in self.nets}

    def need(self) -> tuple[int, float]:
        sizes, batch = self.sizes(), self.batch_size
        mem, work, params = 0, 0.0, 0
        for setting in self.lab_settings:
            for name in self.nets:
                for residual in (True, False):
                    acts, p, w = lab_step(name, residual, setting, (16, 32, 64), sizes[name], batch)
                    mem, work, params = max(mem, acts + 8 * p), work + w, max(params, p)
        data = sum(max(batch, 8) * 3 * sizes[n] ** 2 * 4 * 3 for n in set(self.nets))
        return mem + 4 * params + data, work

    def what(self) -> Text:
        return Text("budget.lab.flow", n=len(self.nets), batch=self.batch_size)

    def otherwise(self) -> Text:
        return Text("budget.offer.shallower")

    def run(self, cancel=None):
        yield gradient_flow(self.nets, self.lab_settings, batch_size=self.batch_size, image_size=self.image_size,
                            seed=self.seed)
