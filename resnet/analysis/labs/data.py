"""The built-in shapes set the labs train and measure on: every shape ``resnet.data``'s painter draws, one class
each, drawn from a seed (offline, the same numbers each time)."""
from __future__ import annotations

from functools import lru_cache

import torch

from ...data import SHAPES, paint
from ...preprocess import transform

# White upright shapes on black: learnable within a hundred steps, so the race's curves separate in a lesson.
LAB_STYLE = {"plain": True, "upright": True}


@lru_cache(maxsize=8)
def shapes_dataset(n: int = 512, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalised images (N×3×size×size) and their labels (index into ``SHAPES``).

    Place, size and proportions are random, so the class is the outline alone: easy for a convolutional net
    to learn, hard enough that the training curves separate within a hundred or so steps. Drawn rather than
    downloaded (``resnet.data.paint``, the synthetic set's painter), so every lab runs offline and gives the
    same numbers each time.
    """
    images, labels = paint(n, size, SHAPES, seed=seed, **LAB_STYLE)
    to_tensor = transform("eval", size, decoded=True)  # the pictures are already size × size: normalise only
    return torch.stack([to_tensor(img) for img in images]), torch.tensor(labels)


def real_batch(batch_size: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the built-in shapes (same seed → same batch), balanced across classes."""
    x, y = shapes_dataset(max(batch_size, len(SHAPES)), size, seed)
    return x[:batch_size], y[:batch_size]

