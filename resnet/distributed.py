"""Data-parallel fine-tuning across processes: ``torchrun --nproc_per_node=N -m resnet finetune …``.

Each process holds a full copy of the network and sees its own shard of every epoch
(``DistributedSampler``); ``DistributedDataParallel`` averages gradients so all copies take the same
step. gloo on CPU, nccl on GPU. Only rank 0 prints, writes the JSON and saves models. Frozen parts are
not cached here: this path is for runs too big for one machine, where training everything dominates.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from . import device as devices
from .data import eval_transform, load_dataset, train_transform
from .finetune import _backbone_state, config_from_args
from .transfer import prepare, save_export


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


class Transformed(Dataset):
    """A split of ``(PIL image, label)`` with a transform applied on the fly."""

    def __init__(self, base: Dataset, transform):
        self.base, self.transform = base, transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i):
        image, label = self.base[i]
        return self.transform(image), label


def state_checksum(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer, to show that all ranks hold the same network."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def average_bn_statistics(module: torch.nn.Module) -> None:
    """Make BatchNorm's running mean and variance the average over ranks.

    Each rank normalises with its own shard's statistics, so their running averages drift apart; on
    CUDA SyncBatchNorm pools them every step, on CPU (where it is unavailable) we pool them per epoch.
    """
    world = dist.get_world_size()
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf.div_(world)


def _device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


@torch.no_grad()
def _evaluate(net, loader, dev, size: int) -> tuple[float, float]:
    """Loss and accuracy over the whole validation set, summed across ranks."""
    net.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=dev)
    for x, y in loader:
        x, y = devices.layout(x.to(dev), dev, size), y.to(dev)
        with devices.autocast(dev, size):
            logits = net(x)
        totals += torch.tensor([F.cross_entropy(logits.float(), y, reduction="sum").item(),
                                (logits.argmax(1) == y).sum().item(), len(y)], dtype=torch.float64, device=dev)
    dist.all_reduce(totals)
    return (totals[0] / totals[2]).item(), (totals[1] / totals[2]).item()


def run_cli(args) -> int:
    """The ``finetune`` command under torchrun: same settings, same kind of summary as one process."""
    dev = _device()
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        cfg = config_from_args(args)
        torch.manual_seed(cfg.seed)
        ds = load_dataset(cfg.dataset, seed=cfg.seed, image_size=cfg.image_size)
        train_set = Transformed(ds.train, train_transform(cfg.image_size))
        val_set = Transformed(ds.val, eval_transform(cfg.image_size))
        # Every rank builds the same network from the same seed; DDP also broadcasts rank 0's at the start.
        backbone_state, pretrained, weights_note = _backbone_state(cfg)
        per_rank_batch = max(1, cfg.batch_size // world)
        summaries = []
        for name in cfg.strategies:
            torch.manual_seed(cfg.seed)
            net = prepare(name, cfg.arch, len(ds.classes), backbone_state=backbone_state)
            if dev.type == "cuda":
                net.backbone = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net.backbone)
            net = devices.prepare(net, dev, cfg.image_size)
            trainable, total = net.param_counts()
            ddp = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
            sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed,
                                         drop_last=True)
            loader = DataLoader(train_set, batch_size=per_rank_batch, sampler=sampler, drop_last=True)
            val_loader = DataLoader(val_set, batch_size=64,
                                    sampler=DistributedSampler(val_set, num_replicas=world, rank=rank, shuffle=False))
            opt = torch.optim.AdamW(net.trainable_parameters(), lr=cfg.lr or net.strategy.lr, weight_decay=1e-4)
            scaler = devices.grad_scaler(dev)
            t0, best, history = time.perf_counter(), 0.0, []
            for epoch in range(1, cfg.epochs + 1):
                sampler.set_epoch(epoch)
                ddp.train()
                for x, y in loader:
                    x, y = devices.layout(x.to(dev), dev, cfg.image_size), y.to(dev)
                    with devices.autocast(dev, cfg.image_size):
                        loss = F.cross_entropy(ddp(x).float(), y)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(opt)
                    scaler.update()
                if dev.type != "cuda":
                    average_bn_statistics(net)
                val_loss, val_acc = _evaluate(net, val_loader, dev, cfg.image_size)
                best = max(best, val_acc)
                history.append({"epoch": epoch, "val_loss": val_loss, "val_acc": val_acc})
                if rank == 0:
                    print(f"[{name}] epoch {epoch}/{cfg.epochs}: val acc {val_acc:.1%}, loss {val_loss:.3f}",
                          file=sys.stderr)
            checksums = [None] * world
            dist.all_gather_object(checksums, state_checksum(net))
            summaries.append({"strategy": name, "pretrained": pretrained and net.strategy.pretrained,
                              "trainable_params": trainable, "total_params": total, "best_val_acc": best,
                              "final_val_acc": history[-1]["val_acc"], "seconds": time.perf_counter() - t0,
                              "history": history, "rank_checksums": checksums,
                              "ranks_identical": len(set(checksums)) == 1})
            if rank == 0 and args.save_dir:
                save_export(net.cpu(), Path(args.save_dir) / f"{cfg.arch}-{name}.pth", classes=ds.classes,
                            strategy=name, image_size=cfg.image_size, pretrained=summaries[-1]["pretrained"])
        if rank == 0:
            report = {"world_size": world, "backend": dist.get_backend(), "per_rank_batch": per_rank_batch,
                      "dataset": ds.to_dict(), "pretrained": pretrained, "weights": weights_note,
                      "strategies": summaries}
            for s in summaries:
                print(f"{s['strategy']:<8} best val {s['best_val_acc']:.1%}  final {s['final_val_acc']:.1%}  "
                      f"{s['seconds']:.1f} s  ranks identical: {s['ranks_identical']}")
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=2))
        return 0
    finally:
        dist.destroy_process_group()
