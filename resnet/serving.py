"""Models shared by every user of the app: built lazily, kept in a memory-bounded LRU cache."""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from . import device as devices
from .model import build_model
from .weights import WeightsUnavailable, load_pretrained


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class Settings:
    """Everything an operator may tune, from environment variables (see the README's table)."""

    cache_mb: int = field(default_factory=lambda: _env_int("RESNET_MODEL_CACHE_MB", 1200))
    train_concurrency: int = field(default_factory=lambda: _env_int(
        "RESNET_TRAIN_CONCURRENCY", 2 if torch.cuda.is_available() else 1))
    quick_concurrency: int = field(default_factory=lambda: _env_int("RESNET_QUICK_CONCURRENCY", 4))
    max_queue: int = field(default_factory=lambda: _env_int("RESNET_MAX_QUEUE", 64))
    max_file_mb: int = field(default_factory=lambda: _env_int("RESNET_MAX_FILE_MB", 50))
    allow_download: bool = field(default_factory=lambda: os.environ.get("RESNET_ALLOW_DOWNLOAD", "1") != "0")
    default_arch: str = field(default_factory=lambda: os.environ.get("RESNET_DEFAULT_ARCH", "resnet18"))


@dataclass
class LoadedModel:
    model: nn.Module
    arch: str
    pretrained: bool
    source: str  # where the weights came from, or why there are none
    megabytes: float


def model_megabytes(model: nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20


class ModelCache:
    """Pretrained (else random, and said so) models by arch; least recently used dropped past ``cache_mb``."""

    def __init__(self, cache_mb: int = 1200, *, allow_download: bool = True, device: torch.device | None = None):
        self.cache_mb = cache_mb
        self.allow_download = allow_download
        self.device = device or devices.pick_device()
        self._items: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._failed: dict[str, str] = {}  # arch → why pretrained weights were unavailable (no retry storms)

    def get(self, arch: str) -> LoadedModel:
        with self._lock:
            if arch in self._items:
                self._items.move_to_end(arch)
                return self._items[arch]
            build_lock = self._building.setdefault(arch, threading.Lock())
        with build_lock:  # one build per arch even when thirty users ask at once
            with self._lock:
                if arch in self._items:
                    return self._items[arch]
            entry = self._load(arch)
            with self._lock:
                self._items[arch] = entry
                self._evict()
            return entry

    def _load(self, arch: str) -> LoadedModel:
        try:
            if arch in self._failed:
                raise WeightsUnavailable(self._failed[arch])
            model, pretrained = load_pretrained(arch, download=self.allow_download), True
            source = model.weights_source
        except WeightsUnavailable as e:
            self._failed[arch] = str(e)
            model, pretrained, source = build_model(arch).eval(), False, str(e)
        for p in model.parameters():
            p.requires_grad_(False)
        model = devices.prepare(model, self.device, amp=False)
        return LoadedModel(model, arch, pretrained, source, model_megabytes(model))

    def _evict(self) -> None:
        while len(self._items) > 1 and sum(e.megabytes for e in self._items.values()) > self.cache_mb:
            self._items.popitem(last=False)

    def cached_archs(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._failed.clear()
