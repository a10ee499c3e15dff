"""The one training loop of the labs that train (the race, the BatchNorm batch run): several nets, each with its
own optimiser, trained on the very same mini-batches, so that their curves differ only by the nets."""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

from ...train.engine import Trainer


def sgd_trainer(net: nn.Module, lr: float, size: int) -> Trainer:
    """The engine's step with plain SGD: momentum 0.9, weight decay 1e-4, a constant learning rate."""
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, foreach=True)
    return Trainer(net, opt, size=size)


def train_together(trainers: dict, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int, every: int,
                   seed: int, smoothing: float, flip: bool = False, cancel=None) -> Iterator[tuple[int, dict]]:
    """Train every trainer for ``steps`` steps on batches of ``x``, ``y`` drawn in a seeded order (a new order each
    pass; ``flip``: each batch mirrored or not by the same seeded coin, for every net alike). Yields (step, each
    trainer's training loss smoothed with weight ``smoothing`` for the newest) every ``every`` steps and at the
    last; ``cancel()`` true stops it after any step."""
    ema = dict.fromkeys(trainers)
    gen = torch.Generator().manual_seed(seed)
    order, pos = torch.randperm(len(x), generator=gen), 0
    for step in range(1, steps + 1):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        xb, yb = x[idx], y[idx]
        if flip and torch.rand(1, generator=gen).item() < 0.5:
            xb = xb.flip(3)
        for key, trainer in trainers.items():
            trainer.model.train()
            loss = float(trainer.step(xb, yb)[0])
            loss = loss if math.isfinite(loss) else float("nan")
            ema[key] = loss if ema[key] is None else (1 - smoothing) * ema[key] + smoothing * loss
        if step % every == 0 or step == steps:
            yield step, dict(ema)
        if cancel is not None and cancel():
            return
