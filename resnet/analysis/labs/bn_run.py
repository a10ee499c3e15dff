"""Lab 3b: the batch-size rule, trained. BatchNorm's statistics from 2 images or from 32, everything else the same:
the same ResNet-20 on the same batches, only the number of images each BatchNorm layer normalises over differs."""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace
from typing import Iterator

import torch
from torch import nn

from ... import budget
from ...checks import whole
from ...data import SHAPES
from ...errors import BadSetting
from ...i18n import error
from ...train.engine import precise_bn
from .data import shapes_dataset
from .loop import sgd_trainer, train_together
from .nets import lab_net
from .race import RACE_WIDTHS, TrainingLabJob, race_estimate

class GroupBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training-mode mean and variance come from groups of ``group`` images of the batch, each
    group normalised with its own statistics: as if the batch size were ``group``, while the gradient step still
    averages over the whole batch. With ``group`` ≥ the batch it is ``nn.BatchNorm2d`` exactly. The running
    averages take one update a step (the groups' mean statistics), like the ordinary layer's."""

    group: int = 0  # 0: the whole batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.group
        if not self.training or not g or g >= n or n % g:
            return super().forward(x)
        xs = x.view(n // g, g, c, h, w)
        mean = xs.mean(dim=(1, 3, 4), keepdim=True)
        var = xs.var(dim=(1, 3, 4), unbiased=False, keepdim=True)
        y = ((xs - mean) / torch.sqrt(var + self.eps)).view(n, c, h, w)
        y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        with torch.no_grad():
            m = g * h * w
            momentum = self.momentum if self.momentum is not None else 1.0 / (int(self.num_batches_tracked) + 1)
            self.running_mean.lerp_(mean.mean(0).flatten(), momentum)
            self.running_var.lerp_(var.mean(0).flatten() * m / max(m - 1, 1), momentum)
            self.num_batches_tracked += 1
        return y


def group_batchnorm(net: nn.Module, group: int) -> nn.Module:
    """Turn every ``nn.BatchNorm2d`` of ``net`` into a ``GroupBatchNorm`` computing its statistics over ``group``
    images (in place: the same parameters and buffers)."""
    for m in net.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GroupBatchNorm
            m.group = int(group)
    return net


BN_RUN_GROUPS = (2, 32)  # images BatchNorm's mean and variance come from
BN_RUN_BATCH = 32        # images in each training step (the gradient's batch), for both nets
BN_RUN_IMAGES = 512      # built-in shapes trained on
BN_RUN_VAL = 256         # held-out shapes for validation accuracy


@dataclass
class BNRunUpdate:
    """The batch-size race so far: per BN batch size, the smoothed training loss and the validation accuracy
    in eval mode at each recorded step."""

    step: int
    steps: int
    seconds: float
    recorded_steps: list[int]
    loss: dict[int, list[float]]
    val_acc: dict[int, list[float]]
    val_count: int
    chance: float
    done: bool = False


def _settle_statistics(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy of ``net`` whose running statistics are the whole training set's, from the weights as they are now
    (the statistics a BatchNorm layer would see with a batch as large as the set): eval mode then judges the
    weights, not how far the running averages trail them."""
    twin = copy.deepcopy(net)
    for m in twin.modules():
        if isinstance(m, GroupBatchNorm):
            m.group = 0
    precise_bn(twin, x, batch=len(x))
    return twin.eval()


def bn_batch_run(steps: int = 80, *, groups=BN_RUN_GROUPS, batch_size: int = BN_RUN_BATCH, lr: float = 0.05,
                 every: int = 8, seed: int = 0, n_images: int = BN_RUN_IMAGES, widths=RACE_WIDTHS,
                 cancel=None) -> Iterator[BNRunUpdate]:
    """The note's batch-size rule, trained: the same ResNet-20 (same seed) learns the built-in shapes on the very
    same batches of ``batch_size`` images with the same SGD steps; only the number of images each BatchNorm layer
    takes its mean and variance from differs (``groups``: 2 as with a batch size of 2, 32 as with 32). Every
    ``every`` steps each net is evaluated in eval mode on held-out shapes, its running statistics first
    re-estimated over the training set. Checked first against this server's budget."""
    job = BNBatchRunJob(steps, groups, batch_size, lr, every, seed, n_images, widths).validated()
    budget.admit(job)
    steps, groups = job.steps, job.groups
    x, y = shapes_dataset(job.n_images, 32, seed)
    xv, yv = shapes_dataset(BN_RUN_VAL, 32, seed + 1000)  # other pictures of the same classes
    runners = {g: sgd_trainer(group_batchnorm(lab_net("cifar20", True, seed=seed, widths=widths), g).train(), lr, 32)
               for g in groups}
    loss = {g: [] for g in groups}
    acc = {g: [] for g in groups}
    recorded: list[int] = []
    start = time.perf_counter()
    for step, ema in train_together(runners, x, y, steps=steps, batch_size=job.batch_size, every=job.every,
                                    seed=seed, smoothing=0.2, cancel=cancel):
        recorded.append(step)
        for g, trainer in runners.items():
            loss[g].append(ema[g])
            with torch.no_grad():
                pred = _settle_statistics(trainer.model, x[:BN_RUN_VAL])(xv).argmax(1)
            acc[g].append(float((pred == yv).float().mean()))
        yield BNRunUpdate(step, steps, time.perf_counter() - start, list(recorded),
                          {g: list(v) for g, v in loss.items()}, {g: list(v) for g, v in acc.items()},
                          len(yv), 1 / len(SHAPES), done=step == steps)


@dataclass(frozen=True)
class BNBatchRunJob(TrainingLabJob):
    """``bn_batch_run``'s settings: one ResNet-20 per group size, all trained on the same batches, each evaluated
    on the held-out shapes."""

    steps: int = 80
    groups: tuple = BN_RUN_GROUPS
    batch_size: int = BN_RUN_BATCH
    lr: float = 0.05
    every: int = 8
    seed: int = 0
    n_images: int = BN_RUN_IMAGES
    widths: tuple = RACE_WIDTHS

    kind = "bn_batch_run"
    max_steps = 2000

    def validated(self) -> "BNBatchRunJob":
        """Numbers in range; one to four group sizes, each at most the batch, duplicates collapsed."""
        steps, batch_size, n_images = self.checked_sizes()
        if not isinstance(self.groups, (list, tuple)) or not 1 <= len(self.groups) <= 4:
            raise error(BadSetting, "budget.race.pairs")
        groups = tuple(dict.fromkeys(whole(g, 2, batch_size, "batch size") for g in self.groups))
        return replace(self, steps=steps, batch_size=batch_size, groups=groups, n_images=n_images,
                       every=whole(self.every, 1, 5000, "recording interval"), widths=tuple(self.widths))

    def need(self) -> tuple[int, float]:
        """Evaluation every 8 steps: a pass of 256 training images (the set's statistics), then 256 held-out ones,
        no backward pass: about 0.7 of those 8 steps' work again at a batch of 32."""
        nets = [("cifar20", True)] * len(self.groups)
        memory, work = race_estimate(self.steps, self.batch_size, nets, self.n_images + 512, self.widths)
        return memory, 1.7 * work

    def run(self, cancel=None) -> Iterator[BNRunUpdate]:
        return bn_batch_run(self.steps, groups=self.groups, batch_size=self.batch_size, lr=self.lr, every=self.every,
                            seed=self.seed, n_images=self.n_images, widths=self.widths, cancel=cancel)
