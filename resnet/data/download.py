"""The ants/bees set of PyTorch's transfer-learning tutorial: downloaded once (``resnet.downloads``), checksummed,
cached under ``data_dir()``, extracted safely."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from .. import config, downloads
from ..downloads import file_sha256
from ..errors import DatasetError
from .folders import extract_zip, from_folder
from .imageset import HYMENOPTERA, ImageSet


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
