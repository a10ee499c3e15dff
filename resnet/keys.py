"""Identities: what makes two runs the same (``job_key``), and a file's identity (its SHA-256, from ``filehash``).

A job's key is everything that determines its result: the endpoint, its canonical settings with the seed, the
data's identity (a built-in set's parameters, or the SHA-256 of the uploaded file), the weights' identity and the
code version. Runs with the same key are shared and replayed (``resnet.train.jobs``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from .filehash import file_digest

_code_version: str | None = None


def code_version() -> str:
    """SHA-256 of every ``.py`` file of the ``resnet`` package (and torch's version), computed once per process."""
    global _code_version
    if _code_version is None:
        import torch
        root = Path(__file__).resolve().parent
        h = hashlib.sha256(f"torch {torch.__version__}\n".encode())
        for path in sorted(root.rglob("*.py")):
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
        _code_version = h.hexdigest()
    return _code_version


def canonical(value: Any) -> Any:
    """A JSON-able, order-stable form of ``value``: tuples and sets as lists, paths as strings, dataclasses as
    dicts; floats that are whole numbers stay floats (``2.0`` and ``2`` differ: canonicalise settings first)."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return canonical(dataclasses.asdict(value))
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"job_key: {type(value).__name__} has no canonical form; pass plain values")


def job_key(endpoint: str, **parts) -> str:
    """The SHA-256 of the canonical JSON (sorted keys) of ``endpoint``, ``parts`` and the code version."""
    doc = {"endpoint": endpoint, "parts": canonical(parts), "code": code_version()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_identity(path: str | Path) -> str:
    """``sha256:<hex>`` of a file's bytes, remembered while its size, time and inode stay the same."""
    return "sha256:" + file_digest(path)


def weights_identity(arch: str, *, path: str | None = None, allow_download: bool = False) -> str:
    """What pretrained weights a run of ``arch`` starts from, without downloading: ``sha256:<hex>`` of the
    checkpoint on disk it would load; ``download:<file>`` for the official file it would download (its hash is in
    its name); ``builtin-source:sha256:<hex>`` for a backbone from ``python -m resnet pretrain``; else ``"random"``
    (the engine's seeded random backbone)."""
    from . import weights
    if path:
        try:
            return file_identity(path)
        except OSError:
            return f"missing:{Path(path).name}"
    try:
        return file_identity(weights.find_weights(arch, download_ok=False))
    except (weights.WeightsUnavailable, OSError):
        pass
    if allow_download:
        return "download:" + weights.file_name(arch)
    find_source = getattr(weights, "find_source", None)
    source = find_source(arch) if find_source is not None else None
    if source is not None:
        try:
            return "builtin-source:" + file_identity(source)
        except OSError:
            pass
    return "random"
