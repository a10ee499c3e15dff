"""ImageFolder layouts: folders and zips from strangers (the app accepts uploads), extracted defensively.

Nothing may land outside the target folder, and file count, uncompressed size, compression ratio and folder depth
are bounded (``ZIP_LIMITS``). Errors are ``DatasetError`` with one sentence a teacher can read."""
from __future__ import annotations

import os
import re
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Subset
from torchvision import datasets

from ..errors import DatasetError
from ..i18n import Text, error
from ..preprocess import BadImage, open_image
from .imageset import IMAGE_EXTENSIONS, SPLIT_NAMES, ZIP_LIMITS, DamagedImage, ImageSet
from .synthetic import stratified_split


def _visible(name: str) -> bool:
    """Not hidden, not macOS resource forks or __MACOSX."""
    return not (name.startswith(".") or name.startswith("__"))


def is_image_name(name: str) -> bool:
    return _visible(Path(name).name) and name.lower().endswith(IMAGE_EXTENSIONS)


class _ImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder, ignoring hidden folders, and reading images with our safe loader."""

    def find_classes(self, directory):
        classes = sorted(e.name for e in os.scandir(directory) if e.is_dir() and _visible(e.name))
        return classes, {c: i for i, c in enumerate(classes)}


class _FileCheck:
    """``is_valid_file`` for ImageFolder: an image extension and a header Pillow recognises; counts the rest."""

    def __init__(self):
        self.skipped = 0

    def __call__(self, path: str) -> bool:
        if not is_image_name(path):
            self.skipped += 1
            return False
        try:
            with Image.open(path):
                return True
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            self.skipped += 1
            return False


def _load_image(path: str) -> Image.Image:
    try:
        return open_image(path)
    except BadImage as e:
        raise DamagedImage(Path(path).name, getattr(e, "text", None) or str(e)) from None


def _folder(root: Path, check: _FileCheck, where: str) -> _ImageFolder:
    """``where`` names the folder in messages (the zip's name, never the temporary folder it was extracted to)."""
    if not _subdirs(root):
        _no_classes(root, where)
    return _ImageFolder(str(root), loader=_load_image, is_valid_file=check, allow_empty=True)


def _no_classes(root: Path, where: str):
    if any(is_image_name(f.name) for f in root.iterdir() if f.is_file()):
        raise error(DatasetError, "data.not_sorted", where=where)
    raise error(DatasetError, "data.no_images", where=where)


def _subdirs(p: Path) -> list[Path]:
    return sorted(c for c in p.iterdir() if c.is_dir() and _visible(c.name))


def _find_root(p: Path, depth: int) -> Path:
    """Descend through single wrapping folders (``my_data/cats/…`` → ``my_data``) that hold no images and
    have folders inside (a single folder of images is one class, not a wrapper)."""
    for _ in range(depth):
        subs = _subdirs(p)
        files = [f for f in p.iterdir() if f.is_file() and is_image_name(f.name)]
        if (len(subs) == 1 and not files and _subdirs(subs[0])
                and subs[0].name.lower() not in SPLIT_NAMES["train"] + SPLIT_NAMES["val"]):
            p = subs[0]
        else:
            break
    return p


def _split_dirs(root: Path) -> tuple[Path, Path] | None:
    by_name = {d.name.lower(): d for d in _subdirs(root)}
    train = next((by_name[n] for n in SPLIT_NAMES["train"] if n in by_name), None)
    val = next((by_name[n] for n in SPLIT_NAMES["val"] if n in by_name), None)
    return (train, val) if train and val else None


def _check_classes(ds: _ImageFolder, where: str) -> None:
    counts = [0] * len(ds.classes)
    for y in ds.targets:
        counts[y] += 1
    nonempty = [c for c, k in zip(ds.classes, counts) if k]
    if not nonempty:
        _no_classes(Path(ds.root), where)
    if len(nonempty) < 2:
        raise error(DatasetError, "data.one_class", name=nonempty[0], where=where)
    few = [c for c, k in zip(ds.classes, counts) if k < 2]
    if few:
        raise error(DatasetError, "data.few_images", name=few[0], where=where)


def from_folder(path: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0, name: str | None = None,
                max_depth: int = ZIP_LIMITS["max_depth"]) -> ImageSet:
    """An ImageFolder layout (``class/image.jpg``, optionally under ``train/`` and ``val/``); split if no split."""
    path = Path(path)
    if not path.is_dir():
        raise error(DatasetError, "data.no_folder", path=path)
    root = _find_root(path, max_depth)
    check = _FileCheck()
    split = _split_dirs(root)
    label = name or path.name
    if split:
        train = _folder(split[0], check, f"{label}/{split[0].name}")
        val = _folder(split[1], check, f"{label}/{split[1].name}")
        _check_classes(train, f"{label}/{split[0].name}")
        if train.classes != val.classes:
            raise error(DatasetError, "data.split_classes", name=label, train=", ".join(train.classes),
                        val=", ".join(val.classes))
        if not val.samples:
            raise error(DatasetError, "data.empty_val", name=label)
        result = ImageSet(label, list(train.classes), train, val, source=str(path), skipped=check.skipped,
                          notes=[Text("data.note_split_given")])
    else:
        whole = _folder(root, check, label)
        _check_classes(whole, label)
        tr, va = stratified_split(whole.targets, val_fraction, seed)
        result = ImageSet(label, list(whole.classes), Subset(whole, tr), Subset(whole, va), source=str(path),
                          skipped=check.skipped, notes=[Text("data.note_split_made", fraction=val_fraction,
                                                             seed=seed)])
    if result.skipped:
        result.notes.append(Text("data.note_skipped", count=result.skipped))
    return result


def member_parts(name: str) -> list[str] | None:
    """The safe relative path parts of an archive member (a zip entry, a tar member), or None if it is absolute
    (``/…``, a drive ``C:…``) or climbs out with ``..``."""
    name = name.replace("\\", "/")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return None
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    return None if ".." in parts else parts


def extract_zip(archive: str | os.PathLike, dest: str | os.PathLike, *, limits: dict | None = None) -> dict:
    """Extract the images of ``archive`` into ``dest`` safely; returns counts ``{"images", "skipped"}``.

    The whole archive is checked before anything is written: an entry that is absolute, climbs out with
    ``..`` or is a symlink refuses the archive; so do too many files, too many bytes or a ratio typical of a
    zip bomb. Non-image files, hidden files and entries nested deeper than ``max_depth`` are skipped and counted.
    """
    lim = {**ZIP_LIMITS, **(limits or {})}
    archive, dest = Path(archive), Path(dest)
    label = archive.name
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError):
        raise error(DatasetError, "data.zip_unreadable", name=label) from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise error(DatasetError, "data.zip_empty", name=label)
        if len(infos) > lim["max_files"]:
            raise error(DatasetError, "data.zip_entries", name=label, count=len(infos), limit=lim["max_files"])
        total = sum(i.file_size for i in infos)
        packed = sum(i.compress_size for i in infos)
        if total > lim["max_bytes"]:
            raise error(DatasetError, "data.zip_size", name=label, mb=total / 2**20, limit=lim["max_bytes"] / 2**20)
        bomb = total > 2**20 and total > lim["max_ratio"] * max(packed, 1)
        bomb = bomb or any(i.file_size > 2**20 and i.file_size > lim["max_ratio"] * max(i.compress_size, 1)
                           for i in infos)
        if bomb:
            raise error(DatasetError, "data.zip_bomb", name=label, ratio=lim["max_ratio"])
        plan, skipped = [], 0
        root = dest.resolve()
        for info in infos:
            parts = member_parts(info.filename)
            if parts is None:
                raise error(DatasetError, "data.zip_outside", name=label, entry=info.filename[:80])
            if stat.S_ISLNK(info.external_attr >> 16):
                raise error(DatasetError, "data.zip_symlink", name=label, entry=info.filename[:80])
            if info.is_dir() or not parts:
                continue
            if (len(parts) - 1 > lim["max_depth"] or not all(_visible(p) for p in parts)
                    or not is_image_name(parts[-1]) or any(len(p.encode()) > 255 for p in parts)):
                skipped += 1
                continue
            target = root.joinpath(*parts)
            if not target.resolve().is_relative_to(root):
                raise error(DatasetError, "data.zip_outside", name=label, entry=info.filename[:80])
            plan.append((info, target))
        written = 0
        for info, target in plan:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > lim["max_bytes"]:
                            raise error(DatasetError, "data.zip_unpacks_over", name=label, limit=lim["max_bytes"] / 2**20)
                        out.write(chunk)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError):
                target.unlink(missing_ok=True)  # damaged or encrypted entry
                skipped += 1
    return {"images": len(plan), "skipped": skipped}


def from_zip(path: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0,
             limits: dict | None = None) -> ImageSet:
    """An ImageFolder-layout zip, extracted safely into a temporary folder that lives as long as the set."""
    path = Path(path)
    if not path.is_file():
        raise error(DatasetError, "data.no_file", path=path)
    tmp = tempfile.TemporaryDirectory(prefix="resnet-data-")
    try:
        counts = extract_zip(path, tmp.name, limits=limits)
        ds = from_folder(tmp.name, val_fraction=val_fraction, seed=seed, name=path.stem,
                         max_depth={**ZIP_LIMITS, **(limits or {})}["max_depth"])
    except BaseException:
        tmp.cleanup()  # now, not whenever the garbage collector gets to it
        raise
    ds.source, ds.keep_alive = str(path), tmp
    if counts["skipped"]:
        ds.skipped += counts["skipped"]
        ds.notes = [n for n in ds.notes if getattr(n, "key", None) != "data.note_skipped"] + [
            Text("data.note_skipped", count=ds.skipped)]
    return ds
