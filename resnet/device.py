"""Where to run: CUDA > MPS > CPU, and the mixed precision that pays off there."""
from __future__ import annotations

import contextlib
import os

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """``RESNET_DEVICE`` or ``prefer`` wins; else the fastest device present."""
    name = prefer or os.environ.get("RESNET_DEVICE")
    if name:
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16 on CUDA; None (full fp32) on CPU, where it rarely helps."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device):
    """An autocast context for ``device`` (a no-op where mixed precision is off)."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """fp16 needs loss scaling; bf16 and fp32 do not (the scaler is then disabled)."""
    return torch.amp.GradScaler(device.type, enabled=amp_dtype(device) == torch.float16)


def prepare(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Move to ``device``; on CUDA use channels_last (faster convs on tensor cores) and cuDNN autotuning."""
    model = model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=torch.channels_last)
    return model


def describe(device: torch.device) -> str:
    """A one-line description for the UI: device name and precision."""
    dtype = amp_dtype(device)
    precision = {None: "fp32", torch.bfloat16: "bf16 mixed", torch.float16: "fp16 mixed"}[dtype]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type.upper()
    if device.type == "cpu":
        name += f" ({torch.get_num_threads()} threads)"
    return f"{name}, {precision}"
