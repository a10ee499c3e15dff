"""Weights resolution, hashing, downloads from a local server, and every error message."""
import functools
import hashlib
import http.server
import pickle
import threading
from pathlib import Path

import pytest
import torch
import torchvision

import resnet
from resnet import weights

pytestmark = pytest.mark.unit


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """A private hub cache and no weights folder, so that nothing on this machine leaks in."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("RESNET_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("RESNET_WEIGHTS_BASE_URL", raising=False)
    return tmp_path


@pytest.fixture
def served(tmp_path):
    """An HTTP server on loopback serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def tv_checkpoint(path: Path, arch="resnet18") -> torchvision.models.ResNet:
    torch.manual_seed(1)
    m = torchvision.models.get_model(arch).eval()
    torch.save(m.state_dict(), path)
    return m


def test_explicit_file_wins_and_logits_match(isolated):
    ref = tv_checkpoint(isolated / "mine.pth")
    m = resnet.load_pretrained("resnet18", path=isolated / "mine.pth", download=False)
    assert not m.training
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert (m(x) - ref(x)).abs().max() <= 1e-5


def hash_named(folder: Path, arch="resnet18") -> Path:
    """A checkpoint saved under torch.hub's naming, ``<arch>-<sha256 prefix>.pth``, its hash its own."""
    folder.mkdir(parents=True, exist_ok=True)
    tv_checkpoint(folder / "tmp.pth", arch)
    digest = hashlib.sha256((folder / "tmp.pth").read_bytes()).hexdigest()
    return (folder / "tmp.pth").rename(folder / f"{arch}-{digest[:8]}.pth")


def test_weights_dir_then_hub_cache(isolated, monkeypatch):
    assert weights.file_name("resnet18") == "resnet18-f37072fd.pth"  # torchvision's file name
    in_hub = hash_named(weights.hub_dir())
    assert weights.find_weights("resnet18", download_ok=False) == in_hub
    d = isolated / "dir"
    in_dir = hash_named(d)
    monkeypatch.setenv("RESNET_WEIGHTS_DIR", str(d))
    assert weights.find_weights("resnet18", download_ok=False) == in_dir
    m = resnet.load_pretrained("resnet18", download=False)
    assert m.weights_file == str(in_dir)
    assert str(m.weights_source) == f"{in_dir.name} (hash checked)" and str(d) not in str(m.weights_source)  # no folder
    listing = {r["arch"]: r for r in weights.cached()}
    assert listing["resnet18"]["path"] == str(in_dir) and listing["resnet50"]["path"] is None


def test_a_file_that_fails_the_hash_in_its_name_is_never_used(isolated, monkeypatch, caplog):
    """A test-made checkpoint under torchvision's official name is not the official file: it is skipped."""
    d = isolated / "dir"
    d.mkdir()
    tv_checkpoint(d / weights.file_name("resnet18"))
    monkeypatch.setenv("RESNET_WEIGHTS_DIR", str(d))
    with pytest.raises(resnet.WeightsNotFound) as e:
        resnet.load_pretrained("resnet18", download=False)
    assert str(d) not in str(e.value) and str(weights.hub_dir()) not in str(e.value)  # visitors never see folders
    assert "does not match its expected hash" in caplog.text  # the operator's log says why
    good = hash_named(d)
    assert weights.find_weights("resnet18", download_ok=False) == good


def test_missing_weights_say_what_to_do(isolated):
    with pytest.raises(resnet.WeightsNotFound, match="weights fetch resnet50") as e:
        resnet.load_pretrained("resnet50", download=False)
    assert "RESNET_WEIGHTS_DIR" in str(e.value)
    with pytest.raises(resnet.WeightsNotFound, match="No weights file"):
        resnet.load_pretrained("resnet18", path=isolated / "nope.pth")


def test_download_from_local_url_is_hash_checked_and_cached(isolated, served, monkeypatch):
    root, base = served
    blob = root / "tmp.pth"
    ref = tv_checkpoint(blob)
    digest = hashlib.sha256(blob.read_bytes()).hexdigest()
    good = root / f"resnet18-{digest[:8]}.pth"
    blob.rename(good)
    # Point the arch at our served file by making its official name resolve to ours.
    monkeypatch.setattr(weights, "weights_url", lambda arch: f"{base}/{good.name}")
    m = resnet.load_pretrained("resnet18")
    cached_file = weights.hub_dir() / good.name
    assert cached_file.is_file() and m.weights_file == str(cached_file)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert (m(x) - ref(x)).abs().max() <= 1e-5
    # A file whose content does not match the hash in its name never enters the cache.
    bad = root / "resnet18-00000000.pth"
    bad.write_bytes(good.read_bytes())
    monkeypatch.setattr(weights, "weights_url", lambda arch: f"{base}/{bad.name}")
    with pytest.raises(resnet.WeightsHashMismatch, match="expected hash"):
        weights.download("resnet18")
    assert not (weights.hub_dir() / bad.name).exists()
    assert not list(weights.hub_dir().glob("*.partial"))


def test_base_url_mirror_setting(isolated, monkeypatch):
    monkeypatch.setenv("RESNET_WEIGHTS_BASE_URL", "https://mirror.example/models/")
    assert weights.weights_url("resnet50") == "https://mirror.example/models/resnet50-11ad3fa6.pth"
    monkeypatch.setenv("RESNET_WEIGHTS_BASE_URL", "http://mirror.example/models/")  # only https mirrors
    assert weights.weights_url("resnet50") == "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"


def test_offline_download_is_a_clear_error(isolated, monkeypatch):
    monkeypatch.setenv("RESNET_WEIGHTS_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(resnet.WeightsOffline, match="offline") as e:
        resnet.load_pretrained("resnet18")
    assert "weights fetch resnet18" in str(e.value)


def test_wrong_architecture_names_mismatches(isolated):
    tv_checkpoint(isolated / "r34.pth", "resnet34")
    with pytest.raises(resnet.WeightsArchMismatch, match="not a resnet18 checkpoint") as e:
        resnet.load_pretrained("resnet18", path=isolated / "r34.pth")
    assert "unexpected keys" in str(e.value) and "layer1.2" in str(e.value)
    tv_checkpoint(isolated / "r50.pth", "resnet50")
    with pytest.raises(resnet.WeightsArchMismatch, match="shape mismatches"):
        resnet.load_pretrained("wide_resnet50_2", path=isolated / "r50.pth")


def test_corrupt_truncated_and_hostile_files(isolated):
    tv_checkpoint(isolated / "ok.pth")
    data = (isolated / "ok.pth").read_bytes()
    (isolated / "trunc.pth").write_bytes(data[: len(data) // 3])
    (isolated / "random.pth").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    marker = isolated / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (isolated / "evil.pth").write_bytes(pickle.dumps(Evil()))
    torch.save({"not": "tensors"}, isolated / "dict.pth")
    for name in ("trunc.pth", "random.pth", "evil.pth", "dict.pth"):
        with pytest.raises(resnet.WeightsCorrupt):
            resnet.load_pretrained("resnet18", path=isolated / name)
    assert not marker.exists()  # weights_only=True: the pickle's code never ran


def test_wrapped_checkpoints_load(isolated):
    ref = tv_checkpoint(isolated / "plain.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}, "epoch": 3},
               isolated / "wrapped.pth")
    resnet.load_pretrained("resnet18", path=isolated / "wrapped.pth")


def test_categories_and_transforms_come_from_torchvision_metadata():
    cats = weights.categories("resnet50")
    assert len(cats) == 1000 and cats[0] == "tench" and cats[291] == "lion"
    assert weights.preprocess("resnet50").resize_size == [232]
