"""The lesson's time on this machine: every step's run at lesson settings through a launched app (``python app.py``),
cold (the first press) and replayed (the next press, what the rest of a class gets), against the goal that a student
finishes the lesson alone in under 15 minutes on 2 cores. The reference, measured in the same run: ResNet-18's
forward pass on one 224 px image, so that the figures can be compared across machines.

    python bench/lesson_bench.py [--steps 1,3,9]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from load_bench import Server  # a server process on a free port, waited for until it answers

GOAL_S = 15 * 60


def forward_reference() -> float:
    import torch
    import torchvision
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", default="", help="comma-separated step numbers (default: all)")
    args = ap.parse_args()
    os.environ.setdefault("RESNET_ALLOW_DOWNLOAD", "0")
    from gradio_client import Client
    from resnet.lesson import STEPS

    chosen = [int(s) for s in args.steps.split(",") if s] or list(range(1, len(STEPS) + 1))
    reference = forward_reference()
    print(f"reference: ResNet-18 forward, 224 px, {reference * 1000:.0f} ms")
    server = Server({})
    rows = []
    try:
        client = Client(server.url, verbose=False)
        for number in chosen:
            step = STEPS[number - 1]
            answer = "1" if step.numeric else step.choices[0]
            t = time.perf_counter()
            client.predict(number, answer, api_name="/lesson_run")
            cold = time.perf_counter() - t
            t = time.perf_counter()
            client.predict(number, answer, api_name="/lesson_run")
            replay = time.perf_counter() - t
            rows.append((number, step.id, cold, replay))
            print(f"{number:>2} {step.id:<12} cold {cold:7.1f} s   replayed {replay:6.2f} s", flush=True)
    finally:
        server.close()
    cold = sum(r[2] for r in rows)
    replay = sum(r[3] for r in rows)
    print(f"sum: cold {cold:.0f} s ({cold / 60:.1f} min, {cold / GOAL_S:.2f} of the 15-minute goal; "
          f"{cold / reference:,.0f} reference forwards), replayed {replay:.1f} s ({replay / cold:.3f} of cold)")


if __name__ == "__main__":
    main()
