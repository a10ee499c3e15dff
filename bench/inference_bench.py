"""Our forward pass against torchvision's, same weights, same input, same run. Goal: ratio ≤ 1.05.

    python bench/inference_bench.py [--repeats 10]
"""
import argparse
import time

import torch
import torchvision

import resnet


def best_time(model, x, repeats: int) -> float:
    """Best of ``repeats`` after warm-up: the least noisy estimate on a shared 2-core machine."""
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--archs", default="resnet18,resnet50")
    ap.add_argument("--batches", default="1,16")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'arch':<10} {'batch':>5} {'torchvision ms':>15} {'ours ms':>9} {'ratio':>6}")
    for arch in args.archs.split(","):
        ref = torchvision.models.get_model(arch).eval()
        ours = resnet.build_model(arch).eval()
        ours.load_state_dict(ref.state_dict())
        for b in map(int, args.batches.split(",")):
            x = torch.randn(b, 3, 224, 224)
            # Interleave to share any drift in machine load between the two.
            t_ref, t_ours = [], []
            for _ in range(3):
                t_ref.append(best_time(ref, x, args.repeats // 3 + 1))
                t_ours.append(best_time(ours, x, args.repeats // 3 + 1))
            r, o = min(t_ref), min(t_ours)
            print(f"{arch:<10} {b:>5} {r * 1e3:>15.1f} {o * 1e3:>9.1f} {o / r:>6.3f}")


if __name__ == "__main__":
    main()
