"""Moved to ``resnet.preprocess`` (the one image decoder and transform factory); kept importable until the layout step."""
from .preprocess import (CHUNK_PIXELS, FORMATS, MAX_ASPECT, WIDE_MODES, BadImage, open_image, pixel_limit,
                         to_rgb)

__all__ = ["BadImage", "CHUNK_PIXELS", "FORMATS", "MAX_ASPECT", "WIDE_MODES", "open_image", "pixel_limit", "to_rgb"]
