"""Downloadable data sets: the ants/bees set of PyTorch's transfer-learning tutorial and the 5-class flower_photos
set of the note's own tutorial. Each is downloaded once (``resnet.downloads``: https, timeouts, size cap, back-off),
checksummed, cached under ``data_dir()`` and extracted defensively (the zip by ``folders.extract_zip``, the flowers'
.tgz by ``extract_tgz`` here, under the same limits)."""
from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import threading
import zlib
from pathlib import Path

from .. import config, downloads
from ..filehash import sha256_file
from ..errors import DatasetError
from ..i18n import Text, error
from .folders import extract_zip, from_folder, is_image_name, member_parts
from .imageset import HYMENOPTERA, ZIP_LIMITS, ImageSet

# The note's tutorial trains ResNet-34 on TensorFlow's flower_photos (3,670 photos of 5 flowers, CC-BY 2.0, the
# photographers credited in the archive's LICENSE.txt) and holds out 10 % of each class for validation. The
# archive's size and SHA-256 are tensorflow_datasets' record for tf_flowers (url_checksums/tf_flowers.txt).
FLOWERS = {
    "url": "https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz",
    "sha256": "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c",
    "bytes": 228_813_984,
    "folder": "flower_photos",
    "classes": ["daisy", "dandelion", "roses", "sunflowers", "tulips"],  # sorted: the tutorial's class_indices.json
    "counts": {"daisy": 633, "dandelion": 898, "roses": 641, "sunflowers": 699, "tulips": 799},
    "val_fraction": 0.1,
    "max_download_bytes": 240 * 2**20,
}
_flowers_lock = threading.Lock()  # two visitors asking at once: one download, one extraction


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
        raise error(DatasetError, "data.download_checksum") from None
    except downloads.DownloadFailed as e:
        raise error(DatasetError, "data.download_failed", reason=getattr(e, "text", None) or str(e)) from None


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
        if not archive.is_file() or (expected and sha256_file(archive) != expected.lower()):
            download(url, archive, sha256=expected)
        if not recorded.is_file():
            recorded.write_text(sha256_file(archive) + "\n")
        staging = cache / (HYMENOPTERA["folder"] + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        extract_zip(archive, staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.replace(folder)
        done.write_text(url + "\n")
    ds = from_folder(folder, name="hymenoptera")
    ds.source = url
    return ds


# ---------------------------------------------------------------------------- flower_photos (.tgz)

class _Capped:
    """A stream that refuses to give more than ``cap`` bytes: a gzip bomb stops at the cap, not at the disk."""

    def __init__(self, f, cap: int, label: str):
        self.f, self.cap, self.label, self.n = f, cap, label, 0

    def read(self, size: int = -1) -> bytes:
        data = self.f.read(size if size is not None and size >= 0 else 1 << 20)
        self.n += len(data)
        if self.n > self.cap:
            raise error(DatasetError, "flowers.tgz_too_big", name=self.label, mb=self.cap / 2**20)
        return data


def extract_tgz(archive: str | os.PathLike, dest: str | os.PathLike, *, limits: dict | None = None) -> dict:
    """Extract the images of a gzip-compressed tar into ``dest`` safely; returns counts ``{"images", "skipped"}``.

    The archive is read once, as a stream, and every member is checked before it is written: a member that is
    absolute, climbs out with ``..``, is a link or a device refuses the archive; so do too many members, more
    bytes than ``max_bytes``, or decompressing to more than ``max_ratio`` times the archive (``ZIP_LIMITS``).
    Non-image files (the flowers' LICENSE.txt), hidden files and members deeper than ``max_depth`` are skipped
    and counted. On a refusal ``dest`` may hold part of the images: extract into a staging folder and remove it.
    """
    lim = {**ZIP_LIMITS, **(limits or {})}
    archive, dest = Path(archive), Path(dest)
    label = archive.name
    packed = archive.stat().st_size
    # Tar's own overhead (a 512-byte header and up to 511 bytes of padding per member, the end blocks) on top of
    # the files' bytes; the ratio bounds a small archive that would unpack to a lot of zeros.
    cap = min(lim["max_bytes"] + 1024 * lim["max_files"] + (1 << 20), max(1 << 20, int(lim["max_ratio"] * packed)))
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    images = skipped = members = total = 0
    try:
        with open(archive, "rb") as raw, gzip.GzipFile(fileobj=raw) as gz, \
                tarfile.open(fileobj=_Capped(gz, cap, label), mode="r|") as tar:
            for member in tar:
                members += 1
                if members > lim["max_files"]:
                    raise error(DatasetError, "flowers.tgz_entries", name=label, limit=lim["max_files"])
                parts = member_parts(member.name)
                shown = member.name[:80]
                if parts is None:
                    raise error(DatasetError, "flowers.tgz_outside", name=label, entry=shown)
                if member.issym() or member.islnk():
                    raise error(DatasetError, "flowers.tgz_link", name=label, entry=shown)
                if member.isdir() or not parts:
                    continue
                if not member.isfile():  # a device or a FIFO: never part of a photo collection
                    raise error(DatasetError, "flowers.tgz_special", name=label, entry=shown)
                total += member.size
                if total > lim["max_bytes"]:
                    raise error(DatasetError, "flowers.tgz_size", name=label, mb=lim["max_bytes"] / 2**20)
                if (len(parts) - 1 > lim["max_depth"] or not is_image_name("/".join(parts))
                        or any(p.startswith(".") for p in parts) or any(len(p.encode()) > 255 for p in parts)):
                    skipped += 1
                    continue
                target = root.joinpath(*parts)
                if not target.resolve().is_relative_to(root):
                    raise error(DatasetError, "flowers.tgz_outside", name=label, entry=shown)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                with open(target, "wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                images += 1
    except DatasetError:
        raise
    except (tarfile.TarError, zlib.error, EOFError, OSError, ValueError):  # gzip.BadGzipFile is an OSError
        raise error(DatasetError, "flowers.tgz_unreadable", name=label) from None
    if not images:
        raise error(DatasetError, "flowers.tgz_no_images", name=label)
    return {"images": images, "skipped": skipped}


def flowers(*, cache_dir: str | os.PathLike | None = None, url: str | None = None, sha256: str | None = None,
            val_fraction: float | None = None, seed: int = 0) -> ImageSet:
    """flower_photos (daisy, dandelion, roses, sunflowers, tulips): downloaded once (218 MiB), checked against the
    published SHA-256, extracted defensively and cached; each class split with a seeded shuffle, 10 % held out for
    validation as in the tutorial (``val_fraction``). The extracted folder stays; the archive is deleted.

    ``url`` / ``RESNET_FLOWERS_URL`` point at a mirror of the same file; ``sha256`` / ``RESNET_FLOWERS_SHA256``
    replace the published hash, for a mirror that serves a different copy only.
    """
    url = url or config.get("RESNET_FLOWERS_URL") or FLOWERS["url"]
    expected = (sha256 or config.get("RESNET_FLOWERS_SHA256") or FLOWERS["sha256"]).strip().lower()
    cache = Path(cache_dir) if cache_dir else data_dir()
    folder = cache / FLOWERS["folder"]
    done = folder / ".complete"  # "<sha256> <url>": the archive the folder was extracted from
    with _flowers_lock:
        if not (done.is_file() and done.read_text().split()[:1] == [expected]):
            archive = cache / "flower_photos.tgz"
            if not archive.is_file() or sha256_file(archive) != expected:
                download(url, archive, sha256=expected, max_bytes=FLOWERS["max_download_bytes"])
            staging = cache / (FLOWERS["folder"] + ".partial")
            shutil.rmtree(staging, ignore_errors=True)
            try:
                extract_tgz(archive, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            shutil.rmtree(folder, ignore_errors=True)
            staging.replace(folder)
            done.write_text(f"{expected} {url}\n")
            archive.unlink(missing_ok=True)  # the extracted folder holds the same 218 MiB
    ds = from_folder(folder, val_fraction=val_fraction or FLOWERS["val_fraction"], seed=seed, name="flowers")
    ds.source = url
    ds.notes.append(Text("flowers.note_license"))
    return ds
