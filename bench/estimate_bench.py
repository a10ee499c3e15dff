"""The Fine-tune tab's time estimate against the run itself: for a preset (or given settings), the estimate
``resnet.train.estimate`` makes before Start (calibration included, and how long it took), then the real
``finetune.run``, part by part, and their ratio. Other processes on the machine move both; repeat to see by how much.

    python bench/estimate_bench.py [--preset quick|thorough] [--image-size N --epochs N --batch-size N
                                   --per-class N --strategies all,last,head,scratch] [--repeats 2]
    python bench/estimate_bench.py --pretrain [--image-size N --epochs N]    # the Pretrain section's estimate
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    from resnet.train.estimate import PRESETS, calibrate, estimate
    from resnet.train.finetune import FinetuneConfig, run
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    ap.add_argument("--arch")
    ap.add_argument("--strategies")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--per-class", type=int)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--pretrain", action="store_true", help="a pretraining (library defaults) instead of a fine-tune")
    args = ap.parse_args()
    if args.pretrain:
        return pretrain_bench(args)
    values = dict(PRESETS[args.preset])
    for key in ("arch", "epochs", "image_size", "batch_size", "per_class"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.strategies:
        values["strategies"] = args.strategies.split(",")
    values["lr"] = values.get("lr") or None
    cfg = FinetuneConfig(**values, allow_download=False).validated()
    print(f"settings: {values}  (load average {os.getloadavg()[0]:.1f})")
    t0 = time.perf_counter()
    cal = calibrate(cfg.arch, cfg.image_size, cfg.device)
    print(f"calibration: {time.perf_counter() - t0:.2f} s ({cal.device})")
    for i in range(args.repeats):
        e = estimate(cfg, cal)
        parts = {}
        last = None
        t0 = time.perf_counter()
        for ev in run(cfg):
            if ev.kind == "strategy_done":
                parts[ev.strategy] = ev.seconds
            last = ev
        real = time.perf_counter() - t0
        r = last.result
        parts = {"prepare+cache": real - sum(parts.values()), **parts}
        print(f"run {i + 1}: estimate {e.seconds:.1f} s, real {real:.1f} s (ratio {e.seconds / real:.2f}); "
              f"load average {os.getloadavg()[0]:.1f}")
        print("  estimated: " + ", ".join(f"{k} {v:.1f}" for k, v in e.parts.items()))
        print("  measured:  " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items())
              + f" (decode {r.decode_seconds:.1f}, cache {r.cache_seconds:.1f})")


def pretrain_bench(args) -> None:
    """The Pretrain section's estimate against a real pretraining into a temporary folder."""
    import tempfile
    from resnet.train.estimate import estimate_pretrain
    from resnet.train.pretrain import PretrainConfig, pretrain
    values = {k: getattr(args, k) for k in ("arch", "image_size", "epochs") if getattr(args, k) is not None}
    cfg = PretrainConfig(**values, folder=tempfile.mkdtemp(prefix="estimate_bench_")).validated()
    print(f"settings: {cfg.arch}, {cfg.image_size} px, {cfg.epochs} epochs  (load average {os.getloadavg()[0]:.1f})")
    for i in range(args.repeats):
        e = estimate_pretrain(cfg)
        t0 = time.perf_counter()
        for ev in pretrain(cfg.arch, image_size=cfg.image_size, epochs=cfg.epochs, folder=cfg.folder):
            pass
        real = time.perf_counter() - t0
        print(f"run {i + 1}: estimate {e.seconds:.1f} s, real {real:.1f} s (ratio {e.seconds / real:.2f}); "
              f"estimated parts: " + ", ".join(f"{k} {v:.1f}" for k, v in e.parts.items())
              + f"; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
