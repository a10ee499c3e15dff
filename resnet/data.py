"""Datasets for transfer learning: a built-in synthetic set, ImageFolder folders and zips, ants/bees.

Every dataset is an ``ImageSet``: class names plus a train and a val split whose items are
``(PIL RGB image, class index)``. Transforms are applied later (``train_transform`` /
``eval_transform``), so one split can be seen with and without augmentation.

Zips come from strangers (the app accepts uploads), so extraction is defensive: nothing may land
outside the target folder, and file count, uncompressed size, compression ratio and folder depth are
bounded (``ZIP_LIMITS``). Errors are ``DatasetError`` with one sentence a teacher can read.
"""
from __future__ import annotations

import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, UnidentifiedImageError
from torch.utils.data import Dataset, Subset
from torchvision import datasets

from . import config, downloads
from .preprocess import BadImage, Pipeline, RandomAugment, open_image, recipe, transform  # noqa: F401 (RandomAugment)
from .downloads import file_sha256
from .errors import DatasetError

IMAGE_EXTENSIONS = datasets.folder.IMG_EXTENSIONS  # .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp

ZIP_LIMITS = {
    "max_files": 5_000,            # entries in the archive, of any kind
    "max_bytes": 512 * 2**20,      # total uncompressed size
    "max_ratio": 100.0,            # uncompressed / compressed, for the archive and for any entry over 1 MiB
    "max_depth": 12,               # folder levels below the archive root; deeper entries are skipped
}
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation", "test")}

HYMENOPTERA = {
    "url": "https://download.pytorch.org/tutorial/hymenoptera_data.zip",
    # No official checksum is published next to the file; pass ``sha256=`` or set RESNET_HYMENOPTERA_SHA256 to
    # pin one. Without a pin, the SHA-256 of the first download is recorded and later copies must match it.
    "sha256": None,
    "folder": "hymenoptera_data",
    "classes": ["ants", "bees"],
    "max_download_bytes": 200 * 2**20,
}


class DamagedImage(DatasetError):
    """One image of a data set that passed the header check but cannot be decoded; the engine skips it."""

    def __init__(self, name: str, reason: str):
        self.name, self.reason = name, reason
        super().__init__(f"The image {name} could not be read: {reason}")


@dataclass
class ImageSet:
    """Class names and train/val splits of ``(PIL image, label)``; ``skipped`` counts files left out."""

    name: str
    classes: list[str]
    train: Dataset
    val: Dataset
    source: str = ""
    skipped: int = 0
    notes: list[str] = field(default_factory=list)
    keep_alive: object = None  # a TemporaryDirectory holding extracted files, removed with this object

    def counts(self) -> dict:
        return {"train": len(self.train), "val": len(self.val)}

    def to_dict(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "n_train": len(self.train),
                "n_val": len(self.val), "skipped": self.skipped, "source": self.source, "notes": list(self.notes)}


class InMemory(Dataset):
    """Images already in memory (the synthetic set)."""

    def __init__(self, images: list[Image.Image], targets: list[int]):
        self.images, self.targets = images, list(targets)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.targets[i]


def targets(ds: Dataset) -> list[int]:
    """Labels of a split without decoding any image."""
    if isinstance(ds, Subset):
        base = targets(ds.dataset)
        return [base[i] for i in ds.indices]
    return list(ds.targets)


# ---------------------------------------------------------------- transforms (names kept; made by resnet.preprocess)

def resize_size(image_size: int) -> int:
    """The short side before the centre crop, in the weights' 256 → 224 proportion."""
    return recipe(image_size).resize


def decode_transform(image_size: int) -> Pipeline:
    """PIL → uint8 square tensor of ``resize_size``: done once per image, before any epoch."""
    return transform("decode", image_size)


def eval_transform(image_size: int, *, decoded: bool = False) -> Pipeline:
    """Resize, centre crop, normalise. ``decoded=True``: the input is already ``decode_transform``'s output."""
    return transform("eval", image_size, decoded=decoded)


def train_transform(image_size: int, *, decoded: bool = False, generator: torch.Generator | None = None) -> Pipeline:
    """Random resized crop and horizontal flip (``RandomAugment``), normalise; draws from ``generator``."""
    return transform("train", image_size, decoded=decoded, generator=generator)


# ---------------------------------------------------------------- the built-in synthetic set

# Every shape the painter draws, in class order: the synthetic set's classes are the first ``num_classes``, the
# labs' shapes set uses them all. Each is told apart by its outline alone, whatever its angle.
SHAPES = ("circle", "square", "triangle", "cross", "star", "ring", "arrow", "crescent")
DECOYS = SHAPES[:6]  # the small decoys of the cluttered pictures (the first six: older sets' images stay the same)


def _outline(kind: str, r: float, aspect: float) -> np.ndarray:
    """Vertices of ``kind`` around the origin, radius ``r`` (before rotation)."""
    if kind in ("circle", "ring"):
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        return np.stack([r * np.cos(t), r * aspect * np.sin(t)], 1)
    if kind == "square":
        s = r * 0.8
        return np.array([[-s, -s * aspect], [s, -s * aspect], [s, s * aspect], [-s, s * aspect]])
    if kind == "triangle":
        t = np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6])
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if kind == "cross":
        a, w = r, r * 0.33
        return np.array([[-w, -a], [w, -a], [w, -w], [a, -w], [a, w], [w, w], [w, a], [-w, a], [-w, w], [-a, w],
                         [-a, -w], [-w, -w]])
    if kind == "star":
        t = np.linspace(-np.pi / 2, 1.5 * np.pi, 10, endpoint=False)
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return np.stack([rad * np.cos(t), rad * np.sin(t)], 1)
    if kind == "arrow":
        w, h, neck = r * 0.22, r * 0.72, -r * 0.1
        return np.array([[0, -r], [h, neck], [w, neck], [w, r], [-w, r], [-w, neck], [-h, neck]])
    if kind == "crescent":  # a disc of radius r less a disc of radius 0.8 r whose centre is 0.45 r to the right
        outer = np.arccos(0.625)   # where the two circles cross (x = 0.625 r), seen from each centre
        inner = np.arccos(0.21875)
        t = np.linspace(outer, 2 * np.pi - outer, 24)
        u = np.linspace(2 * np.pi - inner, inner, 16)
        return np.concatenate([np.stack([r * np.cos(t), r * np.sin(t)], 1),
                               np.stack([0.45 * r + 0.8 * r * np.cos(u), 0.8 * r * np.sin(u)], 1)])
    raise ValueError(f"unknown shape {kind!r}")


def _rotate(p: np.ndarray, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    q = p @ np.array([[c, s], [-s, c]])
    return [(float(x + cx), float(y + cy)) for x, y in q]


def _colour(rng, *away_from) -> tuple[int, int, int]:
    """A random colour some distance from each of ``away_from``, so the shape stays visible."""
    for _ in range(30):
        c = rng.integers(0, 256, 3)
        if all(np.abs(c - np.asarray(a)).sum() > 160 for a in away_from):
            break
    return tuple(int(v) for v in c)


def draw_shape_image(kind: str, size: int, rng: np.random.Generator, bank: np.ndarray | None = None,
                     clutter: float = 1.0, plain: bool = False, upright: bool = False) -> Image.Image:
    """One picture: a gradient background, clutter (lines, small decoy shapes), the shape, noise.

    ``clutter`` scales the number of lines and decoys and the noise (0: a clean shape on a gradient).
    ``plain``: a white shape on black, still placed, sized and turned at random, nothing else.
    ``upright``: the shape is not turned (the same random draws are made, so nothing else changes).
    """
    turn = (lambda angle: 0.0) if upright else (lambda angle: angle)  # noqa: E731
    if plain:
        img = Image.new("RGB", (size, size))
        r = size * rng.uniform(0.2, 0.36)
        centre = rng.uniform(r, size - r, 2)
        pts = _rotate(_outline(kind, r, rng.uniform(0.8, 1.0)), turn(rng.uniform(0, 2 * np.pi)), *centre)
        draw = ImageDraw.Draw(img)
        if kind == "ring":
            draw.line(pts + pts[:1], fill="white", width=max(2, int(r * 0.25)), joint="curve")
        else:
            draw.polygon(pts, fill="white")
        return img
    c0, c1 = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    bg = (c0 + (c1 - c0) * ramp).astype(np.uint8)  # one row of the gradient per pixel row
    bg = np.broadcast_to(bg[:, None, :] if rng.random() < 0.5 else bg[None, :, :], (size, size, 3))
    img = Image.fromarray(np.ascontiguousarray(bg))
    d = ImageDraw.Draw(img)
    for _ in range(int(round(rng.integers(2, 7) * clutter))):  # lines
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        d.line([(x0, y0), (x1, y1)], fill=_colour(rng), width=int(rng.integers(1, max(2, size // 50))))
    for _ in range(int(round(rng.integers(0, 3) * clutter))):  # small decoys of any class, so "a shape is present" is no cue
        decoy = DECOYS[rng.integers(len(DECOYS))]
        r = size * rng.uniform(0.03, 0.07)
        pts = _rotate(_outline(decoy, r, 1.0), rng.uniform(0, 2 * np.pi), *rng.uniform(0, size, 2))
        d.polygon(pts, fill=_colour(rng))
    r = size * rng.uniform(0.2, 0.36)
    cx, cy = rng.uniform(r, size - r, 2)
    fg = _colour(rng, c0, c1)
    pts = _rotate(_outline(kind, r, rng.uniform(0.8, 1.0)), turn(rng.uniform(0, 2 * np.pi)), cx, cy)
    if kind == "ring":
        d.line(pts + pts[:1], fill=fg, width=max(2, int(r * rng.uniform(0.18, 0.3))), joint="curve")
    else:
        d.polygon(pts, fill=fg)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    bank = noise_bank(size, rng) if bank is None else bank
    oy, ox = rng.integers(0, bank.shape[0] - size + 1, 2)
    noise = bank[oy:oy + size, ox:ox + size].astype(np.int16)
    noise *= int(round(rng.integers(1, 5) * clutter))  # σ from 3 to 12 grey levels
    noise += np.asarray(img)
    return Image.fromarray(np.clip(noise, 0, 255, out=noise).astype(np.uint8))


def noise_bank(size: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise (σ = 3) twice the image size; each image takes a random window (far cheaper than fresh)."""
    return np.clip(rng.standard_normal((2 * size, 2 * size, 3), dtype=np.float32) * 3, -127, 127).astype(np.int8)


def paint(n: int, size: int, classes=SHAPES, *, seed: int = 0, clutter: float = 1.0, plain: bool = False,
          upright: bool = False) -> tuple[list[Image.Image], list[int]]:
    """``n`` pictures (``draw_shape_image``), labels cycling through ``classes``; picture ``i`` depends only on
    ``(seed, i)`` and its class, so a larger ``n`` extends a smaller set."""
    bank = noise_bank(size, np.random.default_rng([seed, 2**31]))
    labels = [i % len(classes) for i in range(n)]
    images = [draw_shape_image(classes[y], size, np.random.default_rng([seed, i]), bank, clutter, plain, upright)
              for i, y in enumerate(labels)]
    return images, labels


def synthetic(n: int = 400, *, image_size: int = 128, num_classes: int = 4, val_fraction: float = 0.25,
              seed: int = 0, clutter: float = 1.0, plain: bool = False) -> ImageSet:
    """Shapes drawn with Pillow: offline, deterministic from ``seed``, balanced classes, stratified split.

    Image ``i`` depends only on ``(seed, i)``, so a larger ``n`` extends a smaller set. By default the colours,
    background, clutter and noise vary as well as the shape's place, size and angle; that is hard for a network
    trained from random weights (ResNet-18 needs several hundred steps to pass 45 % on four classes), which is
    what pretraining is for. ``plain=True`` keeps only the geometry (white on black): random weights learn it
    in a few dozen steps, so it checks that training works at all.
    """
    if not 2 <= num_classes <= len(SHAPES):
        raise DatasetError(f"The synthetic set has 2 to {len(SHAPES)} classes, not {num_classes}.")
    if n < 2 * num_classes:
        raise DatasetError(f"The synthetic set needs at least {2 * num_classes} images for {num_classes} classes.")
    classes = list(SHAPES[:num_classes])
    images, labels = paint(n, image_size, classes, seed=seed, clutter=clutter, plain=plain)
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    base = InMemory(images, labels)
    return ImageSet("synthetic", classes, Subset(base, train_idx), Subset(base, val_idx),
                    source=f"built-in synthetic shapes{' (plain)' if plain else ''}, {n} images at {image_size} px, "
                           f"seed {seed}")


def stratified_split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Per class, a seeded shuffle; at least one image of every class on each side."""
    if not 0 < val_fraction < 1:
        raise DatasetError(f"The validation fraction must be between 0 and 1, not {val_fraction}.")
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        idx = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
        k = min(max(1, round(len(idx) * val_fraction)), len(idx) - 1)
        val += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(val)


# ---------------------------------------------------------------- ImageFolder layout (folders and zips)

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
        raise DamagedImage(Path(path).name, str(e)) from None


def _folder(root: Path, check: _FileCheck, where: str) -> _ImageFolder:
    """``where`` names the folder in messages (the zip's name, never the temporary folder it was extracted to)."""
    if not _subdirs(root):
        _no_classes(root, where)
    return _ImageFolder(str(root), loader=_load_image, is_valid_file=check, allow_empty=True)


def _no_classes(root: Path, where: str):
    if any(is_image_name(f.name) for f in root.iterdir() if f.is_file()):
        raise DatasetError(f"The images in {where} must be sorted into one folder per class "
                           "(for example cats/1.jpg and dogs/2.jpg), but there are no class folders.")
    raise DatasetError(f"No readable images were found in {where} (use JPEG, PNG, BMP, TIFF or WebP files "
                       "inside one folder per class).")


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
        raise DatasetError(f"Only one class ({nonempty[0]}) has images in {where}; transfer learning needs at least "
                           "two class folders.")
    few = [c for c, k in zip(ds.classes, counts) if k < 2]
    if few:
        raise DatasetError(f"The class folder '{few[0]}' in {where} has fewer than 2 images; every class needs at "
                           "least 2 (one to train on, one to check).")


def from_folder(path: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0, name: str | None = None,
                max_depth: int = ZIP_LIMITS["max_depth"]) -> ImageSet:
    """An ImageFolder layout (``class/image.jpg``, optionally under ``train/`` and ``val/``); split if no split."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"There is no folder at {path}.")
    root = _find_root(path, max_depth)
    check = _FileCheck()
    split = _split_dirs(root)
    label = name or path.name
    if split:
        train = _folder(split[0], check, f"{label}/{split[0].name}")
        val = _folder(split[1], check, f"{label}/{split[1].name}")
        _check_classes(train, f"{label}/{split[0].name}")
        if train.classes != val.classes:
            raise DatasetError(f"The train and val folders of {label} have different class folders "
                               f"({', '.join(train.classes)} vs {', '.join(val.classes)}).")
        if not val.samples:
            raise DatasetError(f"The val folder of {label} holds no readable images.")
        result = ImageSet(label, list(train.classes), train, val, source=str(path), skipped=check.skipped,
                          notes=["train/val split as given in the folders"])
    else:
        whole = _folder(root, check, label)
        _check_classes(whole, label)
        tr, va = stratified_split(whole.targets, val_fraction, seed)
        result = ImageSet(label, list(whole.classes), Subset(whole, tr), Subset(whole, va), source=str(path),
                          skipped=check.skipped, notes=[f"no train/val folders: {val_fraction:.0%} of each class "
                                                        f"held out for validation (seed {seed})"])
    if result.skipped:
        result.notes.append(f"{result.skipped} non-image or unreadable files skipped")
    return result


def _entry_parts(name: str) -> list[str] | None:
    """The safe relative path parts of a zip entry, or None if it is absolute or climbs out with ``..``."""
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
        raise DatasetError(f"{label} is not a readable zip archive.") from None
    with zf:
        infos = zf.infolist()
        if not infos:
            raise DatasetError(f"{label} is an empty zip archive.")
        if len(infos) > lim["max_files"]:
            raise DatasetError(f"{label} holds {len(infos):,} entries, more than the limit of {lim['max_files']:,}.")
        total = sum(i.file_size for i in infos)
        packed = sum(i.compress_size for i in infos)
        if total > lim["max_bytes"]:
            raise DatasetError(f"{label} would unpack to {total / 2**20:,.0f} MiB, more than the limit of "
                               f"{lim['max_bytes'] / 2**20:,.0f} MiB.")
        bomb = total > 2**20 and total > lim["max_ratio"] * max(packed, 1)
        bomb = bomb or any(i.file_size > 2**20 and i.file_size > lim["max_ratio"] * max(i.compress_size, 1)
                           for i in infos)
        if bomb:
            raise DatasetError(f"{label} was refused: it compresses more than {lim['max_ratio']:.0f}:1, "
                               "which looks like a zip bomb, not photos.")
        plan, skipped = [], 0
        root = dest.resolve()
        for info in infos:
            parts = _entry_parts(info.filename)
            if parts is None:
                raise DatasetError(f"{label} was refused: the entry '{info.filename[:80]}' points outside its folder.")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DatasetError(f"{label} was refused: the entry '{info.filename[:80]}' is a symbolic link.")
            if info.is_dir() or not parts:
                continue
            if (len(parts) - 1 > lim["max_depth"] or not all(_visible(p) for p in parts)
                    or not is_image_name(parts[-1]) or any(len(p.encode()) > 255 for p in parts)):
                skipped += 1
                continue
            target = root.joinpath(*parts)
            if not target.resolve().is_relative_to(root):
                raise DatasetError(f"{label} was refused: the entry '{info.filename[:80]}' points outside its folder.")
            plan.append((info, target))
        written = 0
        for info, target in plan:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        written += len(chunk)
                        if written > lim["max_bytes"]:
                            raise DatasetError(f"{label} unpacks to more than {lim['max_bytes'] / 2**20:,.0f} MiB.")
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
        raise DatasetError(f"There is no file at {path}.")
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
        ds.notes = [n for n in ds.notes if "skipped" not in n] + [f"{ds.skipped} non-image or unreadable files skipped"]
    return ds


# ---------------------------------------------------------------- the ants/bees set of PyTorch's tutorial

def data_dir() -> Path:
    """``$RESNET_DATA_DIR``, else ``$XDG_CACHE_HOME/resnet-lab`` (``~/.cache/resnet-lab``)."""
    if config.get("RESNET_DATA_DIR"):
        return Path(config.get("RESNET_DATA_DIR"))
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "resnet-lab"


def download(url: str, dst: Path, *, sha256: str | None = None,
             max_bytes: int = HYMENOPTERA["max_download_bytes"]) -> Path:
    """Download ``url`` to ``dst`` (https, timeouts, size cap, back-off: ``resnet.downloads``), hash-checked."""
    try:
        return downloads.fetch(url, dst, max_bytes=max_bytes, sha256_prefix=sha256)
    except downloads.HashMismatch:
        raise DatasetError("The downloaded data set does not match its expected checksum; it was deleted.") from None
    except downloads.DownloadFailed as e:
        raise DatasetError(f"Could not download the data set: {e} Use the built-in synthetic set or upload a zip "
                           "instead.") from None


def hymenoptera(*, cache_dir: str | os.PathLike | None = None, url: str | None = None,
                sha256: str | None = None) -> ImageSet:
    """Ants vs bees (PyTorch's transfer-learning tutorial): downloaded once, checksummed, cached, extracted.

    ``url`` / ``RESNET_HYMENOPTERA_URL`` point at a mirror; ``sha256`` / ``RESNET_HYMENOPTERA_SHA256`` pin its hash.
    """
    url = url or config.get("RESNET_HYMENOPTERA_URL") or HYMENOPTERA["url"]
    pinned = sha256 or config.get("RESNET_HYMENOPTERA_SHA256") or HYMENOPTERA["sha256"]
    cache = Path(cache_dir) if cache_dir else data_dir()
    folder = cache / HYMENOPTERA["folder"]
    done = folder / ".complete"
    if not done.is_file():
        archive = cache / "hymenoptera_data.zip"
        recorded = cache / "hymenoptera_data.zip.sha256"
        expected = pinned or (recorded.read_text().strip() if recorded.is_file() else None)
        if not archive.is_file() or (expected and file_sha256(archive) != expected.lower()):
            download(url, archive, sha256=expected)
        if not recorded.is_file():
            recorded.write_text(file_sha256(archive) + "\n")
        staging = cache / (HYMENOPTERA["folder"] + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        extract_zip(archive, staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.replace(folder)
        done.write_text(url + "\n")
    ds = from_folder(folder, name="hymenoptera")
    ds.source = url
    return ds


# ---------------------------------------------------------------- one entry point

def load_dataset(spec, *, val_fraction: float | None = None, seed: int = 0, synthetic_images: int = 400,
                 image_size: int = 128) -> ImageSet:
    """``"synthetic"``, ``"hymenoptera"``, a folder, a ``.zip``, or an ``ImageSet`` (returned as is).

    ``val_fraction`` applies where no split is given (default 0.25 for the synthetic set, else 0.2).
    """
    if isinstance(spec, ImageSet):
        return spec
    text = str(spec).strip()
    if text == "synthetic":
        return synthetic(synthetic_images, image_size=image_size, seed=seed, val_fraction=val_fraction or 0.25)
    if text == "hymenoptera":
        return hymenoptera()
    val_fraction = val_fraction or 0.2
    path = Path(text).expanduser()
    if path.is_dir():
        return from_folder(path, val_fraction=val_fraction, seed=seed)
    if path.is_file():
        return from_zip(path, val_fraction=val_fraction, seed=seed)
    raise DatasetError(f"'{text}' is neither 'synthetic', 'hymenoptera', a folder nor a zip file.")
