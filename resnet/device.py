"""Where to run: CUDA > MPS > CPU, and the mixed precision that pays off there."""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

from . import config


def pick_device(prefer: str | None = None) -> torch.device:
    """``RESNET_DEVICE`` or ``prefer`` wins; else the fastest device present."""
    name = prefer or config.get("RESNET_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


@functools.lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """Does this CPU do bf16 arithmetic in hardware (AMX or AVX512-BF16)? There, bf16 autocast makes a ResNet
    training step about twice as fast; elsewhere bf16 is emulated and slower than fp32.
    ``RESNET_CPU_BF16=1`` / ``0`` overrides the check."""
    forced = config.get("RESNET_CPU_BF16")
    if forced is not None:
        return forced
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


# On the CPU, bf16 pays only for convolutions over large maps: a ResNet-18 training step (AMX, 2 cores) runs
# 0.79× as fast as fp32 at 32 px, 1.02× at 64, 1.31× at 96, 1.61× at 128, 2.21× at 224.
CPU_BF16_MIN_SIZE = 96


def amp_dtype(device: torch.device, size: int | None = None) -> torch.dtype | None:
    """The mixed precision for *training* on inputs ``size`` pixels across (None: large): bf16 where the GPU
    supports it, else fp16 on CUDA; bf16 on a CPU with native bf16 for inputs of ``CPU_BF16_MIN_SIZE`` px or
    more; None (full fp32) elsewhere. Inference for the classifier and feature maps stays fp32."""
    if device.type == "cpu":
        big = size is None or size >= CPU_BF16_MIN_SIZE
        return torch.bfloat16 if big and cpu_bf16_native() else None
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, size: int | None = None):
    """An autocast context for ``device`` and inputs ``size`` px across (a no-op where mixed precision is off)."""
    dtype = amp_dtype(device, size)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """fp16 needs loss scaling; bf16 and fp32 do not (the scaler is then disabled)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)


def prepare(model: torch.nn.Module, device: torch.device, size: int | None = None, *,
            amp: bool = True) -> torch.nn.Module:
    """Move to ``device``; channels_last where it pays (``uses_channels_last``); on CUDA, cuDNN autotuning.
    ``amp=False``: for fp32 inference (the classifier), where the CPU keeps the default layout."""
    model = model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if uses_channels_last(device, size, amp=amp):
        model = model.to(memory_format=torch.channels_last)
    return model


def uses_channels_last(device: torch.device, size: int | None = None, *, amp: bool = True) -> bool:
    """channels_last memory layout: on CUDA (tensor cores), and on a CPU running bf16, where oneDNN's bf16
    convolutions are faster on it (ResNet-18 fine-tuning at 128 px: 29–30 s instead of 36–37 s). fp32 on the
    CPU stays in the default layout, which is faster there."""
    return device.type == "cuda" or (amp and device.type == "cpu" and amp_dtype(device, size) is not None)


def layout(x: torch.Tensor, device: torch.device, size: int | None = None) -> torch.Tensor:
    """A batch of images (or feature maps) in the layout ``prepare`` gave the model."""
    if x.dim() == 4 and uses_channels_last(device, size):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def describe(device: torch.device, size: int | None = None) -> str:
    """A one-line description for the UI: device name, and the precision of inference and of training."""
    dtype = amp_dtype(device, size)
    training = {None: "fp32", torch.bfloat16: "bf16 mixed", torch.float16: "fp16 mixed"}[dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type.upper()
    if device.type == "cpu":
        n = torch.get_num_threads()
        name += f" ({n} thread{'s' if n != 1 else ''} per job)"
    return f"{name}, fp32 inference, {training} training"
