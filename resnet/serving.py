"""Models shared by every user of the app: built lazily, kept in a memory-bounded LRU cache."""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import nn

from . import config, downloads
from . import device as devices
from .models.resnet import build_model
from .i18n import t
from .weights import WeightsNotFound, WeightsUnavailable, download, load_pretrained, weights_url

log = logging.getLogger("resnet.serving")


@dataclass(frozen=True)
class Settings:
    """What the app reads once when it is built (see ``resnet.config`` and the README's table)."""

    cache_mb: int = field(default_factory=lambda: config.get("RESNET_MODEL_CACHE_MB"))
    train_concurrency: int = field(default_factory=config.train_concurrency)
    quick_concurrency: int = field(default_factory=lambda: config.get("RESNET_QUICK_CONCURRENCY"))
    max_queue: int = field(default_factory=lambda: config.get("RESNET_MAX_QUEUE"))
    max_file_mb: int = field(default_factory=lambda: config.get("RESNET_MAX_FILE_MB"))
    allow_download: bool = field(default_factory=lambda: config.get("RESNET_ALLOW_DOWNLOAD"))
    default_arch: str = field(default_factory=lambda: _known_arch(config.get("RESNET_DEFAULT_ARCH")))

    @property
    def torch_threads(self) -> int:
        """Intra-op threads per job: the cores shared among the jobs that may run at once."""
        return config.get("RESNET_TORCH_THREADS") or max(
            1, (os.cpu_count() or 1) // (self.quick_concurrency + self.train_concurrency))


def _known_arch(arch: str) -> str:
    from .models.resnet import ARCHS
    if arch not in ARCHS:
        config.log.warning("ignoring RESNET_DEFAULT_ARCH=%r (not one of %s)", arch, ", ".join(ARCHS))
        return config.SETTINGS["RESNET_DEFAULT_ARCH"].default
    return arch


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
    """Pretrained (else random, and said so) models by arch; least recently used dropped past ``cache_mb``.

    A request never waits on the network: weights missing from disk are downloaded in a background thread
    (one per arch, no lock held), and until they arrive the arch is served with random weights, said so.
    A failed download is tried again after ``resnet.downloads``' back-off, never remembered for good.
    """

    def __init__(self, cache_mb: int = 1200, *, allow_download: bool = True, device: torch.device | None = None):
        self.cache_mb = cache_mb
        self.allow_download = allow_download
        self.device = device or devices.pick_device()
        self._items: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self._fetching: dict[str, threading.Thread] = {}

    def get(self, arch: str) -> LoadedModel:
        with self._lock:
            if arch in self._items:
                self._items.move_to_end(arch)
                entry = self._items[arch]
                if not entry.pretrained:
                    self._fetch_later(arch)  # a failed download's back-off may have passed
                return entry
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
            model = load_pretrained(arch, download=False)  # disk only: a request never waits on the network
            pretrained, source = True, model.weights_source
        except WeightsUnavailable as e:
            log.info("%s: %s", arch, e.detail)
            with self._lock:
                fetching = self._fetch_later(arch) if isinstance(e, WeightsNotFound) else False
            source = t("weights.fetching") if fetching else str(e)
            model, pretrained = build_model(arch, generator=torch.Generator().manual_seed(0)).eval(), False
        for p in model.parameters():
            p.requires_grad_(False)
        model = devices.prepare(model, self.device, amp=False)
        return LoadedModel(model, arch, pretrained, source, model_megabytes(model))

    def _fetch_later(self, arch: str) -> bool:
        """Start a background download of ``arch``'s weights unless one runs or the back-off forbids it (call
        with ``self._lock`` held). True while a download is under way."""
        if not self.allow_download:
            return False
        thread = self._fetching.get(arch)
        if thread is not None and thread.is_alive():
            return True
        if downloads.retry_in(weights_url(arch)) > 0:
            return False
        thread = self._fetching[arch] = threading.Thread(target=self._fetch, args=(arch,), daemon=True,
                                                          name=f"fetch-{arch}")
        thread.start()
        return True

    def _fetch(self, arch: str) -> None:
        try:
            download(arch)
        except WeightsUnavailable as e:
            log.warning("%s weights: %s", arch, e.detail)
            return
        with self._lock:  # the random stand-in goes; the next request loads the real weights from disk
            entry = self._items.get(arch)
            if entry is not None and not entry.pretrained:
                del self._items[arch]

    def _evict(self) -> None:
        while len(self._items) > 1 and sum(e.megabytes for e in self._items.values()) > self.cache_mb:
            self._items.popitem(last=False)

    def cached_archs(self) -> list[str]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
