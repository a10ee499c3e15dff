"""Pretrained ImageNet weights: resolve, hash-check, cache and load.

Resolution order: an explicit file → ``$RESNET_WEIGHTS_DIR`` → torch's hub checkpoint cache
(``<hub>/checkpoints``, where torchvision itself caches) → download from torchvision's official URL (or an
https mirror) with its SHA-256 prefix checked before the file enters the cache (as torch.hub does).
In both folders torchvision's file name (e.g. ``resnet18-f37072fd.pth``) comes first, then any other
``<arch>-<sha256 prefix>.pth`` (torch.hub's naming); every such file must match the hash in its name before
it is used. Class names and preprocessing come from torchvision's weights metadata.

Exceptions carry visitor-safe sentences (no server paths); ``WeightsUnavailable.detail`` holds the
operator's version for the log and the command line.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from torch import nn
from torchvision.models import get_model_weights

from . import config, downloads
from .filehash import file_digest, sha256_file
from .errors import WeightsUnavailable
from .i18n import Text
from .models.resnet import ARCHS, build_model

log = logging.getLogger("resnet.weights")
HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")  # torch.hub's convention: <name>-<sha256 prefix>.<ext>
MAX_WEIGHTS_BYTES = 1 << 30  # the largest torchvision ResNet file is about 340 MB


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
    """The eval transform the weights were trained for (resize, centre crop, normalise: ``resnet.preprocess``)."""
    from .preprocess import transform
    weights_enum(arch)  # an unknown arch is refused here, as before
    return transform("eval", arch=arch)


def weights_url(arch: str) -> str:
    """The official URL; ``RESNET_WEIGHTS_BASE_URL`` points at an https mirror holding the same file names."""
    url = weights_enum(arch).url
    base = config.get("RESNET_WEIGHTS_BASE_URL")
    if base and not downloads.allowed_url(base):
        log.warning("ignoring RESNET_WEIGHTS_BASE_URL=%r: only https mirrors are accepted", base)
        base = None
    return f"{base.rstrip('/')}/{url.rsplit('/', 1)[1]}" if base else url


def file_name(arch: str) -> str:
    return weights_url(arch).rsplit("/", 1)[1]


def hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def folders() -> list[Path]:
    """Where checkpoints are looked for, in order: ``RESNET_WEIGHTS_DIR``, then the hub cache."""
    folder = config.get("RESNET_WEIGHTS_DIR")
    return ([Path(folder)] if folder else []) + [hub_dir()]


def candidates(arch: str) -> list[Path]:
    """Checkpoint files for ``arch``, in order: torchvision's name first, then ``<arch>-<hash>.pth``, per folder."""
    paths = []
    for folder in folders():
        official = folder / file_name(arch)
        others = sorted(p for p in folder.glob(f"{arch}-*.pth") if p != official and HASH_IN_NAME.search(p.name)
                        and p.name[len(arch) + 1:-4].isalnum())  # "resnet50-…" never picks "resnet50_x-…"
        paths += [official] + others
    return paths


def file_stamp(path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def check_hash(path: Path, name: str | None = None) -> None:
    """The SHA-256 of ``path`` must start with the prefix in its (or ``name``'s) file name, if there is one."""
    m = HASH_IN_NAME.search(name or Path(path).name)
    if m and not file_digest(path).startswith(m.group(1)):
        raise WeightsHashMismatch(
            f"The weights file {Path(name or path).name} does not match the hash in its name: it is damaged or not "
            "the official one.", f"{path} does not match its expected hash ({m.group(1)}…): delete it and fetch "
            "again with `python -m resnet weights fetch`.")


def download(arch: str) -> Path:
    """Download ``arch``'s weights into the hub cache, hash-checked; returns the cached path."""
    url = weights_url(arch)
    dst = hub_dir() / url.rsplit("/", 1)[1]
    m = HASH_IN_NAME.search(dst.name)
    try:
        return downloads.fetch(url, dst, max_bytes=MAX_WEIGHTS_BYTES, sha256_prefix=m.group(1) if m else None)
    except downloads.HashMismatch as e:
        raise WeightsHashMismatch(f"The downloaded {arch} weights do not match their expected hash; they were "
                                  "deleted.", f"{url}: {e}") from None
    except downloads.DownloadFailed as e:
        raise WeightsOffline(
            f"Could not download the {arch} weights: {e} Run `python -m resnet weights fetch {arch}` on a connected "
            "machine and copy the file into the folder named by RESNET_WEIGHTS_DIR.",
            f"download of {url} failed ({e}); run `python -m resnet weights fetch {arch}` on a connected machine "
            f"and copy {dst.name} into {hub_dir()} or a folder named by RESNET_WEIGHTS_DIR.") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely (``weights_only=True``: no code in the file can run)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsNotFound(f"No weights file named {path.name}. Check the path, or leave it empty to use the "
                              "cache.", f"No weights file at {path}.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, a pickle with code in it …
        raise WeightsCorrupt(
            f"{path.name} is not a readable PyTorch checkpoint. It may be truncated, not a checkpoint at all, or "
            "contain code, which is never run.",
            f"{path}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}") from None
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
    """The checkpoint file for ``arch`` by the resolution order above (downloading if allowed). A file found in
    a folder must match the hash in its name; one that does not is skipped, and the operator's log says so."""
    if path:
        return Path(path)
    for p in candidates(arch):
        if p.is_file():
            try:
                check_hash(p)
                return p
            except WeightsHashMismatch as e:
                log.warning("skipping %s", e.detail)
    if not download_ok:
        raise WeightsNotFound(
            f"No pretrained {arch} weights on this server. Run `python -m resnet weights fetch {arch}` while "
            f"online, or set RESNET_WEIGHTS_DIR to a folder holding {file_name(arch)}.",
            f"No pretrained {arch} weights found (looked in {', '.join(str(p) for p in folders())}).")
    return download(arch)


def describe_source(file: Path, arch: str) -> "Text | str":
    """What a visitor may read about the weights: the file's name (never its folder)."""
    if file.name == file_name(arch):  # a Text: English as str(), in the visitor's language on the page
        return Text("weights.source_official", name=weights_enum(arch).name, file=file.name)
    return Text("weights.source_hashed", file=file.name) if HASH_IN_NAME.search(file.name) else file.name


def load_pretrained(arch: str, *, path: str | os.PathLike | None = None, download: bool = True) -> nn.Module:
    """``arch`` with ImageNet weights, in eval mode. Raises ``WeightsUnavailable`` with what to do."""
    file = find_weights(arch, path=path, download_ok=download)  # every file with a hash in its name is checked
    model = build_model(arch, device="meta").to_empty(device="cpu")  # no random init (no RNG): the file fills it
    load_state_dict_checked(model, read_state_dict(file), arch, file.name)
    model.weights_source = describe_source(file, arch)
    model.weights_file = str(file)
    return model.eval()


def cached() -> list[dict]:
    """Which archs have weights on disk, and where."""
    rows = []
    for arch in ARCHS:
        hit = next((p for p in candidates(arch) if p.is_file()), None)
        rows.append({"arch": arch, "file": file_name(arch), "path": str(hit) if hit else None,
                     "size_mb": round(hit.stat().st_size / 2**20, 1) if hit else None})
    return rows


# ---------------------------------------------------------------------------- the built-in pretraining source

SOURCE_TAG = "source"  # backbones pretrained on resnet.data.source: ``<arch>-source-<sha256 prefix>.pth``
SOURCES = ("imagenet", "builtin-source", "random")  # where a pretrained strategy's weights came from


def source_folder() -> Path:
    """Where ``python -m resnet pretrain`` stores backbones: beside the other weights (``RESNET_WEIGHTS_DIR``, else
    the hub cache)."""
    return folders()[0]


def source_candidates(arch: str) -> list[Path]:
    """Stored source backbones of ``arch``, newest first, in every weights folder."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    prefix = f"{arch}-{SOURCE_TAG}-"
    found = [p for folder in folders() if folder.is_dir() for p in folder.glob(f"{prefix}*.pth")
             if HASH_IN_NAME.search(p.name) and p.name[len(prefix):-4].isalnum()]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def find_source(arch: str) -> Path | None:
    """The newest stored source backbone of ``arch`` whose SHA-256 matches the hash in its name, else None (a
    damaged one is skipped, and the operator's log says so)."""
    for p in source_candidates(arch):
        try:
            check_hash(p)
            return p
        except (WeightsHashMismatch, OSError) as e:
            log.warning("skipping %s", getattr(e, "detail", e))
    return None


def read_source(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """A stored source backbone's state_dict (hash-checked, ``weights_only``) and what was recorded with it
    (arch, image size, epochs, classes, source accuracy)."""
    path = Path(path)
    check_hash(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsCorrupt(f"{path.name} is not a readable PyTorch checkpoint.", f"{path}: {e}") from None
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsCorrupt(f"{path.name} holds no source backbone.")
    return state, {k: v for k, v in obj.items() if k != "state_dict"}


def save_source(arch: str, state: dict[str, torch.Tensor], meta: dict, folder: str | os.PathLike | None = None
                ) -> Path:
    """Store a source backbone as ``<arch>-source-<sha256 prefix>.pth`` (written to a temporary name, then renamed
    once hashed); older source backbones of ``arch`` in that folder are removed. Returns the path."""
    import tempfile
    folder = Path(folder) if folder else source_folder()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{arch}-{SOURCE_TAG}-", suffix=".part", dir=folder)
    os.close(fd)
    try:
        torch.save({**meta, "arch": arch, "state_dict": {k: v.detach().cpu().contiguous() for k, v in state.items()}},
                   tmp)
        dst = folder / f"{arch}-{SOURCE_TAG}-{sha256_file(tmp)[:8]}.pth"
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in folder.glob(f"{arch}-{SOURCE_TAG}-*.pth"):
        if old != dst:
            old.unlink(missing_ok=True)
    return dst


def has_imagenet(arch: str) -> bool:
    """Is a hash-checked ImageNet checkpoint of ``arch`` on disk (nothing downloaded)?"""
    try:
        find_weights(arch, download_ok=False)
        return True
    except WeightsUnavailable:
        return False


def downloads_allowed() -> bool:
    """May a run download ImageNet weights: ``RESNET_ALLOW_DOWNLOAD``, unless the weights host was found unreachable
    (``probe_imagenet``, at the app's start-up): then a run goes straight to the built-in source, as the page said,
    instead of waiting for a download to time out."""
    host = weights_url("resnet18")  # every arch's file is on the same host
    return bool(config.get("RESNET_ALLOW_DOWNLOAD")) and downloads.reachable(host) is not False


def probe_imagenet(arch: str) -> bool:
    """Are ImageNet weights of ``arch`` to be had here: on disk, or downloadable (a ``HEAD`` request through
    ``resnet.downloads.probe``, remembered; nothing is downloaded)? Blocks up to ``RESNET_DOWNLOAD_TIMEOUT_S``."""
    if has_imagenet(arch):
        return True
    return bool(config.get("RESNET_ALLOW_DOWNLOAD")) and downloads.probe(weights_url(arch))


def pretrained_source(arch: str, *, allow_download: bool | None = None) -> str:
    """Where the pretrained strategies of a fine-tune of ``arch`` would start from, without downloading anything:
    ``"imagenet"`` (a checkpoint on disk, or a download that is allowed, to a host not found unreachable, and has not
    just failed), ``"builtin-source"`` (a stored backbone from ``python -m resnet pretrain``) or ``"random"``."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    if allow_download is None:
        allow_download = config.get("RESNET_ALLOW_DOWNLOAD")
    url = weights_url(arch)
    if has_imagenet(arch) or (allow_download and downloads.reachable(url) is not False
                              and downloads.retry_in(url) <= 0):
        return "imagenet"
    return "builtin-source" if find_source(arch) else "random"
