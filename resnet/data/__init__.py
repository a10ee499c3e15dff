"""Datasets for transfer learning: a built-in synthetic set, ImageFolder folders and zips, ants/bees, flowers.

Every dataset is an ``ImageSet`` (``imageset``): class names plus a train and a val split whose items are
``(PIL RGB image, class index)``. Transforms are applied later (``resnet.preprocess.transform``), so one split can
be seen with and without augmentation. ``load_dataset`` is the one entry point: the synthetic set (``synthetic``),
a folder or a zip (``folders``, extracted defensively) or a downloaded set (``download``: ants/bees, and the
note's tutorial's flower_photos).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import DatasetError
from ..i18n import error
from .download import FLOWERS, data_dir, download, extract_tgz, flowers, hymenoptera
from .folders import extract_zip, from_folder, from_zip, is_image_name
from .imageset import (HYMENOPTERA, IMAGE_EXTENSIONS, SPLIT_NAMES, ZIP_LIMITS, DamagedImage, ImageSet, InMemory,
                       targets)
from .synthetic import (DECOYS, SHAPES, VAL_PER_CLASS, draw_shape_image, noise_bank, paint, per_class_subset,
                        stratified_split, synthetic)

__all__ = ["DECOYS", "FLOWERS", "HYMENOPTERA", "IMAGE_EXTENSIONS", "SHAPES", "SPLIT_NAMES", "ZIP_LIMITS",
           "DamagedImage", "DatasetError", "ImageSet", "InMemory", "data_dir", "download", "draw_shape_image",
           "extract_tgz", "extract_zip", "flowers", "from_folder", "from_zip", "hymenoptera", "is_image_name", "load_dataset", "noise_bank", "paint",
           "per_class_subset", "stratified_split", "synthetic", "targets", "VAL_PER_CLASS"]


def load_dataset(spec, *, val_fraction: float | None = None, seed: int = 0, synthetic_images: int = 400,
                 image_size: int = 128) -> ImageSet:
    """``"synthetic"``, ``"hymenoptera"``, ``"flowers"``, a folder, a ``.zip``, or an ``ImageSet`` (returned as is).

    ``val_fraction`` applies where no split is given (default 0.2). The synthetic set's ``synthetic_images`` are all
    for training, beside a separate ``VAL_PER_CLASS`` validation images per class; a ``val_fraction`` splits them
    instead, as for other sets.
    """
    if isinstance(spec, ImageSet):
        return spec
    text = str(spec).strip()
    if text == "synthetic":
        return synthetic(synthetic_images, image_size=image_size, seed=seed, val_fraction=val_fraction or 0.25,
                         val_per_class=None if val_fraction else VAL_PER_CLASS)
    if text == "hymenoptera":
        return hymenoptera()
    if text == "flowers":  # the note's tutorial: flower_photos, 10 % of each class held out unless told otherwise
        return flowers(val_fraction=val_fraction, seed=seed)
    val_fraction = val_fraction or 0.2
    path = Path(text).expanduser()
    if path.is_dir():
        return from_folder(path, val_fraction=val_fraction, seed=seed)
    if path.is_file():
        return from_zip(path, val_fraction=val_fraction, seed=seed)
    raise error(DatasetError, "data.unknown_spec", text=text, choices="'synthetic', 'hymenoptera', 'flowers'")
