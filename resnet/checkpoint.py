"""A student's own checkpoint: the state dict their training script saved, as a model that ``classify`` labels.

The note's tutorial trains ResNet-34 on five flowers and saves ``resNet34.pth`` (``torch.save(net.state_dict())``:
torchvision's key names, a 5-class fc) and ``class_indices.json`` (``{"0": "daisy", …}``). ``load_checkpoint``
reads such a file without running anything in it (``torch.load(..., weights_only=True)``), after checking its size
and its zip container (``torch.save``'s format since PyTorch 1.6: the sizes it declares bound what loading may
allocate), unwraps what common scripts add (``{"state_dict": …}``, ``{"model": …}``, a ``module.`` prefix from
DataParallel, ``_orig_mod.`` from ``torch.compile``), and infers the architecture among ``resnet.ARCHS`` from the
keys and shapes: basic or bottleneck block, blocks per stage, the first stage's width and its groups (ResNeXt,
Wide ResNet). Every tensor must then have exactly the shape that architecture gives it; the class count is fc's.

The paper's v1 bottleneck (stride in the first 1×1) and torchvision's v1.5 have the same shapes and cannot be told
apart from a file: the model is v1.5, as torchvision's and the tutorial's code build it.

Anything wrong is a ``BadCheckpoint`` (a ``LabError``) with one translated sentence that names the file by its own
name only: missing, too big, not a ``torch.save`` zip, unreadable, not a state dict, not a ResNet, an unknown
layout, a shape that does not fit, NaN weights, or a class-index file that does not match.
"""
from __future__ import annotations

import json
import os
import pickle
import threading
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import LabError
from .i18n import error
from .filehash import file_digest
from .models.resnet import ARCHS, Bottleneck, build_model

MAX_CHECKPOINT_BYTES = 512 * 2**20  # the largest torchvision ResNet here, ResNeXt-101 32×8d, is about 340 MB
MAX_ZIP_ENTRIES = 20_000            # one record per tensor: ResNet-152 has under 1,000
MAX_CLASSES_BYTES = 1 << 20         # a class-index file of names
MAX_CLASS_NAME = 200                # characters per class name
PREFIXES = ("module.", "_orig_mod.", "model.", "net.")  # DataParallel, torch.compile, Lightning and similar wrappers
WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "weights")  # {"state_dict": {...}, "epoch": 3, ...}


class BadCheckpoint(LabError, ValueError):
    """A checkpoint or class-index file that cannot be used; the message says why, naming the file only."""


@dataclass(frozen=True)
class Layout:
    """What a state dict's keys and shapes say about its network."""

    bottleneck: bool
    layers: tuple[int, int, int, int]
    groups: int
    width: int          # channels of the first stage's 3×3 conv
    num_classes: int

    def __str__(self) -> str:  # names and numbers only: the same in every language
        block = "Bottleneck" if self.bottleneck else "BasicBlock"
        return f"{block} × {tuple(self.layers)}, groups={self.groups}, width={self.width}, fc={self.num_classes}"


def arch_layout(arch: str, num_classes: int = 1000) -> Layout:
    """The layout ``build_model(arch, num_classes)`` has."""
    spec = ARCHS[arch]
    bottleneck = spec.block is Bottleneck
    width = int(64 * spec.width_per_group / 64) * spec.groups if bottleneck else 64
    return Layout(bottleneck, tuple(spec.layers), spec.groups, width, num_classes)


def _name(path) -> str:
    return Path(str(path)).name


# ---------------------------------------------------------------------------- reading the file

def read_state_dict(path: str | os.PathLike, *, max_bytes: int = MAX_CHECKPOINT_BYTES) -> dict[str, torch.Tensor]:
    """The tensors of a ``torch.save`` checkpoint, unwrapped and with common prefixes removed; nothing in the file
    runs (``weights_only=True``)."""
    path, name = Path(path), _name(path)
    if not path.is_file():
        raise error(BadCheckpoint, "checkpoint.missing", name=name)
    size = path.stat().st_size
    if size > max_bytes:
        raise error(BadCheckpoint, "checkpoint.too_big", name=name, mb=size / 2**20, limit=max_bytes / 2**20)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        with open(path, "rb") as f:
            truncated = f.read(2) == b"PK"  # a zip's start without its end: a cut-off upload or copy
        raise error(BadCheckpoint, "checkpoint.corrupt" if truncated else "checkpoint.not_zip", name=name) from None
    # torch.save stores its records uncompressed; what they declare is what loading allocates.
    if len(infos) > MAX_ZIP_ENTRIES or sum(i.file_size for i in infos) > max_bytes:
        raise error(BadCheckpoint, "checkpoint.too_big", name=name, mb=sum(i.file_size for i in infos) / 2**20,
                    limit=max_bytes / 2**20)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # a whole pickled model, or code: refused by weights_only, never run
        key = "checkpoint.pickled" if "weights only" in str(e).lower() else "checkpoint.corrupt"
        raise error(BadCheckpoint, key, name=name) from None
    except Exception:  # truncated or damaged
        raise error(BadCheckpoint, "checkpoint.corrupt", name=name) from None
    state = unwrap(obj, name)
    # A tensor may claim a huge shape over a tiny storage (stride 0): what its model would hold counts, not the file.
    held = sum(v.numel() * v.element_size() for v in state.values())
    if held > max_bytes:
        raise error(BadCheckpoint, "checkpoint.too_big", name=name, mb=held / 2**20, limit=max_bytes / 2**20)
    return state


def unwrap(obj, name: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict inside what a training script saved: the dict itself, or under one of ``WRAPPERS``; a prefix
    that every key shares (``PREFIXES``) removed."""
    for _ in range(2):  # {"state_dict": {...}} or {"checkpoint": {"model": {...}}}-like nesting, one level each
        if isinstance(obj, dict) and not (obj and all(isinstance(v, torch.Tensor) for v in obj.values())):
            inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), None)
            if inner is not None:
                obj = inner
    if not isinstance(obj, dict) or not obj or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in obj.items()):
        raise error(BadCheckpoint, "checkpoint.not_state_dict", name=name)
    state = dict(obj)
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state) and "conv1.weight" not in state:
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    return state


# ---------------------------------------------------------------------------- what network it is

def layout(state: dict[str, torch.Tensor], name: str = "checkpoint") -> Layout:
    """The network's layout read from its keys and shapes (``BadCheckpoint`` if it is not a torchvision ResNet)."""
    needed = ["conv1.weight", "fc.weight", "fc.bias"] + [f"layer{i}.0.conv1.weight" for i in range(1, 5)]
    needed.append("layer1.0.conv2.weight")
    missing = [k for k in needed if k not in state]
    if missing:
        raise error(BadCheckpoint, "checkpoint.not_resnet", name=name, tensor=missing[0])
    fc, conv2 = state["fc.weight"], state["layer1.0.conv2.weight"]
    if fc.dim() != 2 or fc.shape[0] < 1 or conv2.dim() != 4 or conv2.shape[1] < 1:
        raise error(BadCheckpoint, "checkpoint.not_resnet", name=name,
                    tensor="fc.weight" if fc.dim() != 2 else "layer1.0.conv2.weight")
    counts = []
    for i in range(1, 5):
        blocks = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.") and k.split(".")[1].isdigit()}
        counts.append(max(blocks) + 1)
    width = int(conv2.shape[0])
    return Layout(bottleneck="layer1.0.conv3.weight" in state, layers=tuple(counts),
                  groups=max(1, width // int(conv2.shape[1])), width=width, num_classes=int(fc.shape[0]))


def infer_arch(state: dict[str, torch.Tensor], name: str = "checkpoint") -> tuple[str, int]:
    """``(arch, num_classes)``: the member of ``ARCHS`` whose every key and shape the state dict has."""
    found = layout(state, name)
    arch = next((a for a in ARCHS if arch_layout(a, found.num_classes) == found), None)
    if arch is None:
        raise error(BadCheckpoint, "checkpoint.unknown_layout", name=name, layout=str(found),
                    archs=", ".join(spec.title for spec in ARCHS.values()))
    own = build_model(arch, found.num_classes, device="meta").state_dict()  # shapes only: no memory, no arithmetic
    shapes = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if shapes:
        k = shapes[0]
        raise error(BadCheckpoint, "checkpoint.shape_mismatch", name=name, title=ARCHS[arch].title, tensor=k,
                    got=tuple(state[k].shape), want=tuple(own[k].shape), count=len(shapes))
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise error(BadCheckpoint, "checkpoint.keys_mismatch", name=name, title=ARCHS[arch].title,
                    missing=len(missing), unexpected=len(unexpected), keys=", ".join((missing + unexpected)[:3]))
    return arch, found.num_classes


# ---------------------------------------------------------------------------- class names

def read_classes(classes, num_classes: int | None = None) -> list[str] | None:
    """Class names from a list, or from a ``class_indices.json`` path (``{"0": "daisy", …}`` as the tutorial writes
    it, or a JSON list), numbered 0 … n - 1; there must be exactly ``num_classes`` of them (if given)."""
    if classes is None:
        return None
    example = '{"0": "daisy", "1": "dandelion"}'
    if isinstance(classes, (str, os.PathLike)):
        path, name = Path(classes), _name(classes)
        if not path.is_file():
            raise error(BadCheckpoint, "checkpoint.classes_missing", name=name)
        if path.stat().st_size > MAX_CLASSES_BYTES:
            raise error(BadCheckpoint, "checkpoint.classes_too_big", name=name, kb=MAX_CLASSES_BYTES // 1024)
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise error(BadCheckpoint, "checkpoint.classes_unreadable", name=name) from None
    else:
        name, data = "classes", classes
    if isinstance(data, dict):
        try:
            index = {int(str(k).strip()): v for k, v in data.items()}
        except ValueError:
            raise error(BadCheckpoint, "checkpoint.classes_format", name=name, example=example) from None
        if sorted(index) != list(range(len(index))):
            raise error(BadCheckpoint, "checkpoint.classes_format", name=name, example=example)
        names = [index[i] for i in range(len(index))]
    elif isinstance(data, (list, tuple)):
        names = list(data)
    else:
        raise error(BadCheckpoint, "checkpoint.classes_format", name=name, example=example)
    if not all(isinstance(n, str) and n.strip() and len(n) <= MAX_CLASS_NAME for n in names):
        raise error(BadCheckpoint, "checkpoint.classes_format", name=name, example=example)
    if num_classes is not None and len(names) != num_classes:
        raise error(BadCheckpoint, "checkpoint.classes_count", name=name, got=len(names), want=num_classes)
    return [n.strip() for n in names]


# ---------------------------------------------------------------------------- the model

def load_checkpoint(path: str | os.PathLike, *, classes=None, max_bytes: int = MAX_CHECKPOINT_BYTES) -> nn.Module:
    """The ResNet in a state-dict file, in eval mode, architecture and class count inferred from its keys and
    shapes; ``classes`` (a list, or a ``class_indices.json`` path) names its outputs. The model carries ``arch``,
    ``categories`` (None without ``classes``: ``resnet.classify`` then says ``class 0`` …), ``num_classes`` and
    ``weights_source`` (the file's name). Raises ``BadCheckpoint`` with a sentence saying what is wrong."""
    name = _name(path)
    state = read_state_dict(path, max_bytes=max_bytes)
    arch, num_classes = infer_arch(state, name)
    names = read_classes(classes, num_classes)
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise error(BadCheckpoint, "checkpoint.not_finite", name=name, tensor=k)
    model = build_model(arch, num_classes, device="meta").to_empty(device="cpu")  # no random init: the file fills it
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked") and k not in state:  # files saved before PyTorch 0.4.1 lack them
            state[k] = torch.zeros_like(v)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, ValueError):
        raise error(BadCheckpoint, "checkpoint.corrupt", name=name) from None
    model.categories = names
    model.num_classes = num_classes
    model.weights_source = name
    return model.eval()


# ---------------------------------------------------------------------------- a cache for servers

class CheckpointCache:
    """Loaded checkpoints by the SHA-256 of their bytes and of their class-index file: the same upload classified
    again (or uploaded again under another name) is not read twice. At most ``max_items`` models and ``max_mb``
    of weights; least recently used dropped first. ``prepare`` (e.g. move to the serving device) runs once per
    model; loading one key never blocks requests for another."""

    def __init__(self, max_items: int = 2, max_mb: float = 1200, prepare=None):
        self.max_items, self.max_mb, self.prepare = max_items, max_mb, prepare
        self._items: OrderedDict[tuple[str, str], tuple[nn.Module, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self.loads = 0  # how many times a file was really read (for tests and logs)

    def get(self, path: str | os.PathLike, classes: str | os.PathLike | None = None) -> nn.Module:
        if Path(path).is_file() and Path(path).stat().st_size > MAX_CHECKPOINT_BYTES:
            return load_checkpoint(path, classes=classes)  # refused by size before any hashing
        key = (file_digest(path), file_digest(classes) if classes is not None else "")
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
            lock = self._loading.setdefault(key, threading.Lock())
        with lock:  # thirty students pressing Classify on the same file: one load
            with self._lock:
                if key in self._items:
                    return self._items[key][0]
            model = load_checkpoint(path, classes=classes)
            for p in model.parameters():
                p.requires_grad_(False)
            if self.prepare is not None:
                model = self.prepare(model)
            mb = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
            with self._lock:
                self.loads += 1
                self._items[key] = (model, mb)
                self._loading.pop(key, None)
                while len(self._items) > 1 and (len(self._items) > self.max_items
                                                or sum(m for _, m in self._items.values()) > self.max_mb):
                    self._items.popitem(last=False)
            return model

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
