"""What the shared pass of the frozen network caches: one decision that the run (``finetune_run``), its memory
(``finetune_cost``) and its time (``estimate``) all follow."""
from __future__ import annotations

from ..models.transfer import STRATEGIES


def cache_row_bytes(prof) -> dict:
    """Bytes of one image's row in each of the engine's feature caches (fp32), from a ``profile.Profile``."""
    return {"conv4_x": prof.out["layer3"] * 4, "avgpool": prof.out["avgpool"] * 4, "fc": prof.out["fc"] * 4}


def cache_plan(cfg, row_bytes: dict, rows: int) -> tuple[set, set, float]:
    """(points the shared pass computes, strategies that recompute their frozen part instead, MiB of the cache
    as asked): ``last`` caches conv4_x's whole feature map, which can be large at big image sizes, so over
    ``cfg.cache_mb`` it recomputes instead. The memory and time estimates follow this same plan."""
    points = {STRATEGIES[n].cache_point for n in cfg.strategies if STRATEGIES[n].cache_point and cfg.cache_features}
    total_mb = sum(row_bytes[p] for p in points) * rows / 2**20
    last = STRATEGIES["last"].cache_point
    if last in points and total_mb > cfg.cache_mb:
        return points - {last}, {"last"}, total_mb
    return points, set(), total_mb
