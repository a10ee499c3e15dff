"""The built-in pretraining source: many classes of procedural glyphs, none of them the target's shapes.

Offline there are no ImageNet weights, and a network that starts from random weights cannot show what transfer
learning is for. This set stands in for ImageNet: a larger, different task whose lessons carry over to the
built-in shapes (``synthetic``). It has ``SOURCE_CLASSES`` classes of two kinds, each class a fixed random
design drawn from its own seeded generator:

* ``stroke-NN``: an invented letter, two to four thick strokes (straight, bent or curved) in a unit box;
* ``blob-NN``: a filled outline whose radius varies with the angle (a few random harmonics), irregular and
  never one of the target's circle, square, triangle, cross, star, ring, arrow or crescent.

Every picture is drawn the way the target's are (``synthetic``'s background, clutter lines, blur and noise, which
this module reuses), at a random place, size, angle and aspect, with its design's points jittered, in a random
colour away from the background: what a network learns here (edges, strokes, outlines, invariance to colour,
place, angle and clutter) is what the target needs, but the classes are not the target's. Deterministic from a
seed; picture ``i`` depends only on ``(seed, i)``.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from ..errors import DatasetError
from .imageset import ImageSet, InMemory
from .synthetic import background, blur_and_noise, clutter_lines, colour, noise_bank, rotate

SOURCE_CLASSES = 24          # half strokes, half blobs
DESIGN_SEED = 20_251_129     # the classes' designs: the same on every machine, whatever the run's seed
SOURCE_NAME = "source"
EASY = 0.3                   # share of plain pictures (white on black or black on white): they are learnt first
TURN = math.pi               # glyphs are turned by up to this many radians either way (the target's are turned freely)


def class_names(n: int = SOURCE_CLASSES) -> list[str]:
    half = (n + 1) // 2
    return [f"stroke-{k:02d}" for k in range(half)] + [f"blob-{k:02d}" for k in range(n - half)]


@lru_cache(maxsize=256)
def _design(name: str) -> tuple:
    """A class's fixed design in a unit box: ("stroke", [polyline, …]) or ("blob", amplitudes, phases)."""
    kind, k = name.split("-")
    rng = np.random.default_rng([DESIGN_SEED, 0 if kind == "stroke" else 1, int(k)])
    if kind == "stroke":
        lines = []
        for _ in range(int(rng.integers(2, 5))):
            shape = rng.integers(3)
            if shape == 0:    # a straight stroke
                pts = rng.uniform(-1, 1, (2, 2))
            elif shape == 1:  # a bent one
                pts = rng.uniform(-1, 1, (3, 2))
            else:             # an arc
                c, r = rng.uniform(-0.4, 0.4, 2), rng.uniform(0.35, 0.8)
                a0 = rng.uniform(0, 2 * np.pi)
                t = a0 + np.linspace(0, rng.uniform(0.7, 1.6) * np.pi, 8)
                pts = np.stack([c[0] + r * np.cos(t), c[1] + r * np.sin(t)], 1)
            lines.append(pts)
        return ("stroke", tuple(tuple(map(tuple, p)) for p in lines))
    harmonics = np.arange(2, 7)
    amp = rng.uniform(0.0, 0.3, len(harmonics)) * (rng.random(len(harmonics)) < 0.7)
    amp[rng.integers(len(harmonics))] = rng.uniform(0.2, 0.35)  # at least one clear lobe pattern
    return ("blob", tuple(amp), tuple(rng.uniform(0, 2 * np.pi, len(harmonics))))


def draw_glyph_image(name: str, size: int, rng: np.random.Generator, bank: np.ndarray | None = None,
                     clutter: float = 1.0, easy: float = EASY, turn: float = TURN) -> Image.Image:
    """One picture of class ``name``: the target's background and clutter, the glyph, blur and noise (``clutter``
    scales the lines and the noise, as for the target). A share ``easy`` of the pictures are plain instead (the
    glyph alone, white on black or black on white): a network from random weights learns those within a few dozen
    steps, and the shapes it learns there help it through the cluttered ones. ``turn``: the largest angle."""
    plain = rng.random() < easy
    if plain:  # white on black or black on white: the glyph alone, learnt within a few dozen steps
        dark = rng.random() < 0.5
        img, fg = Image.new("RGB", (size, size), "black" if dark else "white"), "white" if dark else "black"
        d = ImageDraw.Draw(img)
    else:
        img, c0, c1 = background(size, rng)
        d = ImageDraw.Draw(img)
        clutter_lines(d, size, rng, clutter)
    r = size * rng.uniform(0.2, 0.36)
    cx, cy = rng.uniform(r, size - r, 2)
    if not plain:
        fg = colour(rng, c0, c1)
    angle, aspect = rng.uniform(-turn, turn), rng.uniform(0.75, 1.0)
    scale = np.array([1.0, aspect])
    design = _design(name)
    if design[0] == "stroke":
        width = max(2, int(r * rng.uniform(0.18, 0.3)))
        for line in design[1]:
            p = (np.asarray(line) + rng.normal(0, 0.07, (len(line), 2))) * scale * r
            d.line(rotate(p, angle, cx, cy), fill=fg, width=width, joint="curve")
    else:
        _, amp, phase = design
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        amp = np.asarray(amp) * rng.uniform(0.8, 1.2, len(amp))
        rad = 1 + sum(a * np.cos(h * t + ph) for a, h, ph in zip(amp, range(2, 7), phase))
        rad = rad / rad.max()
        p = np.stack([rad * np.cos(t), rad * np.sin(t)], 1) * scale * r
        d.polygon(rotate(p, angle, cx, cy), fill=fg)
    return img if plain else blur_and_noise(img, size, rng, bank, clutter)


def paint_source(n: int, size: int, *, seed: int = 0, num_classes: int = SOURCE_CLASSES, start: int = 0,
                 clutter: float = 1.0, easy: float = EASY, stream: int = 0) -> tuple[list[Image.Image], list[int]]:
    """Pictures ``start … start+n-1`` of the source set, labels cycling through the classes. ``stream`` > 0: another,
    independent series from the same seed (the validation pictures, which no training epoch ever draws)."""
    names = class_names(num_classes)
    bank = noise_bank(size, np.random.default_rng([seed, 2**31, 1]))
    labels = [(start + i) % num_classes for i in range(n)]
    key = (lambda i: [seed, 2**30, i]) if stream == 0 else (lambda i: [seed, 2**30, i, stream])  # noqa: E731
    images = [draw_glyph_image(names[y], size, np.random.default_rng(key(start + i)), bank, clutter, easy)
              for i, y in enumerate(labels)]
    return images, labels


def source_set(per_class: int = 200, *, image_size: int = 64, val_per_class: int = 10, seed: int = 0,
               num_classes: int = SOURCE_CLASSES) -> ImageSet:
    """The pretraining set: ``per_class`` training and ``val_per_class`` validation pictures of each class (the
    validation pictures are a series of their own, as in ``pretrain``)."""
    if not 2 <= num_classes <= 2 * 64:
        raise DatasetError(f"The source set has 2 to 128 classes, not {num_classes}.")
    if per_class < 1 or val_per_class < 1:
        raise DatasetError("The source set needs at least one training and one validation picture per class.")
    n_train, n_val = per_class * num_classes, val_per_class * num_classes
    train = paint_source(n_train, image_size, seed=seed, num_classes=num_classes)
    val = paint_source(n_val, image_size, seed=seed, num_classes=num_classes, stream=1)
    return ImageSet(SOURCE_NAME, class_names(num_classes), InMemory(*train), InMemory(*val),
                    source=f"built-in pretraining source: {num_classes} classes of procedural glyphs, "
                           f"{n_train} training and {n_val} validation pictures at {image_size} px, seed {seed}")


def contact_sheet(size: int = 48, columns: int = 12, seed: int = 0, num_classes: int = SOURCE_CLASSES) -> Image.Image:
    """One picture of every class, in a grid (for the README and the curious)."""
    images, _ = paint_source(num_classes, size, seed=seed, num_classes=num_classes)
    rows = math.ceil(num_classes / columns)
    sheet = Image.new("RGB", (columns * size, rows * size), "white")
    for i, im in enumerate(images):
        sheet.paste(im, ((i % columns) * size, (i // columns) * size))
    return sheet
