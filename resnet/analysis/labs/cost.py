"""What a lab network keeps, and its multiply-adds, counted on the meta device (``resnet.profile.count``): the
numbers each lab job's ``cost()`` scales by its batch and steps."""
from __future__ import annotations

from functools import lru_cache

import torch

from ...profile import META_LOCK, TRANSIENT, Profile, count
from .nets import CIFAR_NETS, SETTINGS, CifarResNet, lab_net, strip_batchnorm


@lru_cache(maxsize=256)
def lab_profile(name: str, residual: bool, setting: str, widths: tuple, size: int) -> Profile:
    """``count`` for ``lab_net``. A CIFAR net of n blocks per stage counts exactly what one of one block does plus
    n − 1 times the difference to two blocks (every further block is the same): ResNet-1202 is counted in
    milliseconds instead of the seconds a 1202-layer meta pass takes."""
    if name not in CIFAR_NETS:
        with META_LOCK:
            return count(lab_net(name, residual, setting=setting, widths=widths, device="meta"), size)

    one, two = (cifar_profile(n, residual, setting, widths, size) for n in (1, 2))
    k = CIFAR_NETS[name] - 1
    grow = lambda a, b: {p: a[p] + k * (b[p] - a[p]) for p in a}  # noqa: E731
    return Profile(grow(one.saved, two.saved), dict(two.widest), grow(one.macs, two.macs),
                   grow(one.params, two.params), dict(two.out))


@lru_cache(maxsize=64)
def cifar_profile(n: int, residual: bool, setting: str, widths: tuple, size: int) -> Profile:
    """``count`` for a CIFAR net of ``n`` blocks per stage."""
    with torch.device("meta"):
        net = CifarResNet(n, residual, 10, widths)
    if not SETTINGS[setting].batchnorm:
        strip_batchnorm(net)
    with META_LOCK:
        return count(net, size)


def lab_step(name, residual, setting, widths, size, batch) -> tuple[int, int, float]:
    """(one step's memory without parameters, parameters, multiply-adds of forward + backward) of a lab net, fp32."""
    p = lab_profile(name, residual, setting, tuple(widths), size)
    acts = batch * (p.total("saved") + TRANSIENT * p.total("widest")) * 4 + 2 * batch * 3 * size * size * 4
    return acts, p.total("params"), 3.0 * batch * p.total("macs")
