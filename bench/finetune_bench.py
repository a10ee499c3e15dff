"""Fine-tuning speed: each strategy with and without the frozen-feature cache, in one run; then the goal check.

    python bench/finetune_bench.py [--epochs 5] [--image-size 128] [--images 400] [--strategies all,last,head,replace]
                                   [--goal-only] [--fp32-reference] [--skip-uncached]

Goal (2 CPU cores): all,last,head on the synthetic set, ResNet-18 at 128 px, ~300 training images, 5 epochs
each, finishes in ≤ 40 s in total (decode + shared cache + training), and a ``head`` epoch is ≥ 20× faster
than an ``all`` epoch. Weights: a seeded random checkpoint stands in for ImageNet's (speed does not depend on
the values), unless --weights names a real one.
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch

from resnet.data import synthetic
from resnet.train.finetune import FinetuneConfig, run
from resnet.models.transfer import STRATEGIES


def timed_run(cfg: FinetuneConfig):
    t = time.perf_counter()
    for ev in run(cfg):
        pass
    return ev.result, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=400, help="synthetic images (a quarter held out for validation)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--strategies", default="all,last,head,replace")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--skip-uncached", action="store_true")
    ap.add_argument("--goal-only", action="store_true", help="only the all,last,head goal run")
    ap.add_argument("--fp32-reference", action="store_true",
                    help="also run the goal in fp32 (RESNET_CPU_BF16=0) and print the speed-up of bf16")
    args = ap.parse_args()
    weights = args.weights
    if weights is None:
        import torchvision
        torch.manual_seed(0)
        weights = str(Path(tempfile.mkdtemp()) / "resnet18-random.pth")
        torch.save(torchvision.models.resnet18().state_dict(), weights)
    ds = synthetic(args.images, image_size=args.image_size, seed=0)
    common = dict(dataset=ds, image_size=args.image_size, epochs=args.epochs, batch_size=args.batch_size,
                  weights=weights, allow_download=False)
    names = args.strategies.split(",")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(ds.train)} train / {len(ds.val)} val "
          f"images at {args.image_size} px, {args.epochs} epochs, batch {args.batch_size}")

    # 1. The goal: all,last,head together, cached, timed end to end.
    goal, goal_s = timed_run(FinetuneConfig(strategies=("all", "last", "head"), **common))
    per_epoch = {s.strategy: s.seconds_per_epoch for s in goal.summaries}
    print(f"\nall,last,head with the cache: {goal_s:.1f} s in total (goal ≤ 40 s): decode {goal.decode_seconds:.1f} s, "
          f"shared cache {goal.cache_seconds:.1f} s, "
          + ", ".join(f"{s.strategy} {s.seconds:.1f} s" for s in goal.summaries))
    ratio = per_epoch["all"] / per_epoch["head"]
    print(f"epoch time: all {per_epoch['all']:.2f} s, last {per_epoch['last']:.2f} s, head {per_epoch['head']:.4f} s; "
          f"head epochs are {ratio:,.0f}× faster than all epochs (goal ≥ 20×)")

    if args.fp32_reference:
        import os

        from resnet import device as devices
        saved = os.environ.get("RESNET_CPU_BF16")
        os.environ["RESNET_CPU_BF16"] = "0"
        devices.cpu_bf16_native.cache_clear()
        try:
            ref, ref_s = timed_run(FinetuneConfig(strategies=("all", "last", "head"), **common))
        finally:
            if saved is None:
                del os.environ["RESNET_CPU_BF16"]
            else:
                os.environ["RESNET_CPU_BF16"] = saved
            devices.cpu_bf16_native.cache_clear()
        print(f"the same in fp32: {ref_s:.1f} s (" + ", ".join(f"{s.strategy} {s.seconds:.1f} s" for s in ref.summaries)
              + f"); this run ({goal.device}) is {ref_s / goal_s:.2f}× as fast")
    if args.goal_only:
        return
    # 2. Each strategy with and without the cache.
    print(f"\n{'strategy':<9} {'cached s/epoch':>15} {'recomputed s/epoch':>19} {'ratio':>7}  (cache pass, shared)")
    cached, _ = timed_run(FinetuneConfig(strategies=tuple(names), **common))
    rows = {s.strategy: s for s in cached.summaries}
    for name in names:
        c = rows[name].seconds_per_epoch
        if not STRATEGIES[name].cache_point:
            print(f"{name:<9} {c:>15.3f} {'(nothing frozen)':>19} {'1':>7}")
            continue
        if args.skip_uncached:
            continue
        un, _ = timed_run(FinetuneConfig(strategies=(name,), cache_features=False, **common))
        u = un.summaries[0].seconds_per_epoch
        print(f"{name:<9} {c:>15.3f} {u:>19.3f} {u / c:>7.1f}×")
    print(f"shared cache pass for {', '.join(n for n in names if STRATEGIES[n].cache_point)}: "
          f"{cached.cache_seconds:.1f} s (once per run)")


if __name__ == "__main__":
    main()
