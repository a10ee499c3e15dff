"""The data set record every loader returns (``ImageSet``), in-memory images, labels without decoding, and the
limits shared by the loaders."""
from __future__ import annotations

from dataclasses import dataclass, field

from PIL import Image
from torch.utils.data import Dataset, Subset
from torchvision import datasets

from ..errors import DatasetError
from ..i18n import Text

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

    def __init__(self, name: str, reason: "str | Text"):
        """``reason``: the decoder's sentence (a ``Text`` from ``resnet.preprocess.open_image``, or English)."""
        self.name, self.reason = name, reason
        self.text = Text("data.damaged", name=name, reason=reason)
        super().__init__(str(self.text))


@dataclass
class ImageSet:
    """Class names and train/val splits of ``(PIL image, label)``; ``skipped`` counts files left out."""

    name: str
    classes: list[str]
    train: Dataset
    val: Dataset
    source: str = ""
    skipped: int = 0
    notes: list = field(default_factory=list)  # ``resnet.i18n.Text`` (or English str): shown in any language
    keep_alive: object = None  # a TemporaryDirectory holding extracted files, removed with this object

    def counts(self) -> dict:
        return {"train": len(self.train), "val": len(self.val)}

    def to_dict(self) -> dict:
        return {"name": self.name, "classes": list(self.classes), "n_train": len(self.train),
                "n_val": len(self.val), "skipped": self.skipped, "source": self.source, "notes": [str(n) for n in self.notes]}


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
