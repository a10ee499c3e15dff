"""Reading and preprocessing images: the one decoder (``open_image``) and the one transform factory (``transform``).

``open_image`` reads what strangers upload safely: size limits before decoding, EXIF orientation, any mode to
RGB, and ``BadImage`` messages that never carry a path. ``transform(kind, size)`` makes every pipeline the app
uses from torchvision's transforms v2, with the resize ratio, interpolation, mean and standard deviation taken
from torchvision's weights metadata (its ``ImageClassification`` preset) rather than written down here:

* ``decode``: resize the short side and centre-crop a square, once per image → uint8 tensor (``recipe.resize``²);
* ``eval``: ``decode``, centre crop ``size``, scale to [0, 1], normalise: what the weights were trained for;
* ``train``: ``decode``, ``RandomAugment`` (random resized crop and flip, drawn from a ``torch.Generator``), normalise;
* ``view``: ``decode`` and the centre crop as a PIL image: the picture ``eval`` shows the network (Grad-CAM's backdrop).

``decoded=True`` leaves the ``decode`` step out of ``eval`` and ``train`` (their input is already its output).
"""
from __future__ import annotations

import io
import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.models import get_model_weights
from torchvision.transforms import InterpolationMode, v2

from . import config
from .errors import BadImage
from .i18n import error

def pixel_limit() -> int:
    """``RESNET_MAX_IMAGE_PIXELS`` (default 40 million, about a 7700×5200 photo), read when an image is opened."""
    return config.get("RESNET_MAX_IMAGE_PIXELS")

# Longest side / shortest side. Preprocessing scales the short side up to ~256 px, so a 40000×1 strip (a tiny
# file, far under the pixel limit) would become a 10-million-pixel-wide, multi-gigabyte image; panoramas are ≤ ~10:1.
MAX_ASPECT = 200
# Decoders for what phones, cameras and scanners produce; Pillow's rarer decoders (QOI, SGI, DDS, …) fail on
# hostile files with raw IndexError/NotImplementedError, so untrusted bytes never reach them.
FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")  # JPEG includes MPO (multi-picture JPEG)
WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")
CHUNK_PIXELS = 1 << 18  # wide images are rescaled this many pixels at a time (1 MB of float32 scratch)
# Messages never carry a path, an errno string or a decoder's own words (those go to this log, for the operator).
log = logging.getLogger(__name__)


def open_image(source, *, max_pixels: int | None = None) -> Image.Image:
    """Open a path, bytes, file object or PIL image as an RGB image, refusing huge ones before decoding."""
    limit = max_pixels or pixel_limit()
    if isinstance(source, Image.Image):
        img = source
    else:
        if isinstance(source, (bytes, bytearray)):
            source = io.BytesIO(source)
        elif isinstance(source, (str, os.PathLike)):
            p = Path(source)
            if not p.is_file():
                raise error(BadImage, "image.none")
            if p.stat().st_size == 0:
                raise error(BadImage, "image.empty")
        try:
            img = Image.open(source, formats=FORMATS)  # reads the header only
        except UnidentifiedImageError:
            raise error(BadImage, "image.format") from None
        except Image.DecompressionBombError:
            raise error(BadImage, "image.bomb", limit=limit) from None
        except Exception as e:  # OSError, or a damaged header's ValueError/struct.error from a decoder
            log.info("image header unreadable: %s: %s", type(e).__name__, e)
            raise error(BadImage, "image.header") from None
    w, h = img.size
    if w * h > limit:
        raise error(BadImage, "image.too_many_pixels", w=w, h=h, pixels=w * h, limit=limit)
    if min(w, h) < 1 or max(w, h) > MAX_ASPECT * min(w, h):
        raise error(BadImage, "image.too_thin", w=w, h=h, ratio=MAX_ASPECT)
    try:
        img.seek(0)  # animated GIF/WebP: the first frame
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except Exception as e:  # OSError, SyntaxError, ValueError, IndexError …: whatever a damaged file provokes
        log.info("image undecodable: %s: %s", type(e).__name__, e)
        raise error(BadImage, "image.damaged") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB: transparency onto white, 16-bit and float rescaled to 0–255."""
    if img.mode in WIDE_MODES:
        img = _wide_to_l(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return img.convert("RGB") if img.mode != "RGB" else img


def _wide_to_l(img: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float pictures to 8-bit grey without a float64 copy of the whole picture
    (a 40-megapixel upload would need 320 MB for it, and numpy's view of a PIL image another copy): a band of
    rows at a time, 16-bit keeping its top byte (0–65535 → 0–255), 32-bit and float spanning their own finite
    range, rescaled in float32."""
    w, h = img.size
    rows = max(1, CHUNK_PIXELS // w)
    starts = range(0, h, rows)

    def bands():
        for r in starts:
            yield r, np.asarray(img.crop((0, r, w, min(h, r + rows))))

    out = np.empty((h, w), np.uint8)
    if img.mode.startswith("I;16"):
        for r, band in bands():
            out[r:r + len(band)] = band >> 8
        return Image.fromarray(out)
    lo, hi = (float(v) for v in img.getextrema())
    if not (np.isfinite(lo) and np.isfinite(hi)):  # NaN or ±inf in a float picture: the finite range
        lo, hi = np.inf, -np.inf
        for _, band in bands():
            finite = band[np.isfinite(band)]
            if finite.size:
                lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
        if lo > hi:  # nothing finite: a black picture
            lo = hi = 0.0
    scale = np.float32(255.0 / max(hi - lo, 1e-12))
    for r, band in bands():
        f = band.astype(np.float32)
        f -= np.float32(lo)
        f *= scale
        f += np.float32(0.5)  # round to nearest: the brightest value is 255, not float32's 254.99…
        np.nan_to_num(f, copy=False, nan=0.0, posinf=255.0, neginf=0.0)
        out[r:r + len(band)] = np.clip(f, 0, 255, out=f)
    return Image.fromarray(out)


# ---------------------------------------------------------------- the transform factory (torchvision.transforms.v2)

DEFAULT_ARCH = "resnet18"  # whose metadata applies when no architecture is named (ImageNet's 256 → 224, bilinear)
KINDS = ("decode", "eval", "train", "view")


@dataclass(frozen=True)
class Recipe:
    """Preprocessing as torchvision's weights metadata gives it (its ``ImageClassification`` preset), at ``crop`` px:
    the short side is resized to ``resize`` (the metadata's ratio, e.g. 256/224 or ResNet-50's 232/224)."""

    crop: int
    resize: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: InterpolationMode


@lru_cache(maxsize=32)
def _preset(arch: str):
    return get_model_weights(arch).DEFAULT.transforms()


def recipe(size: int | None = None, arch: str | None = None) -> Recipe:
    """``arch``'s preprocessing (default: ``DEFAULT_ARCH``'s) at crop ``size`` (default: the weights' own, 224)."""
    p = _preset(arch or DEFAULT_ARCH)
    crop, resize = int(p.crop_size[0]), int(p.resize_size[0])
    size = crop if size is None else int(size)
    if size < 1:
        raise ValueError(f"the image size must be a positive number of pixels, not {size}")
    return Recipe(size, int(round(size * resize / crop)), tuple(p.mean), tuple(p.std), p.interpolation)


class Pipeline(v2.Compose):
    """A ``v2.Compose`` that says what it does, as torchvision's ``ImageClassification`` does (``crop_size``,
    ``resize_size``, ``mean``, ``std``), plus its ``kind`` and ``recipe``."""

    def __init__(self, transforms: list, kind: str, rec: Recipe):
        super().__init__(transforms)
        self.kind, self.recipe = kind, rec
        self.crop_size, self.resize_size = [rec.crop], [rec.resize]
        self.mean, self.std = list(rec.mean), list(rec.std)


def transform(kind: str, size: int | None = None, *, arch: str | None = None, decoded: bool = False,
              generator: torch.Generator | None = None) -> Pipeline:
    """The pipeline ``kind`` (``decode``, ``eval``, ``train`` or ``view``) at crop ``size`` for ``arch``'s weights.

    Inputs are PIL images (as ``open_image`` returns them) or uint8 tensors; ``decoded=True``: the input is
    already ``decode``'s output. ``generator``: where ``train``'s random draws come from (None: torch's global
    RNG; request paths pass their own, so concurrent jobs cannot change each other's augmentation).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown transform {kind!r}; choose one of: {', '.join(KINDS)}")
    rec = recipe(size, arch)
    decode = [v2.Resize(rec.resize, interpolation=rec.interpolation, antialias=True), v2.CenterCrop(rec.resize)]
    head = [v2.ToImage()] if decoded else decode + [v2.ToImage()]
    normalise = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(rec.mean, rec.std)]
    steps = {
        "decode": decode + [v2.ToImage()],
        "eval": head + [v2.CenterCrop(rec.crop)] + normalise,
        "train": head + [RandomAugment(rec.crop, generator)] + normalise,
        "view": ([] if decoded else decode) + [v2.CenterCrop(rec.crop)],  # stays a PIL image
    }[kind]
    return Pipeline(steps, kind, rec)


def to_view(x: torch.Tensor, *, arch: str | None = None):
    """An ``eval`` output (3×H×W or 1×3×H×W) back to the PIL picture it came from (normalisation undone)."""
    rec = recipe(None, arch)
    x = x.reshape(-1, *x.shape[-3:])[0].detach().float().cpu()
    mean, std = torch.tensor(rec.mean).view(3, 1, 1), torch.tensor(rec.std).view(3, 1, 1)
    return v2.functional.to_pil_image((x * std + mean).clamp(0, 1))


class RandomAugment:
    """``v2.RandomResizedCrop(size, scale=(0.5, 1))`` then ``v2.RandomHorizontalFlip()``, with the same draws, but
    from a given ``torch.Generator``: torchvision's v2 transforms draw from the process-wide RNG, so two visitors
    training at once would change each other's augmentation (and neither run would repeat)."""

    def __init__(self, size: int, generator: torch.Generator | None = None, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size, self.generator, self.scale = size, generator, scale
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.ratio = ratio

    def _uniform(self, lo: float, hi: float) -> float:
        return float(torch.empty(1).uniform_(lo, hi, generator=self.generator))

    def crop(self, height: int, width: int) -> tuple[int, int, int, int]:
        """(top, left, height, width): torchvision's ``RandomResizedCrop`` rule, ten tries then a centre crop."""
        area = height * width
        for _ in range(10):
            target = area * self._uniform(*self.scale)
            aspect = math.exp(self._uniform(*self.log_ratio))
            w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                i = int(torch.randint(0, height - h + 1, (1,), generator=self.generator))
                j = int(torch.randint(0, width - w + 1, (1,), generator=self.generator))
                return i, j, h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img):
        height, width = v2.functional.get_size(img)
        i, j, h, w = self.crop(height, width)
        img = v2.functional.resized_crop(img, i, j, h, w, [self.size, self.size], antialias=True)
        if float(torch.rand(1, generator=self.generator)) < 0.5:
            img = v2.functional.horizontal_flip(img)
        return img
