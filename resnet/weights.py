"""Pretrained ImageNet weights: resolve, hash-check, cache and load.

Resolution order: an explicit file → ``$RESNET_WEIGHTS_DIR/<file>`` → torch's hub checkpoint cache
(``<hub>/checkpoints/<file>``, where torchvision itself caches) → download from torchvision's official
URL with its SHA-256 prefix checked before the file enters the cache (as torch.hub does). ``<file>`` is torchvision's file name, e.g. ``resnet18-f37072fd.pth``.
Class names and preprocessing come from torchvision's weights metadata.
"""
from __future__ import annotations

import hashlib
import os
import re
import urllib.error
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model_weights

from .model import ARCHS, build_model

HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention: <name>-<sha256 prefix>.<ext>


class WeightsUnavailable(RuntimeError):
    """No usable pretrained weights; the message says what happened and what to do."""


class WeightsNotFound(WeightsUnavailable):
    pass


class WeightsOffline(WeightsUnavailable):
    pass


class WeightsHashMismatch(WeightsUnavailable):
    pass


class WeightsCorrupt(WeightsUnavailable):
    pass


class WeightsArchMismatch(WeightsUnavailable):
    pass


def weights_enum(arch: str):
    """torchvision's best ImageNet weights for ``arch`` (url, categories, transforms, metrics)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    return get_model_weights(arch).DEFAULT


def categories(arch: str = "resnet18") -> list[str]:
    """The 1000 ImageNet class names, from torchvision's metadata."""
    return list(weights_enum(arch).meta["categories"])


def preprocess(arch: str = "resnet18"):
    """The eval transform the weights were trained for (resize, centre crop, normalise)."""
    return weights_enum(arch).transforms()


def weights_url(arch: str) -> str:
    """The official URL; ``RESNET_WEIGHTS_BASE_URL`` points at a mirror holding the same file names."""
    url = weights_enum(arch).url
    base = os.environ.get("RESNET_WEIGHTS_BASE_URL")
    return f"{base.rstrip('/')}/{url.rsplit('/', 1)[1]}" if base else url


def file_name(arch: str) -> str:
    return weights_url(arch).rsplit("/", 1)[1]


def hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def candidates(arch: str) -> list[Path]:
    """Where a checkpoint for ``arch`` is looked for, in order."""
    paths = []
    if os.environ.get("RESNET_WEIGHTS_DIR"):
        paths.append(Path(os.environ["RESNET_WEIGHTS_DIR"]) / file_name(arch))
    paths.append(hub_dir() / file_name(arch))
    return paths


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_hash(path: Path, name: str | None = None) -> None:
    """The SHA-256 of ``path`` must start with the prefix in its (or ``name``'s) file name, if there is one."""
    m = HASH_IN_NAME.search(name or Path(path).name)
    if m and not sha256(path).startswith(m.group(1)):
        raise WeightsHashMismatch(
            f"{Path(path).name} does not match its expected hash ({m.group(1)}…): the file is damaged or not "
            f"the official one. Delete it and fetch again with `python -m resnet weights fetch`.")


def download(arch: str, *, progress: bool = False) -> Path:
    """Download ``arch``'s weights into the hub cache, hash-checked; returns the cached path."""
    url = weights_url(arch)
    dst = hub_dir() / url.rsplit("/", 1)[1]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".partial")
    try:
        torch.hub.download_url_to_file(url, str(tmp), hash_prefix=None, progress=progress)
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        raise WeightsOffline(
            f"Could not download {arch} weights from {url} ({getattr(e, 'reason', e)}). You are probably offline: "
            f"run `python -m resnet weights fetch {arch}` on a connected machine and copy {dst.name} into "
            f"{hub_dir()} or a folder named by RESNET_WEIGHTS_DIR.") from None
    try:
        check_hash(tmp, dst.name)
    except WeightsHashMismatch:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(dst)
    return dst


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely (``weights_only=True``: no code in the file can run)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"No weights file at {path}. Check the path, or leave it empty to use the cache.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, a pickle with code in it …
        raise WeightsCorrupt(
            f"{path.name} is not a readable PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:160]}). "
            "It may be truncated, not a checkpoint at all, or contain code, which is never run.") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):  # our fine-tune export and common training scripts
            if isinstance(obj.get(key), dict):
                obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsCorrupt(f"{path.name} holds no state_dict of tensors.")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], arch: str, source: str) -> None:
    """Strict load, with a message that names a few mismatched keys or shapes instead of a wall of text."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:3])})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise WeightsArchMismatch(f"{source} is not a {arch} checkpoint: {'; '.join(parts)}.")
    model.load_state_dict(state, strict=True)


def find_weights(arch: str, *, path: str | os.PathLike | None = None, download_ok: bool = True) -> Path:
    """The checkpoint file for ``arch`` by the resolution order above (downloading if allowed)."""
    if path:
        return Path(path)
    for p in candidates(arch):
        if p.is_file():
            return p
    if not download_ok:
        raise WeightsNotFound(
            f"No pretrained {arch} weights found (looked in {', '.join(str(p.parent) for p in candidates(arch))}). "
            f"Run `python -m resnet weights fetch {arch}` while online, or set RESNET_WEIGHTS_DIR to a folder "
            f"holding {file_name(arch)}.")
    return download(arch)


def load_pretrained(arch: str, *, path: str | os.PathLike | None = None, download: bool = True) -> nn.Module:
    """``arch`` with ImageNet weights, in eval mode. Raises ``WeightsUnavailable`` with what to do."""
    file = find_weights(arch, path=path, download_ok=download)  # downloads are hash-checked, as torch.hub does
    model = build_model(arch)
    load_state_dict_checked(model, read_state_dict(file), arch, file.name)
    model.weights_source = str(file)
    return model.eval()


def cached() -> list[dict]:
    """Which archs have weights on disk, and where."""
    rows = []
    for arch in ARCHS:
        hit = next((p for p in candidates(arch) if p.is_file()), None)
        rows.append({"arch": arch, "file": file_name(arch), "path": str(hit) if hit else None,
                     "size_mb": round(hit.stat().st_size / 2**20, 1) if hit else None})
    return rows
