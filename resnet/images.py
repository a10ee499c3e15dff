"""Reading user images safely: size limits before decoding, EXIF orientation, any mode to RGB."""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import config
from .errors import BadImage


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
log = logging.getLogger("resnet.images")


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
                raise BadImage("No image file was received.")
            if p.stat().st_size == 0:
                raise BadImage("The file is empty (0 bytes).")
        try:
            img = Image.open(source, formats=FORMATS)  # reads the header only
        except UnidentifiedImageError:
            raise BadImage("This file is not an image format we can read (use JPEG, PNG, GIF, BMP or WebP).") from None
        except Image.DecompressionBombError:
            raise BadImage(f"The image is too large to decode safely (limit {limit:,} pixels).") from None
        except Exception as e:  # OSError, or a damaged header's ValueError/struct.error from a decoder
            log.info("image header unreadable: %s: %s", type(e).__name__, e)
            raise BadImage("The image could not be read: its file is damaged or not a supported picture.") from None
    w, h = img.size
    if w * h > limit:
        raise BadImage(f"The image is {w}×{h} = {w * h:,} pixels, over the limit of {limit:,}; "
                       "please upload a smaller picture.")
    if min(w, h) < 1 or max(w, h) > MAX_ASPECT * min(w, h):
        raise BadImage(f"The image is {w}×{h} pixels, too long and thin to classify (more than {MAX_ASPECT}:1); "
                       "please crop it.")
    try:
        img.seek(0)  # animated GIF/WebP: the first frame
        img.load()
        img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except Exception as e:  # OSError, SyntaxError, ValueError, IndexError …: whatever a damaged file provokes
        log.info("image undecodable: %s: %s", type(e).__name__, e)
        raise BadImage("The image is damaged or truncated and could not be decoded.") from None


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
