"""Drawings for the Feature maps tab: a grid of the strongest channels and a Grad-CAM overlay.

Figures are ``matplotlib.figure.Figure`` objects (no pyplot global state), so concurrent requests
never draw on each other's canvas.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from PIL import Image

from ...analysis.features import strongest_channels


def feature_grid(fmap: torch.Tensor, n: int = 16, title: str = "") -> Figure:
    """The ``n`` strongest channels of a C×H×W map, strongest first, each labelled with its channel index.

    Each channel is scaled to its own range (its min → dark, its max → bright), because channels differ
    in magnitude by orders and one global scale would leave most of them black. The tiles are drawn as
    one mosaic image, not one axes each: 64 channels draw in a fraction of a second.
    """
    fmap = fmap.detach().float().cpu()
    if fmap.dim() == 4:
        fmap = fmap[0]
    channels = strongest_channels(fmap, n)
    count = max(1, len(channels))
    cols = min(8, math.ceil(math.sqrt(count)))
    rows = math.ceil(count / cols)
    h, w = fmap.shape[-2:]
    gap = max(1, round(max(h, w) / 16))
    mosaic = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, dtype=np.float32)
    tile_in = 1.5 if cols <= 4 else 1.15  # inches per tile: big grids stay screen-sized
    fig = Figure(figsize=(tile_in * cols, tile_in * rows + (0.45 if title else 0.1)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for k, c in enumerate(channels):
        tile = fmap[c].numpy()
        lo, hi = float(tile.min()), float(tile.max())
        tile = (tile - lo) / (hi - lo) if hi > lo else np.zeros_like(tile)
        r, q = divmod(k, cols)
        y, x = r * (h + gap), q * (w + gap)
        mosaic[y:y + h, x:x + w] = tile
        ax.text(x + 0.5, y + 0.5, f"#{c}", fontsize=7, color="white", ha="left", va="top",
                bbox=dict(boxstyle="square,pad=0.1", fc="black", ec="none", alpha=0.55))
    cmap = colormaps["viridis"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def cam_overlay(image: Image.Image, heatmap: np.ndarray, title: str = "", *, alpha: float = 0.45,
                cmap: str = "jet") -> Image.Image:
    """The heatmap (H×W in [0, 1]) coloured with ``cmap`` and blended over ``image``.

    Returned as a PIL image (sharp at the photo's own resolution, no axes); ``title`` goes into the
    image's metadata only, since the UI component shows its own label.
    """
    image = image.convert("RGB")
    heat = np.clip(np.asarray(heatmap, dtype=np.float32), 0, 1)
    heat_img = Image.fromarray((heat * 255).astype(np.uint8), mode="L").resize(image.size, Image.BILINEAR)
    coloured = colormaps[cmap](np.asarray(heat_img, dtype=np.float32) / 255.0)[..., :3]
    base = np.asarray(image, dtype=np.float32) / 255.0
    blended = (1 - alpha) * base + alpha * coloured
    out = Image.fromarray((np.clip(blended, 0, 1) * 255).round().astype(np.uint8), mode="RGB")
    if title:
        out.info["title"] = title
    return out
