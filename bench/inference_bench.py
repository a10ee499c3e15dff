"""Our forward pass against torchvision's, same weights, same input, same run. Goal: ratio ≤ 1.05.

    python bench/inference_bench.py [--repeats 10] [--device cuda] [--bf16]

On a GPU each time is taken between synchronisations; ``--bf16`` runs both under bf16 autocast (channels_last),
as training does there.
"""
import argparse
import time

import torch
import torchvision

import resnet


def best_time(model, x, repeats: int, amp=None) -> float:
    """Best of ``repeats`` after warm-up: the least noisy estimate on a shared 2-core machine."""
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    with torch.inference_mode(), torch.autocast(x.device.type, amp, enabled=amp is not None):
        for _ in range(3):
            model(x)
        times = []
        for _ in range(repeats):
            sync()
            t = time.perf_counter()
            model(x)
            sync()
            times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--archs", default="resnet18,resnet50")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev, amp = torch.device(args.device), torch.bfloat16 if args.bf16 else None
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {where}, {'bf16 autocast' if amp else 'fp32'}")
    print(f"{'arch':<10} {'batch':>5} {'torchvision ms':>15} {'ours ms':>9} {'ratio':>6}")
    for arch in args.archs.split(","):
        ref = torchvision.models.get_model(arch).eval()
        ours = resnet.build_model(arch).eval()
        ours.load_state_dict(ref.state_dict())
        fmt = torch.channels_last if amp else torch.contiguous_format
        ref, ours = ref.to(dev, memory_format=fmt), ours.to(dev, memory_format=fmt)
        for b in map(int, args.batches.split(",")):
            x = torch.randn(b, 3, 224, 224, device=dev).contiguous(memory_format=fmt)
            # Interleave to share any drift in machine load between the two.
            t_ref, t_ours = [], []
            for _ in range(3):
                t_ref.append(best_time(ref, x, args.repeats // 3 + 1, amp))
                t_ours.append(best_time(ours, x, args.repeats // 3 + 1, amp))
            r, o = min(t_ref), min(t_ours)
            print(f"{arch:<10} {b:>5} {r * 1e3:>15.1f} {o * 1e3:>9.1f} {o / r:>6.3f}")


if __name__ == "__main__":
    main()
