"""A class experiment's time on this machine: every run of one seed of each class experiment
(``resnet.classroom.pool``), one after another as the server's one training slot runs them on a CPU, against the
goal that a class of thirty is done within 5 minutes on 2 cores. Printed per run: wall seconds, CPU seconds (the
process's, all threads: on a busy machine wall time is inflated, and with two threads so is CPU time, by threads
spinning for a core; ``--threads 1`` then measures the work itself: one core's seconds) and the plotted number;
per experiment the sums; and the load average when it started.

    python bench/pool_bench.py [--experiments bn_batch,depth,transfer] [--seeds 1] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import time

GOAL_S = 5 * 60


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", default="bn_batch,depth,transfer")
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own); 1 on a busy "
                    "machine measures the work itself, without threads spinning for a core")
    args = ap.parse_args()
    os.environ.setdefault("RESNET_ALLOW_DOWNLOAD", "0")
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)

    from resnet.classroom import EXPERIMENTS, run_to_result
    print(f"torch threads {torch.get_num_threads()}, cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    for name in args.experiments.split(","):
        exp = EXPERIMENTS[name]
        wall_sum = cpu_sum = 0.0
        for a in exp.runs(args.seeds):
            wall, cpu = time.perf_counter(), time.process_time()
            n = run_to_result(a)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            wall_sum, cpu_sum = wall_sum + wall, cpu_sum + cpu
            print(f"{name:9} {str(a.values):45} seed {a.seed}  wall {wall:6.1f} s  cpu {cpu:6.1f} s  "
                  f"{exp.metric} {n.get(exp.metric)}", flush=True)
        print(f"{name}: {len(exp.runs(args.seeds))} runs, wall {wall_sum:.0f} s, cpu {cpu_sum:.0f} s "
              f"(goal: the class within {GOAL_S} s on 2 cores; load average now {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
