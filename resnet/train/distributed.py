"""Data-parallel fine-tuning across processes: ``torchrun --nproc_per_node=N -m resnet finetune …``.

Every process runs the single-process engine (``finetune.run``) with its ``Shard``: it decodes the data and
computes the frozen features as one process would, then takes its share of every epoch's batches
(``DistributedSampler``); ``DistributedDataParallel`` averages the gradients so all copies take the same step.
Precise BatchNorm runs on the same sample on every rank (rank 0's statistics are then broadcast), and each rank
validates its own rows of the validation set, none padded, the sums added: the accuracy is over exactly the
validation set. With one process the run is the single-process run, number for number. gloo on CPU, nccl on GPU;
only rank 0 prints, writes the JSON (the single-process schema) and saves models.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .finetune import run_cli as run_finetune_cli
from .engine import Shard


def launched_by_torchrun() -> bool:
    return dist.is_torchelastic_launched()


def _device() -> torch.device:
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def run_cli(args) -> int:
    """The ``finetune`` command under torchrun: same settings, same engine, same summary as one process."""
    dev = _device()
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    try:
        device = str(dev) if dev.type == "cuda" else None  # one GPU per process; on a CPU the run's own choice
        return run_finetune_cli(args, shard=Shard.from_process_group(), device=device)
    finally:
        dist.destroy_process_group()
