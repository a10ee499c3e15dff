"""Which pretraining recipe makes transfer reliable? Each recipe is pretrained with several seeds (each in a weights
folder of its own), then the quick comparison (all, last, head, scratch at 10 images per class) runs from each
backbone with several fine-tune seeds. One JSON line per (recipe, seed): the source accuracy epoch by epoch, the
four accuracies and the margins over scratch, and the seconds.

    python bench/source_sweep.py --recipes '{"base": {}, "fresh": {"fresh": true}}' --seeds 0,1 --workers 4

A recipe is a dict of ``PretrainConfig`` fields over the library's defaults. Jobs run in worker processes (on a GPU
they share it); ``--deadline`` seconds after the start no new job begins, so a time-boxed run still reports.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time


def job(args) -> dict:
    name, recipe, seed, ft_seeds, size, threads = args
    import torch
    torch.set_num_threads(threads)
    folder = tempfile.mkdtemp(prefix=f"sweep_{name}_{seed}_")
    os.environ.update(RESNET_WEIGHTS_DIR=folder, RESNET_ALLOW_DOWNLOAD="0", TORCH_HOME=os.path.join(folder, "hub"))
    from resnet.train.finetune import FinetuneConfig, run
    from resnet.train.pretrain import pretrain
    t0 = time.perf_counter()
    curve = []
    for ev in pretrain(**{"arch": "resnet18", **recipe, "seed": seed}):
        if ev.kind == "epoch":
            curve.append(round(ev.val_acc, 3))
    out = {"recipe": name, "settings": recipe, "seed": seed, "source_curve": curve,
           "pretrain_s": round(time.perf_counter() - t0, 1), "device": ev.result.device, "finetune": []}
    for fs in ft_seeds:
        t1 = time.perf_counter()
        for ev in run(FinetuneConfig(strategies="all,last,head,scratch", epochs=20, image_size=size, batch_size=10,
                                     per_class=10, seed=fs, allow_download=False)):
            pass
        acc = {s.strategy: round(s.best_val_acc, 4) for s in ev.result.summaries}
        out["finetune"].append({"seed": fs, "acc": acc, "source": ev.result.source,
                                "last_margin": round(acc["last"] - acc["scratch"], 4),
                                "head_margin": round(acc["head"] - acc["scratch"], 4),
                                "seconds": round(time.perf_counter() - t1, 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", required=True, help="JSON: {name: {PretrainConfig field: value}}, or @file")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--finetune-seeds", default="0,1")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads per worker")
    ap.add_argument("--deadline", type=float, default=1e9, help="seconds after which no new job starts")
    ap.add_argument("--out", default=None, help="append JSON lines here as well")
    args = ap.parse_args()
    text = open(args.recipes[1:]).read() if args.recipes.startswith("@") else args.recipes
    recipes = json.loads(text)
    from resnet.train.pretrain import DEFAULTS
    jobs = [(name, r, int(s), [int(f) for f in args.finetune_seeds.split(",")],
             r.get("image_size", DEFAULTS["image_size"]), args.threads)
            for s in args.seeds.split(",") for name, r in recipes.items()]
    start = time.perf_counter()
    ctx = mp.get_context("spawn")
    with ctx.Pool(args.workers, maxtasksperchild=1) as pool:
        pending = []
        for j in jobs:
            pending.append(pool.apply_async(job, (j,)))
        for p, j in zip(pending, jobs):
            left = args.deadline - (time.perf_counter() - start)
            try:
                line = json.dumps(p.get(timeout=max(1.0, left)))
            except mp.TimeoutError:
                print(json.dumps({"recipe": j[0], "seed": j[2], "timed_out": True}), flush=True)
                continue
            except Exception as exc:  # a recipe that fails is reported, the others go on
                line = json.dumps({"recipe": j[0], "seed": j[2], "error": repr(exc)})
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")
        pool.terminate()
    print(f"# {len(jobs)} jobs, {time.perf_counter() - start:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
