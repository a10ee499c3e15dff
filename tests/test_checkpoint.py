"""The note's tutorial's own workflow: its checkpoint (a torchvision-keyed state dict with a 5-class fc, saved as
``resNet34.pth``, and ``class_indices.json``) loaded safely with its architecture inferred, classified and looked
into through the served app, and its data set, flower_photos, downloaded through a loopback mirror and extracted
defensively."""
from __future__ import annotations

import functools
import hashlib
import http.server
import importlib
import io
import json
import os
import re
import socket
import tarfile
import threading
import time
from pathlib import Path

import pytest
import torch
import torchvision
from gradio_client import Client, handle_file
from PIL import Image

import resnet
from resnet import ARCHS, data
from resnet.checkpoint import BadCheckpoint, CheckpointCache, infer_arch, load_checkpoint
from resnet.errors import DatasetError, LabError
from resnet.i18n import message
from resnet.models.resnet import build_model

download_module = importlib.import_module("resnet.data.download")  # resnet.data.download is also a function's name
FLOWERS = data.FLOWERS
CJK = re.compile(r"[\u4e00-\u9fff]")


def tutorial_model(arch: str = "resnet34", num_classes: int = 5, seed: int = 0) -> torch.nn.Module:
    """torchvision's model as the tutorial trains it (a new fc for 5 flowers), seeded without touching the global
    RNG; BatchNorm statistics moved off their defaults so that a load that dropped them would show."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = getattr(torchvision.models, arch)(num_classes=num_classes)
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model.eval()


def save_tutorial_files(folder: Path, model: torch.nn.Module, names=FLOWERS["classes"]) -> tuple[Path, Path]:
    """What the tutorial's train.py writes: the state dict and ``class_indices.json`` (``json.dumps(indent=4)``)."""
    folder.mkdir(parents=True, exist_ok=True)
    arch_name = {"resnet34": "resNet34", "resnet18": "resNet18"}.get(getattr(model, "_arch", ""), "resNet34")
    weights = folder / f"{arch_name}.pth"
    torch.save(model.state_dict(), weights)
    classes = folder / "class_indices.json"
    classes.write_text(json.dumps({str(i): n for i, n in enumerate(names)}, indent=4))
    return weights, classes


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A 5-class ResNet-18 in the tutorial's format (smaller than its ResNet-34, same layout rules)."""
    folder = tmp_path_factory.mktemp("small")
    model = tutorial_model("resnet18")
    model._arch = "resnet18"
    weights, classes = save_tutorial_files(folder, model)
    return {"model": model, "weights": weights, "classes": classes, "state": model.state_dict()}


# ---------------------------------------------------------------------------- the tutorial's checkpoint

@pytest.mark.unit
def test_the_tutorials_resnet34_checkpoint_loads_with_its_names_and_torchvisions_logits(tmp_path, photos):
    tv = tutorial_model("resnet34")
    weights, classes = save_tutorial_files(tmp_path, tv)
    model = resnet.load_checkpoint(weights, classes=classes)
    assert model.arch == "resnet34" and model.fc.out_features == 5 and not model.training
    assert model.categories == ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
    assert model.weights_source == "resNet34.pth"
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (model(x) - tv(x)).abs().max().item() <= 1e-4
    # resnet.classify labels its answers with the checkpoint's own class names, with torchvision's probabilities.
    top = resnet.classify(model, photos["lion"], top_k=5)
    assert sorted(name for name, _ in top) == sorted(FLOWERS["classes"])
    from resnet.predict import to_batch
    with torch.no_grad():
        p = tv(to_batch(model, photos["lion"])).softmax(-1)[0]
    assert top[0][0] == FLOWERS["classes"][int(p.argmax())] and abs(top[0][1] - float(p.max())) <= 1e-5
    # A list of names works as well as the file; no names: outputs numbered.
    assert resnet.load_checkpoint(weights, classes=list("abcde")).categories == list("abcde")
    unnamed = resnet.load_checkpoint(weights)
    assert [n for n, _ in resnet.classify(unnamed, photos["lion"], top_k=1)][0].startswith("class ")


@pytest.mark.unit
def test_wrappers_and_prefixes_that_training_scripts_add_are_removed(tmp_path, small):
    state = small["state"]
    variants = {
        "wrapped.pth": {"state_dict": state, "epoch": 3, "best_acc": 0.9},
        "dataparallel.pth": {f"module.{k}": v for k, v in state.items()},
        "compiled.pt": {"model": {f"_orig_mod.{k}": v for k, v in state.items()}},
        "old.pth": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")},
    }
    x = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        want = small["model"](x)
    for name, obj in variants.items():
        torch.save(obj, tmp_path / name)
        model = load_checkpoint(tmp_path / name, classes=small["classes"])
        assert model.arch == "resnet18", name
        with torch.no_grad():
            assert (model(x) - want).abs().max().item() <= 1e-4, name


@pytest.mark.unit
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_architecture_is_inferred_from_keys_and_shapes(arch):
    """torchvision's own model and ours (v1.5 and the paper's v1), weightless on the meta device."""
    with torch.device("meta"):
        tv = getattr(torchvision.models, arch)(num_classes=7)
    assert infer_arch(tv.state_dict()) == (arch, 7)
    for v1 in (False, True):
        assert infer_arch(build_model(arch, 3, stride_in_1x1=v1, device="meta").state_dict()) == (arch, 3)


@pytest.mark.unit
def test_the_default_upload_limit_takes_the_tutorials_checkpoint():
    """The tutorial saves a 5-class ResNet-34 (and ResNet-50 for its bottleneck variant): the app must accept them."""
    from resnet import config
    for arch in ("resnet34", "resnet50"):
        weights = build_model(arch, 5, device="meta").state_dict().values()
        megabytes = sum(t.numel() * t.element_size() for t in weights) / 2**20 + 1  # + torch.save's few records
        assert megabytes < config.SETTINGS["RESNET_MAX_FILE_MB"].default, arch


# ---------------------------------------------------------------------------- wrong files: one clear sentence

def refusal(path, classes=None, **kwargs) -> BadCheckpoint:
    with pytest.raises(BadCheckpoint) as e:
        load_checkpoint(path, classes=classes, **kwargs)
    err = e.value
    assert isinstance(err, LabError) and isinstance(err, ValueError)
    english, chinese = message(err, "en"), message(err, "zh-CN")
    assert str(Path(path).parent) not in english and str(Path(path).parent) not in chinese  # the file's name only
    assert CJK.search(chinese) and "Traceback" not in english
    return english


@pytest.mark.unit
def test_wrong_checkpoints_are_refused_with_a_clear_sentence(tmp_path, small):
    state = small["state"]

    def save(name, obj, **kwargs):
        torch.save(obj, tmp_path / name, **kwargs)
        return tmp_path / name

    assert "No checkpoint file named nothing.pth" in refusal(tmp_path / "nothing.pth")
    (tmp_path / "random.pth").write_bytes(os.urandom(4096))
    assert "not a checkpoint saved by torch.save" in refusal(tmp_path / "random.pth")
    save("legacy.pth", {"fc.weight": torch.zeros(2, 2)}, _use_new_zipfile_serialization=False)
    assert "not a checkpoint saved by torch.save" in refusal(tmp_path / "legacy.pth")
    (tmp_path / "cut.pth").write_bytes(small["weights"].read_bytes()[:200_000])
    assert "truncated or damaged" in refusal(tmp_path / "cut.pth")
    save("whole.pth", torch.nn.Linear(2, 2))  # torch.save(model): a pickled object, never unpickled here
    assert "nothing in an uploaded file is ever run" in refusal(tmp_path / "whole.pth")
    save("list.pth", [torch.zeros(2)])
    assert "holds no state_dict of tensors" in refusal(tmp_path / "list.pth")
    save("linear.pth", torch.nn.Linear(2, 2).state_dict())
    assert "not a ResNet with torchvision's layer names" in refusal(tmp_path / "linear.pth")
    save("short.pth", {k: v for k, v in state.items() if not k.startswith("layer4.1.")})
    text = refusal(tmp_path / "short.pth")
    assert "does not build" in text and "(2, 2, 2, 1)" in text and "ResNet-34" in text
    save("narrow.pth", {**state, "conv1.weight": torch.zeros(64, 1, 7, 7)})
    text = refusal(tmp_path / "narrow.pth")
    assert "looks like ResNet-18" in text and "conv1.weight" in text and "(64, 1, 7, 7)" in text
    save("missing.pth", {k: v for k, v in state.items() if not k.startswith("layer2.0.downsample.1.")})
    assert "are missing" in refusal(tmp_path / "missing.pth")
    bad = dict(state)
    bad["fc.weight"] = state["fc.weight"].clone()
    bad["fc.weight"][0, 0] = float("nan")
    save("nan.pth", bad)
    assert "NaN" in refusal(tmp_path / "nan.pth") and "fc.weight" in refusal(tmp_path / "nan.pth")
    assert "more than the 1 MiB" in refusal(small["weights"], max_bytes=2**20)
    # A tiny file whose fc claims a million classes over one stored number (stride 0): refused before any model
    # of that size is built.
    save("strided.pth", {**state, "fc.weight": torch.zeros(1).expand(10**6, 512),
                         "fc.bias": torch.zeros(1).expand(10**6)})
    assert (tmp_path / "strided.pth").stat().st_size < 50 * 2**20
    assert "more than the 512 MiB" in refusal(tmp_path / "strided.pth")


@pytest.mark.unit
def test_wrong_class_index_files_are_refused(tmp_path, small):
    weights = small["weights"]
    cases = {
        "four.json": (json.dumps({str(i): n for i, n in enumerate("abcd")}), "names 4 classes, but"),
        "broken.json": ('{"0": "daisy",', "not a readable JSON file"),
        "named.json": (json.dumps({"a": "daisy"}), "numbered from 0"),
        "gap.json": (json.dumps({"0": "a", "1": "b", "2": "c", "3": "d", "5": "e"}), "numbered from 0"),
        "empty_name.json": (json.dumps(["a", "b", " ", "d", "e"]), "numbered from 0"),
        "number.json": ("42", "numbered from 0"),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        assert expected in refusal(weights, tmp_path / name), name
    (tmp_path / "list.json").write_text(json.dumps(list("vwxyz")))
    assert load_checkpoint(weights, classes=tmp_path / "list.json").categories == list("vwxyz")
    (tmp_path / "huge.json").write_bytes(b" " * (2 << 20))
    assert "larger than" in refusal(weights, tmp_path / "huge.json")


@pytest.mark.unit
def test_the_cache_reads_each_upload_once(tmp_path, small):
    cache = CheckpointCache(max_items=1)
    first = cache.get(small["weights"], small["classes"])
    copy = tmp_path / "renamed.pth"
    copy.write_bytes(small["weights"].read_bytes())
    assert cache.get(copy, small["classes"]) is first and cache.loads == 1  # the same bytes: not read again
    other = tmp_path / "other.json"
    other.write_text(json.dumps(list("abcde")))
    assert cache.get(small["weights"], other).categories == list("abcde") and cache.loads == 2
    assert cache.get(small["weights"], small["classes"]) is not first and cache.loads == 3  # one item kept


# ---------------------------------------------------------------------------- the served app

@pytest.mark.served
def test_the_app_classifies_and_looks_into_an_uploaded_checkpoint(app_server, small, photos, tmp_path):
    local = load_checkpoint(small["weights"], classes=small["classes"])
    want = resnet.classify(local, photos["lion"], top_k=5)
    client = Client(app_server, verbose=False)
    try:
        label, info = client.predict(handle_file(str(photos["lion"])), "resnet50", handle_file(str(small["weights"])),
                                     handle_file(str(small["classes"])), api_name="/classify")
        got = {c["label"]: c["confidence"] for c in label["confidences"]}
        assert label["label"] == want[0][0] and set(got) == set(FLOWERS["classes"])
        assert all(abs(got[name] - p) <= 1e-4 for name, p in want)
        assert "Your checkpoint (ResNet-18, 5 classes)" in info and "resNet18.pth" in info
        assert "class_indices.json" in info and "ImageNet" in info and "/tmp" not in info
        # Without its class-index file the outputs are numbered, and the page says how to name them.
        label, info = client.predict(handle_file(str(photos["lion"])), "resnet18", handle_file(str(small["weights"])),
                                     None, api_name="/classify")
        assert label["label"] == f"class {FLOWERS['classes'].index(want[0][0])}" and "class_indices.json" in info
        zh = Client(app_server, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        label, _ = zh.predict(handle_file(str(photos["lion"])), "resnet18", handle_file(str(small["weights"])), None,
                              api_name="/classify")
        assert label["label"] == f"类别 {FLOWERS['classes'].index(want[0][0])}", label  # numbered in the page's language
        _, _, info = zh.predict(handle_file(str(photos["lion"])), "resnet18", "conv3_x", 8, "",
                                handle_file(str(small["weights"])), None, api_name="/feature_maps")
        assert f"类别 {FLOWERS['classes'].index(want[0][0])}" in info and "class " not in info, info

        # Feature maps and Grad-CAM of the same checkpoint: its top class, then a class asked for by name.
        grid, cam, info = client.predict(handle_file(str(photos["lion"])), "resnet18", "conv3_x", 8, "top class",
                                         handle_file(str(small["weights"])), handle_file(str(small["classes"])),
                                         api_name="/feature_maps")
        assert "Your checkpoint (ResNet-18, 5 classes)" in info and f"**{want[0][0]}**" in info
        assert Image.open(cam).size[0] > 100 and grid is not None
        grid, cam, info = client.predict(handle_file(str(photos["lion"])), "resnet18", "conv5_x", 4, "roses",
                                         handle_file(str(small["weights"])), handle_file(str(small["classes"])),
                                         api_name="/feature_maps")
        assert "**roses** (class 2" in info

        # Wrong uploads: a sentence, never a trace.
        text = tmp_path / "notes.pth"
        text.write_text("not weights")
        with pytest.raises(Exception) as e:
            client.predict(handle_file(str(photos["lion"])), "resnet18", handle_file(str(text)), None,
                           api_name="/classify")
        assert "not a checkpoint saved by torch.save" in str(e.value) and "Traceback" not in str(e.value)
        with pytest.raises(Exception) as e:
            client.predict(handle_file(str(photos["lion"])), "resnet18", None, handle_file(str(small["classes"])),
                           api_name="/classify")
        assert "without its checkpoint" in str(e.value)
        with pytest.raises(Exception) as e:
            client.predict(handle_file(str(photos["lion"])), "resnet18", "conv3_x", 8, "tabby",
                           handle_file(str(small["weights"])), handle_file(str(small["classes"])),
                           api_name="/feature_maps")
        assert "daisy, dandelion, roses, sunflowers, tulips" in str(e.value)
        # The ImageNet model still answers when no checkpoint is given (the two extra inputs are optional).
        label, info = client.predict(handle_file(str(photos["lion"])), "resnet18", api_name="/classify")
        assert len(label["confidences"]) == 5 and "Your checkpoint" not in info
    finally:
        client.close()


@pytest.mark.browser
def test_a_student_uploads_a_checkpoint_in_the_feature_maps_tab(app_server, small, tmp_path):
    """In Chromium: the checkpoint and its class_indices.json go in the tab's upload boxes, the Grad-CAM class list
    becomes the checkpoint's own, and Show explains the checkpoint's answer for the class picked."""
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Chromium is not installed (.ci/run installs it)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(locale="en-US", viewport={"width": 1280, "height": 1300})
            page.set_default_timeout(120_000)
            page.goto(app_server)
            tab = page.get_by_role("tab", name="Feature maps")
            for _ in range(10):  # a click landing while the app starts can be lost: click until it is selected
                tab.click()
                if tab.get_attribute("aria-selected") == "true":
                    break
                page.wait_for_timeout(1000)
            page.locator("#features-own").get_by_text("Your own checkpoint").click()
            page.locator("#features-checkpoint input[type=file]").set_input_files(str(small["weights"]))
            page.locator("#features-class-indices input[type=file]").set_input_files(str(small["classes"]))
            sync_api.expect(page.locator("#features-class-indices")).to_contain_text("class_indices.json")
            sync_api.expect(page.locator("#features-target")).to_contain_text("your checkpoint's class names")
            page.locator("#features-target input").click()
            page.get_by_role("option", name="roses", exact=True).click()  # the list is the checkpoint's now
            page.locator("#features-button").click()
            info = page.locator("#features-info")
            sync_api.expect(info).to_contain_text("Your checkpoint (ResNet-18, 5 classes)", timeout=120_000)
            sync_api.expect(info).to_contain_text("Grad-CAM for roses (class 2")
            assert page.locator(".toast-body.error").count() == 0
            page.screenshot(path=tmp_path / "features-own-checkpoint.png")
        finally:
            browser.close()


# ---------------------------------------------------------------------------- flower_photos from a loopback mirror

def jpeg(colour, size=12) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="JPEG")
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, payload: bytes = b"", **fields) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    for k, v in fields.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(payload) if payload else None)


def flowers_tgz(path: Path, per_class: int = 10, extra=None) -> Path:
    """A flower_photos-shaped archive: ``flower_photos/<class>/<n>.jpg`` and its LICENSE.txt."""
    with tarfile.open(path, "w:gz") as tar:
        add(tar, "flower_photos", type=tarfile.DIRTYPE, mode=0o755)
        add(tar, "flower_photos/LICENSE.txt", b"All images in this archive are licensed under CC-BY 2.0\n")
        for c, name in enumerate(FLOWERS["classes"]):
            for i in range(per_class):
                add(tar, f"flower_photos/{name}/{i}.jpg", jpeg((40 * c, 200 - 30 * c, 17 * i)))
        for entry in extra or ():
            add(tar, *entry[:2], **(entry[2] if len(entry) > 2 else {}))
    return path


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(tmp_path):
    """A loopback http.server (http is accepted on loopback only) serving the archives a test puts in its site."""
    site = tmp_path / "site"
    site.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.unit
def test_the_published_flowers_archive_is_pinned():
    """tensorflow_datasets' record for tf_flowers (url_checksums/tf_flowers.txt): size and SHA-256."""
    assert FLOWERS["url"].startswith("https://storage.googleapis.com/download.tensorflow.org/example_images/")
    assert FLOWERS["sha256"] == "4c54ace7911aaffe13a365c34f650e71dd5bf1be0a58b464e5a7183e3e595d9c"
    assert FLOWERS["bytes"] == 228_813_984 < FLOWERS["max_download_bytes"]
    assert sum(FLOWERS["counts"].values()) == 3670 and FLOWERS["classes"] == sorted(FLOWERS["counts"])
    from resnet.data import stratified_split
    from resnet.train.estimate import dataset_counts
    from resnet.train.finetune import FinetuneConfig
    labels = [c for c, name in enumerate(FLOWERS["classes"]) for _ in range(FLOWERS["counts"][name])]
    train, val = stratified_split(labels, FLOWERS["val_fraction"], 0)
    assert dataset_counts(FinetuneConfig(dataset="flowers"))[:2] == (len(train), len(val)) == (3303, 367)


@pytest.mark.unit
def test_flowers_download_checksum_split_and_cache(tmp_path, mirror, monkeypatch):
    site, base = mirror
    archive = flowers_tgz(site / "flower_photos.tgz")
    cache = tmp_path / "cache"
    monkeypatch.setenv("RESNET_FLOWERS_URL", f"{base}/flower_photos.tgz")
    monkeypatch.setenv("RESNET_FLOWERS_SHA256", sha(archive))
    monkeypatch.setenv("RESNET_DATA_DIR", str(cache))
    ds = data.load_dataset("flowers")  # what `finetune --dataset flowers` and the Fine-tune tab ask for
    assert ds.name == "flowers" and ds.classes == FLOWERS["classes"]
    assert ds.counts() == {"train": 45, "val": 5}  # 10 % of each class held out, as in the tutorial
    assert ds.skipped == 0 and any("CC-BY 2.0" in str(n) for n in ds.notes)
    assert not (cache / "flower_photos.tgz").exists() and not list(cache.rglob("LICENSE.txt"))
    # Reproducible: the same seed gives the same split, another seed another one.
    again = data.load_dataset("flowers")
    assert again.val.indices == ds.val.indices and data.load_dataset("flowers", seed=1).val.indices != ds.val.indices
    # Cached: no server needed any more.
    (site / "flower_photos.tgz").unlink()
    monkeypatch.setenv("RESNET_FLOWERS_URL", "http://127.0.0.1:9/flower_photos.tgz")
    assert data.load_dataset("flowers", val_fraction=0.2).counts() == {"train": 40, "val": 10}


@pytest.mark.unit
def test_flowers_with_the_wrong_checksum_or_offline_is_refused_cleanly(tmp_path, mirror):
    site, base = mirror
    flowers_tgz(site / "flower_photos.tgz")
    cache = tmp_path / "cache"
    with pytest.raises(DatasetError) as e:  # the published hash: a different file is refused and deleted
        data.flowers(cache_dir=cache, url=f"{base}/flower_photos.tgz")
    assert "checksum" in str(e.value) and not list(cache.iterdir())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DatasetError) as e:
        data.flowers(cache_dir=cache, url=f"http://127.0.0.1:{port}/flower_photos.tgz")
    assert "offline" in str(e.value) and not list(cache.glob("*.partial"))


@pytest.mark.unit
def test_hostile_archives_are_refused_and_nothing_lands_outside(tmp_path, mirror):
    site, base = mirror
    fifo, link, hard = tarfile.FIFOTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
    hostile = {
        "dotdot": ([("flower_photos/../../escaped.jpg", jpeg((1, 2, 3)))], "points outside"),
        "absolute": ([(str(tmp_path / "absolute.jpg"), jpeg((1, 2, 3)))], "points outside"),
        "symlink": ([("flower_photos/daisy/link.jpg", b"", {"type": link, "linkname": "/etc/passwd"})], "is a link"),
        "hardlink": ([("flower_photos/daisy/hard.jpg", b"", {"type": hard, "linkname": "/etc/passwd"})], "is a link"),
        "fifo": ([("flower_photos/daisy/pipe.jpg", b"", {"type": fifo})], "not a regular file"),
    }
    for name, (extra, expected) in hostile.items():
        archive = flowers_tgz(site / f"{name}.tgz", per_class=2, extra=extra)
        cache = tmp_path / f"cache-{name}"
        with pytest.raises(DatasetError) as e:
            data.flowers(cache_dir=cache, url=f"{base}/{name}.tgz", sha256=sha(archive))
        assert expected in str(e.value), name
        assert not (cache / "flower_photos").exists() and not (cache / "flower_photos.partial").exists(), name
    assert not list(tmp_path.rglob("escaped.jpg")) and not (tmp_path / "absolute.jpg").exists()

    dest = tmp_path / "dest"
    # Limits: too many members, too many bytes, a ratio no photo reaches (a bomb), not a gzip, cut short.
    with pytest.raises(DatasetError, match="more than 20 entries"):
        data.extract_tgz(flowers_tgz(tmp_path / "many.tgz", per_class=5), dest, limits={"max_files": 20})
    with pytest.raises(DatasetError, match="more than 1 MiB"):
        data.extract_tgz(flowers_tgz(tmp_path / "big.tgz", per_class=2,
                                     extra=[("flower_photos/daisy/big.jpg", os.urandom(2 << 20))]),
                         dest, limits={"max_bytes": 1 << 20})
    bomb = flowers_tgz(tmp_path / "bomb.tgz", per_class=1, extra=[("flower_photos/daisy/zeros.jpg", bytes(64 << 20))])
    assert bomb.stat().st_size < 200_000
    with pytest.raises(DatasetError, match="far more than photos compress to"):
        data.extract_tgz(bomb, dest)
    (tmp_path / "plain.tgz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(DatasetError, match="not a readable .tgz archive"):
        data.extract_tgz(tmp_path / "plain.tgz", dest)
    whole = flowers_tgz(tmp_path / "whole.tgz").read_bytes()
    (tmp_path / "cut.tgz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DatasetError, match="not a readable .tgz archive"):
        data.extract_tgz(tmp_path / "cut.tgz", dest)
    # Hidden files and non-images are skipped and counted, never written.
    counts = data.extract_tgz(flowers_tgz(tmp_path / "ok.tgz", per_class=2,
                                          extra=[("flower_photos/daisy/.hidden.jpg", jpeg((0, 0, 0))),
                                                 ("flower_photos/daisy/run.sh", b"#!/bin/sh\n")]), tmp_path / "ok")
    assert counts == {"images": 10, "skipped": 3}  # LICENSE.txt, .hidden.jpg, run.sh


class SlowHandler(QuietHandler):
    """Sends files 256 KiB at a time, ``pause`` seconds apart: a slow line."""
    pause = 0.1

    def copyfile(self, source, outputfile):
        while piece := source.read(256 << 10):
            outputfile.write(piece)
            outputfile.flush()
            time.sleep(self.pause)


@pytest.fixture
def slow_mirror(tmp_path):
    site = tmp_path / "slow"
    site.mkdir()
    handler = type("Handler", (SlowHandler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield site, f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def flowers_run(site, base, tmp_path, monkeypatch, **kw):
    """A tiny fine-tune on flowers from the mirror: the archive padded to 3 MiB (three reads of the download)."""
    archive = flowers_tgz(site / "flower_photos.tgz", extra=[("flower_photos/padding.bin", os.urandom(3 << 20))])
    monkeypatch.setenv("RESNET_FLOWERS_URL", f"{base}/flower_photos.tgz")
    monkeypatch.setenv("RESNET_FLOWERS_SHA256", sha(archive))
    monkeypatch.setenv("RESNET_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("RESNET_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("RESNET_ALLOW_DOWNLOAD", "0")
    from resnet.train.finetune import FinetuneConfig
    return FinetuneConfig(dataset="flowers", strategies="scratch", epochs=1, image_size=32, batch_size=16, **kw)


@pytest.mark.unit
def test_a_fine_tune_shows_its_data_sets_download_in_mib(tmp_path, slow_mirror, monkeypatch):
    from resnet.train.finetune import run
    site, base, _ = slow_mirror
    events = list(run(flowers_run(site, base, tmp_path, monkeypatch)))
    got = [(ev.step, ev.steps) for ev in events if ev.kind == "prepare" and ev.message.key == "engine.downloading"]
    assert len(got) >= 2 and got[-1][0] == got[-1][1] == 3, got  # MiB so far, of the Content-Length's 3 MiB
    assert [s for s, _ in got] == sorted(s for s, _ in got) and events[-1].kind == "done"
    assert events[-1].result.summaries[0].val_count == 5


@pytest.mark.unit
def test_stop_ends_a_download_at_once_and_leaves_nothing_behind(tmp_path, slow_mirror, monkeypatch):
    from resnet import downloads
    from resnet.train.finetune import run
    site, base, handler = slow_mirror
    handler.pause = 1.0  # 12 pieces: 12 s for the whole archive
    cfg = flowers_run(site, base, tmp_path, monkeypatch)
    cancel = threading.Event()
    progress = []
    for ev in run(cfg, cancel=cancel):
        if ev.kind == "prepare" and ev.message.key == "engine.downloading":
            progress.append((ev.step, ev.steps))
            cancel.set()  # Stop, once the first MiB has arrived
    # Stopped mid-download: the archive's last MiB never arrived.
    assert ev.kind == "cancelled" and progress and all(got < total for got, total in progress), progress
    left = lambda: list((tmp_path / "cache").rglob("*.partial")) + list((tmp_path / "cache").rglob("*.tgz"))  # noqa: E731
    deadline = time.monotonic() + 60  # the download's own thread deletes its partial file within a chunk
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left()
    assert downloads.retry_in(f"{base}/flower_photos.tgz") == 0  # a Stop is not a failure: no back-off
