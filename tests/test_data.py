"""Datasets: the synthetic set, ImageFolder folders and hostile zips, the ants/bees download, transforms."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet import data
from resnet.data import DatasetError
from resnet.preprocess import recipe, transform

pytestmark = pytest.mark.unit


def png_bytes(colour=(200, 30, 30), size=8, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format=fmt)
    return buf.getvalue()


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, payload in entries.items():
            zf.writestr(name, payload)
    return path


def two_classes(prefix: str = "", n: int = 3, ext: str = ".png") -> dict[str, bytes]:
    return {f"{prefix}{c}/{i}{ext}": png_bytes(col) for c, col in (("cats", (200, 0, 0)), ("dogs", (0, 0, 200)))
            for i in range(n)}


# ---------------------------------------------------------------- synthetic

def test_synthetic_is_deterministic_and_balanced():
    ds = data.synthetic(400, image_size=128, seed=3)
    assert len(ds.classes) >= 4 and ds.counts() == {"train": 300, "val": 100}
    assert ds.train[0][0].size == (128, 128) and ds.train[0][0].mode == "RGB"
    again = data.synthetic(400, image_size=128, seed=3)
    other = data.synthetic(400, image_size=128, seed=4)
    a, b, c = (np.asarray(d.train[5][0]) for d in (ds, again, other))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    train_y, val_y = data.targets(ds.train), data.targets(ds.val)
    assert sorted(set(val_y)) == list(range(len(ds.classes)))
    assert np.bincount(train_y).min() == np.bincount(train_y).max()


def test_synthetic_is_not_separable_by_colour():
    """Colour, brightness and position are random: a nearest-mean classifier on mean colour is near chance."""
    ds = data.synthetic(240, image_size=48, seed=0)
    feats = lambda split: np.stack([np.asarray(split[i][0], np.float32).mean((0, 1)) for i in range(len(split))])
    xtr, ytr, xva, yva = feats(ds.train), np.array(data.targets(ds.train)), feats(ds.val), np.array(data.targets(ds.val))
    centres = np.stack([xtr[ytr == c].mean(0) for c in range(len(ds.classes))])
    pred = np.argmin(((xva[:, None] - centres[None]) ** 2).sum(-1), 1)
    assert (pred == yva).mean() < 0.45


def test_plain_synthetic_keeps_only_the_geometry():
    """plain=True: a white shape on black, still at a random place, size and angle; the same classes."""
    ds = data.synthetic(16, image_size=64, seed=0, plain=True)
    assert ds.classes == data.synthetic(16, image_size=64, seed=0).classes and "plain" in ds.source
    masks = []
    for i in range(len(ds.train)):
        a = np.asarray(ds.train[i][0])
        assert (a[..., 0] == a[..., 1]).all() and (a[..., 0] == a[..., 2]).all()  # grey levels only
        white = a[..., 0] > 127
        assert 0.03 < white.mean() < 0.5 and not white[0, 0]
        masks.append(white)
    assert not any(np.array_equal(masks[0], m) for m in masks[1:])


def test_one_painter_draws_every_shape_for_both_sets():
    """resnet.data's painter serves the synthetic set (its first classes) and the labs' shapes set (all of them)."""
    from resnet.analysis import labs
    assert labs.SHAPES is data.SHAPES and len(set(data.SHAPES)) == len(data.SHAPES) == 8
    assert data.synthetic(16, image_size=32).classes == list(data.SHAPES[:4])
    x, y = labs.shapes_dataset(16, 32, 0)
    assert x.shape == (16, 3, 32, 32) and y.tolist() == list(range(8)) * 2
    for i, kind in enumerate(data.SHAPES):
        turned, upright = (np.asarray(data.draw_shape_image(kind, 64, np.random.default_rng([5, i]), plain=True,
                                                            upright=u))[..., 0] > 127 for u in (False, True))
        assert 0.03 < upright.mean() < 0.5 and abs(turned.mean() - upright.mean()) < 0.03  # same shape, same size
    with pytest.raises(ValueError, match="unknown shape"):
        data.draw_shape_image("hexagon", 32, np.random.default_rng(0))


def test_transforms_eval_matches_decoded_path_and_train_is_random():
    img = data.synthetic(8, image_size=100).train[0][0]
    e = transform("eval", 64)(img)
    assert e.shape == (3, 64, 64) and e.dtype == torch.float32 and -3 < float(e.mean()) < 3
    decoded = transform("decode", 64)(img)
    assert decoded.dtype == torch.uint8 and decoded.shape == (3, recipe(64).resize, recipe(64).resize)
    assert torch.allclose(transform("eval", 64, decoded=True)(decoded), e)
    torch.manual_seed(0)
    t1 = transform("train", 64)(img)
    t2 = transform("train", 64)(img)
    torch.manual_seed(0)
    assert t1.shape == (3, 64, 64) and not torch.equal(t1, t2)
    assert torch.equal(transform("train", 64)(img), t1)


# ---------------------------------------------------------------- folders

def write_tree(root: Path, entries: dict[str, bytes]) -> Path:
    for name, payload in entries.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(payload)
    return root


def test_folder_split_given_and_split_made(tmp_path):
    given = write_tree(tmp_path / "given", {**two_classes("train/"), **two_classes("val/", 2)})
    ds = data.from_folder(given)
    assert ds.classes == ["cats", "dogs"] and ds.counts() == {"train": 6, "val": 4}
    img, y = ds.train[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and y == 0
    made = write_tree(tmp_path / "made", two_classes(n=10))
    ds = data.from_folder(made, val_fraction=0.2, seed=1)
    assert ds.counts() == {"train": 16, "val": 4}
    assert sorted(data.targets(ds.val)) == [0, 0, 1, 1]


def test_folder_skips_and_counts_non_images(tmp_path):
    root = write_tree(tmp_path / "d", {**two_classes(), "cats/notes.txt": b"hello", "dogs/fake.jpg": b"not a jpeg",
                                       "cats/.hidden.png": png_bytes(), ".DS_Store": b"x"})
    ds = data.from_folder(root)
    assert len(ds.train) + len(ds.val) == 6
    assert ds.skipped == 3 and any("skipped" in str(n) for n in ds.notes)


# ---------------------------------------------------------------- zips

def load_zip(tmp_path, entries, **kw):
    return data.from_zip(make_zip(tmp_path / "upload.zip", entries), **kw)


def _extracted() -> set[str]:
    import tempfile
    return {p.name for p in Path(tempfile.gettempdir()).glob("resnet-data-*")}


def refused(tmp_path, entries, match, **kw):
    """The zip is refused with one sentence that names the zip (never the temporary folder), and the temporary
    folder it was extracted to is already gone."""
    before = _extracted()
    with pytest.raises(DatasetError, match=match) as e:
        load_zip(tmp_path, entries, **kw)
    msg = str(e.value)
    assert msg.endswith(".") and "\n" not in msg and "Traceback" not in msg
    assert "resnet-data-" not in msg, msg
    assert _extracted() <= before
    return msg


def test_zip_path_traversal_is_refused(tmp_path):
    refused(tmp_path, {**two_classes(), "../evil.png": png_bytes(), "cats/../../evil2.png": png_bytes()},
            "outside its folder")
    assert not (tmp_path / "evil.png").exists() and not (tmp_path.parent / "evil2.png").exists()


def test_zip_absolute_path_is_refused(tmp_path):
    target = tmp_path / "abs" / "evil.png"
    refused(tmp_path, {**two_classes(), str(target): png_bytes()}, "outside its folder")
    refused(tmp_path, {**two_classes(), "C:/evil.png": png_bytes()}, "outside its folder")
    assert not target.exists()


def test_zip_symlink_entry_is_refused(tmp_path):
    path = make_zip(tmp_path / "link.zip", two_classes())
    with zipfile.ZipFile(path, "a") as zf:
        info = zipfile.ZipInfo("cats/link.png")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(DatasetError, match="symbolic link"):
        data.from_zip(path)


def test_zip_bomb_by_ratio_is_refused(tmp_path):
    refused(tmp_path, {**two_classes(), "cats/big.png": bytes(8 * 2**20)}, "zip bomb")


def test_zip_size_and_count_limits(tmp_path):
    refused(tmp_path, two_classes(n=5), "more than the limit", limits={"max_bytes": 100})


def test_zip_ten_thousand_tiny_files_is_bounded(tmp_path, monkeypatch):
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for i in range(10_000):
            zf.writestr(f"c{i % 2}/{i}.png", b"x")
    opened = []
    with monkeypatch.context() as m:
        m.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a) or pytest.fail("a member was read"))
        with pytest.raises(DatasetError, match="10,000 entries"):
            data.from_zip(path)
    assert opened == []  # refused from the directory alone, before any member is read
    # Under a raised limit it is still bounded: every file is checked, none is an image, a clear error follows.
    with pytest.raises(DatasetError, match="No readable images"):
        data.from_zip(path, limits={"max_files": 20_000})


def test_zip_without_class_folders(tmp_path):
    refused(tmp_path, {f"{i}.png": png_bytes() for i in range(4)}, "no class folders")


def test_zip_with_one_class(tmp_path):
    refused(tmp_path, {f"cats/{i}.png": png_bytes() for i in range(4)}, "Only one class")


def test_zip_with_a_class_of_one_image(tmp_path):
    refused(tmp_path, {**two_classes(), "birds/0.png": png_bytes()}, "fewer than 2 images")


def test_zip_nested_in_a_wrapping_folder(tmp_path):
    ds = load_zip(tmp_path, {"my_photos/": b"", **two_classes("my_photos/", n=5), "__MACOSX/my_photos/._x.png": b"x"})
    assert ds.classes == ["cats", "dogs"] and len(ds.train) + len(ds.val) == 10
    ds = load_zip(tmp_path, {**two_classes("hymenoptera/train/"), **two_classes("hymenoptera/val/", 2)})
    assert ds.counts() == {"train": 6, "val": 4}


def test_zip_with_only_non_images(tmp_path):
    refused(tmp_path, {"cats/a.txt": b"a", "dogs/b.csv": b"b", "readme.md": b"c"}, "No readable images")


def test_zip_mixed_case_extensions(tmp_path):
    entries = {"cats/a.JPG": png_bytes(fmt="JPEG"), "cats/b.Png": png_bytes(), "dogs/c.JPEG": png_bytes(fmt="JPEG"),
               "dogs/d.pNg": png_bytes()}
    ds = load_zip(tmp_path, entries)
    assert len(ds.train) + len(ds.val) == 4 and ds.skipped == 0


def test_zip_unicode_names(tmp_path):
    entries = {f"{c}/图片 {i} é.png": png_bytes() for c in ("猫", "狗") for i in range(3)}
    ds = load_zip(tmp_path, entries)
    assert set(ds.classes) == {"猫", "狗"} and len(ds.train) + len(ds.val) == 6
    assert ds.train[0][0].size == (8, 8)


def test_empty_zip(tmp_path):
    refused(tmp_path, {}, "empty zip")


def test_non_zip_renamed_to_zip(tmp_path):
    path = tmp_path / "photo.zip"
    path.write_bytes(png_bytes())
    with pytest.raises(DatasetError, match="not a readable zip"):
        data.from_zip(path)
    truncated = make_zip(tmp_path / "cut.zip", two_classes())
    truncated.write_bytes(truncated.read_bytes()[:100])
    with pytest.raises(DatasetError, match="not a readable zip"):
        data.from_zip(truncated)


def test_deep_nesting_is_skipped_and_counted(tmp_path):
    deep = "/".join(["d"] * 60)
    ds = load_zip(tmp_path, {**two_classes(), f"cats/{deep}/x.png": png_bytes(), f"{deep}/y.png": png_bytes()})
    assert len(ds.train) + len(ds.val) == 6 and ds.skipped == 2
    refused(tmp_path, {f"{deep}/{c}/{i}.png": png_bytes() for c in "ab" for i in range(2)}, "No readable images")


def test_extracted_files_live_as_long_as_the_set(tmp_path):
    ds = load_zip(tmp_path, two_classes())
    folder = Path(ds.keep_alive.name)
    assert folder.is_dir() and ds.train[0][0] is not None
    del ds
    import gc
    gc.collect()
    assert not folder.exists()


def test_load_dataset_dispatch(tmp_path):
    assert data.load_dataset("synthetic", synthetic_images=40, image_size=32).name == "synthetic"
    assert data.load_dataset(make_zip(tmp_path / "a.zip", two_classes())).classes == ["cats", "dogs"]
    assert data.load_dataset(write_tree(tmp_path / "f", two_classes())).classes == ["cats", "dogs"]
    with pytest.raises(DatasetError, match="neither"):
        data.load_dataset(tmp_path / "missing")


# ---------------------------------------------------------------- ants and bees, from a local server

@pytest.fixture
def served(tmp_path):
    """A local http.server on 127.0.0.1 serving a hymenoptera-shaped zip the test builds."""
    site = tmp_path / "site"
    site.mkdir()
    entries = {}
    for split, n in (("train", 3), ("val", 2)):
        for c, col in (("ants", (120, 60, 0)), ("bees", (230, 200, 0))):
            for i in range(n):
                entries[f"hymenoptera_data/{split}/{c}/{i}.jpg"] = png_bytes(col, 16, "JPEG")
    archive = make_zip(site / "hymenoptera_data.zip", entries)
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hymenoptera_data.zip", hashlib.sha256(archive.read_bytes()).hexdigest()
    server.shutdown()
    server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_hymenoptera_download_checksum_and_cache(tmp_path, served):
    url, sha = served
    cache = tmp_path / "cache"
    ds = data.hymenoptera(cache_dir=cache, url=url, sha256=sha)
    assert ds.classes == ["ants", "bees"] and ds.counts() == {"train": 6, "val": 4}
    assert any(p.parts[-2:] == ("train", "ants") for p in cache.rglob("ants"))
    # Cached: works without the server.
    again = data.hymenoptera(cache_dir=cache, url="http://127.0.0.1:9/none.zip", sha256=sha)
    assert again.counts() == ds.counts()


def test_hymenoptera_wrong_checksum_is_refused(tmp_path, served):
    url, _ = served
    with pytest.raises(DatasetError, match="checksum"):
        data.hymenoptera(cache_dir=tmp_path / "c", url=url, sha256="0" * 64)
    assert not list((tmp_path / "c").glob("*.zip*"))


def test_hymenoptera_offline_gives_a_clear_error(tmp_path, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    monkeypatch.setenv("RESNET_HYMENOPTERA_URL", f"http://127.0.0.1:{port}/hymenoptera_data.zip")
    monkeypatch.setenv("RESNET_DATA_DIR", str(tmp_path / "cache"))
    with pytest.raises(DatasetError, match="offline") as e:
        data.load_dataset("hymenoptera")
    assert "synthetic" in str(e.value)
    assert not list((tmp_path / "cache").glob("*.partial"))
