"""The job budget on the real server (``python app.py``, loopback only):

1. how long a refusal takes: every arch's fine-tune at the API's largest size, batch and epochs, and each lab
   at its largest settings, timed from the request to the server's answer (they are refused when the job asks
   to join the queue, before anything is loaded);
2. the largest fine-tune the budget admits on this machine (the setting the refusal offers, for ``--arch``),
   run for ``--seconds`` (its peak is in the first training steps) while the server's memory is sampled:
   peak RSS beside the budget's estimate for that run and the budget itself.

    python bench/budget_bench.py [--arch resnext101_32x8d] [--seconds 240]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import time

import httpx
from gradio_client import Client
from load_bench import Server, vm_hwm_mb

from resnet import ARCHS, budget
from resnet.errors import BudgetExceeded
from resnet.train.finetune import FinetuneConfig

ALL = ["all", "last", "head", "replace", "scratch"]
# Over the page's limits (the largest settings the page allows fit this budget on most machines, and would run).
LABS = {"gradient_flow": [["cifar20", "cifar56", "cifar110", "resnet18", "resnet34"], ["none", "bn"], 4096],
        "training_race": [100_000, 64, 0.05], "deep_network": [512, "bn"]}


def refusal_seconds(url: str, api: str, data: list) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    r = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=60)
    return time.perf_counter() - t0, r.status_code, r.text


def largest_admitted(arch: str):
    """The admitted one-epoch ``all`` run of ``arch`` with the largest estimated memory: per image size (largest
    first), the largest batch the budget admits."""
    best = None
    for size in range(512, 31, -32):
        lo, hi = 0, 256
        while lo < hi:  # the largest admitted batch at this size (admission is monotone in the batch size)
            mid = (lo + hi + 1) // 2
            try:
                budget.admit(FinetuneConfig(dataset="synthetic", arch=arch, strategies=("all",), epochs=1,
                                            image_size=size, batch_size=mid))
                lo = mid
            except BudgetExceeded:
                hi = mid - 1
        if lo:
            cfg = FinetuneConfig(dataset="synthetic", arch=arch, strategies=("all",), epochs=1, image_size=size,
                                 batch_size=lo)
            e = budget.admit(cfg)
            if best is None or e.memory > best[1].memory:
                best = (cfg, e)
            elif best is not None:
                break  # smaller images only get smaller from here
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnext101_32x8d")
    ap.add_argument("--seconds", type=float, default=240)
    args = ap.parse_args()
    # The budget as it is now, fixed for the server and this script alike (free memory moves while we measure).
    snapshot = str(budget.machine_budget().memory // 2**20)
    os.environ["RESNET_MEMORY_BUDGET_MB"] = snapshot
    server = Server({"RESNET_JOBS_PER_ADDRESS": "1000", "RESNET_MEMORY_BUDGET_MB": snapshot})
    try:
        idle = server.settled_rss_mb()
        print(f"budget here: {budget.machine_budget()}")
        print(f"server idle RSS {idle:.0f} MiB")
        times, offer = [], None
        for arch in ARCHS:
            s, status, text = refusal_seconds(server.url, "finetune", ["synthetic", None, ALL, arch, 100, 512, 256, 0])
            assert status == 422, (arch, status, text[:200])
            times.append(s)
            if arch == args.arch:
                offer = text
        for api, data in LABS.items():
            s, status, text = refusal_seconds(server.url, api, data)
            print(f"  {api} over its limits: HTTP {status} in {s * 1000:.0f} ms")
        print(f"fine-tune refusals, {len(times)} archs at 512 px, batch 256, 100 epochs: median "
              f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms")
        print("offer:", re.search(r'"message":\s*"([^"]*)"', offer).group(1))
        cfg, estimate = largest_admitted(args.arch)
        print(f"largest admitted: {args.arch}, all, {cfg.image_size} px, batch {cfg.batch_size}, 1 epoch: estimated "
              f"peak {estimate.memory / 2**20:.0f} MiB ({estimate.what}), work {estimate.work / 1e12:.1f} TMACs")
        batch, size = cfg.batch_size, cfg.image_size
        client = Client(server.url, verbose=False)
        job = client.submit("synthetic", None, ["all"], args.arch, 1, size, batch, 0, api_name="/finetune")
        peak, t0 = 0.0, time.perf_counter()
        while time.perf_counter() - t0 < args.seconds and not job.done():
            peak = max(peak, server.rss_mb())
            time.sleep(0.05)
        status = job.status().progress_data
        if job.done():
            try:
                job.result()
            except Exception as e:  # refused or failed: say so instead of printing a meaningless peak
                raise SystemExit(f"the run ended early: {e}")
        client.predict(api_name="/stop_finetune")
        hwm = vm_hwm_mb(server.proc.pid)
        print(f"after {time.perf_counter() - t0:.0f} s ({status[-1].desc if status else 'no progress yet'}): "
              f"peak RSS sampled {peak:.0f} MiB, VmHWM {hwm:.0f} MiB; above idle {hwm - idle:.0f} MiB = "
              f"{(hwm - idle) * 2**20 / estimate.memory:.2f}× the estimate")
        client.close()
    finally:
        server.close()


if __name__ == "__main__":
    main()
