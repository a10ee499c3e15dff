"""The built-in synthetic set: shapes drawn with Pillow (``paint``, also the labs' shapes set), offline and
deterministic from a seed, and the stratified split the loaders share."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import Subset

from ..errors import DatasetError
from ..i18n import error
from .imageset import ImageSet, InMemory


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


def rotate(p: np.ndarray, angle: float, cx: float, cy: float) -> list[tuple[float, float]]:
    c, s = math.cos(angle), math.sin(angle)
    q = p @ np.array([[c, s], [-s, c]])
    return [(float(x + cx), float(y + cy)) for x, y in q]


def colour(rng, *away_from) -> tuple[int, int, int]:
    """A random colour some distance from each of ``away_from``, so the shape stays visible."""
    for _ in range(30):
        c = rng.integers(0, 256, 3)
        if all(np.abs(c - np.asarray(a)).sum() > 160 for a in away_from):
            break
    return tuple(int(v) for v in c)


def background(size: int, rng: np.random.Generator) -> tuple[Image.Image, tuple, tuple]:
    """A two-colour gradient, vertical or horizontal at random; returns (picture, first colour, second colour)."""
    c0, c1 = np.array(colour(rng), np.float32), np.array(colour(rng), np.float32)
    ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None]
    bg = (c0 + (c1 - c0) * ramp).astype(np.uint8)  # one row of the gradient per pixel row
    bg = np.broadcast_to(bg[:, None, :] if rng.random() < 0.5 else bg[None, :, :], (size, size, 3))
    return Image.fromarray(np.ascontiguousarray(bg)), c0, c1


def clutter_lines(d: ImageDraw.ImageDraw, size: int, rng: np.random.Generator, clutter: float = 1.0) -> None:
    """Two to six random lines (times ``clutter``) of random colours and widths."""
    for _ in range(int(round(rng.integers(2, 7) * clutter))):
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        d.line([(x0, y0), (x1, y1)], fill=colour(rng), width=int(rng.integers(1, max(2, size // 50))))


def blur_and_noise(img: Image.Image, size: int, rng: np.random.Generator, bank: np.ndarray | None,
                   clutter: float = 1.0) -> Image.Image:
    """A slight blur on three pictures in ten, then Gaussian noise (a window of ``bank``, σ 3 to 12 × ``clutter``)."""
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    bank = noise_bank(size, rng) if bank is None else bank
    oy, ox = rng.integers(0, bank.shape[0] - size + 1, 2)
    noise = bank[oy:oy + size, ox:ox + size].astype(np.int16)
    noise *= int(round(rng.integers(1, 5) * clutter))  # σ from 3 to 12 grey levels
    noise += np.asarray(img)
    return Image.fromarray(np.clip(noise, 0, 255, out=noise).astype(np.uint8))


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
        pts = rotate(_outline(kind, r, rng.uniform(0.8, 1.0)), turn(rng.uniform(0, 2 * np.pi)), *centre)
        draw = ImageDraw.Draw(img)
        if kind == "ring":
            draw.line(pts + pts[:1], fill="white", width=max(2, int(r * 0.25)), joint="curve")
        else:
            draw.polygon(pts, fill="white")
        return img
    img, c0, c1 = background(size, rng)
    d = ImageDraw.Draw(img)
    clutter_lines(d, size, rng, clutter)
    for _ in range(int(round(rng.integers(0, 3) * clutter))):  # small decoys of any class, so "a shape is present" is no cue
        decoy = DECOYS[rng.integers(len(DECOYS))]
        r = size * rng.uniform(0.03, 0.07)
        pts = rotate(_outline(decoy, r, 1.0), rng.uniform(0, 2 * np.pi), *rng.uniform(0, size, 2))
        d.polygon(pts, fill=colour(rng))
    r = size * rng.uniform(0.2, 0.36)
    cx, cy = rng.uniform(r, size - r, 2)
    fg = colour(rng, c0, c1)
    pts = rotate(_outline(kind, r, rng.uniform(0.8, 1.0)), turn(rng.uniform(0, 2 * np.pi)), cx, cy)
    if kind == "ring":
        d.line(pts + pts[:1], fill=fg, width=max(2, int(r * rng.uniform(0.18, 0.3))), joint="curve")
    else:
        d.polygon(pts, fill=fg)
    return blur_and_noise(img, size, rng, bank, clutter)


def noise_bank(size: int, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise (σ = 3) twice the image size; each image takes a random window (far cheaper than fresh)."""
    return np.clip(rng.standard_normal((2 * size, 2 * size, 3), dtype=np.float32) * 3, -127, 127).astype(np.int8)


def paint(n: int, size: int, classes=SHAPES, *, seed: int = 0, clutter: float = 1.0, plain: bool = False,
          upright: bool = False, stream: int = 0) -> tuple[list[Image.Image], list[int]]:
    """``n`` pictures (``draw_shape_image``), labels cycling through ``classes``; picture ``i`` depends only on
    ``(seed, i)`` and its class, so a larger ``n`` extends a smaller set. ``stream`` > 0: another, independent
    series of pictures from the same seed (the synthetic set's separate validation images)."""
    bank = noise_bank(size, np.random.default_rng([seed, 2**31]))
    labels = [i % len(classes) for i in range(n)]
    key = (lambda i: [seed, i]) if stream == 0 else (lambda i: [seed, i, stream])  # noqa: E731
    images = [draw_shape_image(classes[y], size, np.random.default_rng(key(i)), bank, clutter, plain, upright)
              for i, y in enumerate(labels)]
    return images, labels


VAL_PER_CLASS = 100  # validation images per class of the built-in target set (``load_dataset("synthetic")``)
TARGET_CLASSES = 4   # classes of the built-in target set (the first four shapes)


def synthetic(n: int = 400, *, image_size: int = 128, num_classes: int = TARGET_CLASSES, val_fraction: float = 0.25,
              seed: int = 0, clutter: float = 1.0, plain: bool = False, val_per_class: int | None = None) -> ImageSet:
    """Shapes drawn with Pillow: offline, deterministic from ``seed``, balanced classes, stratified split.

    Image ``i`` depends only on ``(seed, i)``, so a larger ``n`` extends a smaller set. By default the colours,
    background, clutter and noise vary as well as the shape's place, size and angle; that is hard for a network
    trained from random weights (ResNet-18 needs several hundred steps to pass 45 % on four classes), which is
    what pretraining is for. ``plain=True`` keeps only the geometry (white on black): random weights learn it
    in a few dozen steps, so it checks that training works at all.

    ``val_per_class``: the ``n`` images are all for training and the validation split is a separate series of
    ``val_per_class`` images per class (``val_fraction`` is then unused), the same whatever ``n``: large enough
    that accuracies are measured to a few points (100 per class: a standard error of at most 2.5 points on four
    classes), however few training images a run keeps (``FinetuneConfig.per_class``).
    """
    if not 2 <= num_classes <= len(SHAPES):
        raise error(DatasetError, "data.synthetic_classes", most=len(SHAPES), n=num_classes)
    if n < 2 * num_classes:
        raise error(DatasetError, "data.synthetic_images", least=2 * num_classes, n=num_classes)
    classes = list(SHAPES[:num_classes])
    images, labels = paint(n, image_size, classes, seed=seed, clutter=clutter, plain=plain)
    kind = f"built-in synthetic shapes{' (plain)' if plain else ''}"
    if val_per_class:
        val_images, val_labels = paint(val_per_class * num_classes, image_size, classes, seed=seed, clutter=clutter,
                                       plain=plain, stream=1)
        return ImageSet("synthetic", classes, InMemory(images, labels), InMemory(val_images, val_labels),
                        source=f"{kind}, {n} training and {len(val_images)} validation images at {image_size} px, "
                               f"seed {seed}")
    train_idx, val_idx = stratified_split(labels, val_fraction, seed)
    base = InMemory(images, labels)
    return ImageSet("synthetic", classes, Subset(base, train_idx), Subset(base, val_idx),
                    source=f"{kind}, {n} images at {image_size} px, seed {seed}")


def per_class_subset(ds, labels: list[int], per_class: int, seed: int):
    """At most ``per_class`` items of each class of ``ds`` (``labels`` its labels), a seeded shuffle per class, kept in
    their original order. Returns (subset,
    classes that had fewer). Each class has its own shuffle, so a smaller ``per_class`` keeps a subset of what a
    larger one keeps."""
    keep, short = [], []
    for c in sorted(set(labels)):
        g = torch.Generator().manual_seed((seed * 1_000_003 + 7919 * (c + 1)) % 2**62)
        idx = [i for i, y in enumerate(labels) if y == c]
        if len(idx) < per_class:
            short.append(c)
        keep += [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()[:per_class]]
    return Subset(ds, sorted(keep)), short


def stratified_split(labels: list[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Per class, a seeded shuffle; at least one image of every class on each side."""
    if not 0 < val_fraction < 1:
        raise error(DatasetError, "data.val_fraction", value=val_fraction)
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        idx = [idx[j] for j in torch.randperm(len(idx), generator=g).tolist()]
        k = min(max(1, round(len(idx) * val_fraction)), len(idx) - 1)
        val += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(val)
