"""Feature maps and Grad-CAM against a plain forward pass, same model, same input, same run.

Feature extraction is one forward pass that keeps five tensors, so it should cost about 1× a forward;
Grad-CAM adds a forward plus a backward through the head only (avgpool → fc), also about 1×. The
tab reuses conv5_x from the feature pass, so a whole request costs about one forward.

    python bench/features_bench.py [--arch resnet18] [--repeats 10]
"""
import argparse
import statistics
import time

import torch

from resnet import build_model
from resnet.analysis.features import ALL_STAGES, feature_maps, grad_cam


def median_times(fns: dict, repeats: int) -> dict:
    """Round-robin (each repeat runs every function once), so load from other processes hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    model = build_model(args.arch).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 224, 224)

    def forward():
        with torch.inference_mode():
            model(x)

    def request():  # what the tab does: one feature pass, Grad-CAM on its conv5_x
        maps = feature_maps(model, x, stages=("conv2_x", "conv5_x"))
        grad_cam(model, x, layer4=maps["conv5_x"])

    rows = median_times({"plain forward": forward,
                         "feature_maps (5 stages)": lambda: feature_maps(model, x, ALL_STAGES),
                         "grad_cam (own forward)": lambda: grad_cam(model, x),
                         "tab request (features + CAM)": request}, args.repeats)
    base = rows["plain forward"]
    print(f"{args.arch}, 224 px, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, t in rows.items():
        print(f"  {name:30s} {t * 1e3:8.1f} ms   {t / base:5.2f}× forward")


if __name__ == "__main__":
    main()
