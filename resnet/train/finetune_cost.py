"""A fine-tune's peak memory and work, phase by phase, as ``finetune.run`` really runs it, from the per-image counts
of ``resnet.profile`` (see ``resnet.budget`` for how they are counted and checked against this machine).

Alive for the whole run: the data set's own images (synthetic), the decoded uint8 squares, the normalised
validation images, the seeded BatchNorm sample, the feature cache, the 1000-class backbone state, and each finished
strategy's model (``keep_models``). On top, the largest of: loading the weights (state, model and file), stacking
the decoded images (the list and the stack), the one-off cache pass (frozen net at ``EVAL_BATCH``, the feature lists
and their concatenation), and each strategy's training (its network, gradients, AdamW state and autocast copies,
one step's activations or an evaluation pass at ``EVAL_BATCH``, whichever is larger).
"""
from __future__ import annotations

import torch

from ..job import Cost
from ..models.transfer import STRATEGIES
from ..profile import ADAM_BYTES, TRANSIENT, Profile, act_bytes, resnet_profile
from .cache_plan import cache_plan, cache_row_bytes
from .engine import BN_IMAGES, EVAL_BATCH

FROZEN_TO_LAYER3 = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
LAST_PART = ("layer4", "avgpool", "fc")


def in_memory_bytes(cfg, n: int) -> int:
    """The data set's own copy in memory: the synthetic set's images (files on disk are read as needed)."""
    from ..data import ImageSet
    ds = cfg.dataset
    if isinstance(ds, ImageSet):
        base = getattr(ds.train, "dataset", ds.train)
        images = getattr(base, "images", None)
        return sum(im.size[0] * im.size[1] * len(im.getbands()) for im in images) if images else 0
    return n * cfg.image_size ** 2 * 3 if str(ds).strip() == "synthetic" else 0


def finetune_cost(cfg, n_train: int, n_val: int, device: torch.device, profile: Profile | None = None) -> Cost:
    """Peak memory and total work of ``finetune.run(cfg)`` (a validated ``FinetuneConfig``) on ``n_train`` and
    ``n_val`` images (0 and 0: not known yet, only what does not depend on the data set counts); ``profile``: the
    per-image counts to use instead of ``cfg.arch``'s at ``cfg.image_size`` (a guess scaled from another size)."""
    on_gpu = device.type != "cpu"
    size = cfg.image_size
    prof = profile or resnet_profile(cfg.arch, size)
    params = prof.total("params")
    rows = n_train * (1 + cfg.augmented_views) + n_val
    resized = round(size / 0.875)  # resnet.preprocess.recipe(size).resize
    decoded, val_x = (n_train + n_val) * 3 * resized * resized, n_val * 3 * size * size * 4
    row_bytes = cache_row_bytes(prof)
    points, uncached, _ = cache_plan(cfg, row_bytes, rows)
    cache = rows * sum(row_bytes[p] for p in points)
    cached = {n for n in cfg.strategies if STRATEGIES[n].cache_point in points and n not in uncached}
    bn_x = min(BN_IMAGES, n_train) * 3 * size * size * 4 if set(cfg.strategies) - cached else 0
    pretrained = any(STRATEGIES[x].pretrained for x in cfg.strategies)
    host = in_memory_bytes(cfg, n_train + n_val) + decoded + val_x + bn_x + (0 if on_gpu else cache) \
        + (4 * params if pretrained else 0)
    amp_copy = 2 * params if act_bytes(device, size) == 2 else 0

    phases = {"loading the weights": (8 * params, 0), "stacking the decoded images": (decoded, 0)}
    work = 0.0
    if points:
        deepest = FROZEN_TO_LAYER3 if points == {"conv4_x"} else tuple(prof.params)
        batch_set = EVAL_BATCH * (TRANSIENT * prof.total("widest", deepest) * act_bytes(device, size)
                                  + 2 * 3 * size * size * 4)
        frozen = 4 * params + amp_copy + batch_set + cache  # the net, one batch, the feature lists before torch.cat
        phases["the feature cache pass"] = (0, frozen) if on_gpu else (frozen, 0)
        work += rows * prof.total("macs", None if points - {"conv4_x"} else FROZEN_TO_LAYER3)
    step_max = 0
    for k, name in enumerate(cfg.strategies):
        step, strategy_work = _training(cfg, name, name in cached, prof, device, n_train, n_val, amp_copy)
        kept = 4 * params * k if cfg.keep_models else 0  # finished strategies' models stay (on the CPU)
        phases[f"training '{name}'"] = (kept, step) if on_gpu else (kept + step, 0)
        step_max, work = max(step_max, step), work + strategy_work
    what = max(phases, key=lambda k: sum(phases[k]))
    host_peak = host + max(h for h, _ in phases.values())
    dev_peak = (cache if on_gpu else 0) + max(d for _, d in phases.values())
    data = decoded + max(decoded, val_x + bn_x + 2 * cache)  # the list and its stack; later the features and their cat
    return Cost(dev_peak if on_gpu else host_peak, host_peak, work, step_max, data, what)


def _training(cfg, name: str, on_cache: bool, prof: Profile, device: torch.device, n_train: int, n_val: int,
              amp_copy: int) -> tuple[int, float]:
    """(bytes of one training step, multiply-adds of every epoch) of strategy ``name``, fed cached features when
    ``on_cache``, else images through the whole network (its frozen part recomputed every step)."""
    point, size, batch = STRATEGIES[name].cache_point, cfg.image_size, cfg.batch_size
    if point is None:
        trained, fed = tuple(prof.params), size
    elif point == "conv4_x":
        trained, fed = LAST_PART, max(1, size // 16)
    else:
        trained, fed = ("fc",), 1
    bytes_per = act_bytes(device, fed if on_cache else size)
    trained_params = prof.total("params", trained) if point != "fc" else prof.params["fc"]
    activations = batch * prof.total("saved", trained) * bytes_per
    widest = prof.total("widest", trained if on_cache else tuple(prof.params))
    passes = max(batch, EVAL_BATCH) * TRANSIENT * widest * bytes_per
    images_in = 0 if on_cache else 2 * batch * 3 * size * size * 4
    step = 4 * prof.total("params") + (ADAM_BYTES - 4) * trained_params + (amp_copy if bytes_per == 2 else 0) \
        + activations + passes + images_in
    macs_full, macs_trained = prof.total("macs"), prof.total("macs", trained)
    recomputed = 0 if on_cache else macs_full - macs_trained
    views = 1 + cfg.augmented_views
    per_epoch = n_train * (views if on_cache else 1) * (3 * macs_trained + recomputed) \
        + (n_val + min(BN_IMAGES, n_train)) * (macs_trained if on_cache else macs_full)
    return step, cfg.epochs * per_epoch
