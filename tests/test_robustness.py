"""Whatever a phone, a student or a stranger sends: a clear sentence or a right answer, never a crash.

The corpus (``tests/corpus.py``) is made at test time: broken images (empty, text, SVG, a zip, truncated,
scrambled, a 20000×20000 bomb, a 20000×2 strip), odd-but-valid ones (1×1, 16-bit, CMYK, palette with
transparency, animated GIF, EXIF-rotated, MPO …), hostile dataset zips (traversal, absolute paths,
symlinks, a ratio bomb, 10,000 files, deep nesting, one class, empty, no images, not a zip).
Library level first, then through the launched app (gradio_client and raw HTTP), then in a browser.
"""
from __future__ import annotations

import gc
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import corpus
import resnet
from resnet.i18n import t as say
from resnet.preprocess import BadImage, open_image


ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    return corpus.images(tmp_path_factory.mktemp("corpus_images"))


@pytest.fixture(scope="module")
def model(weights_dir):
    return resnet.load_pretrained("resnet18", path=next(weights_dir.glob("resnet18-*.pth")))


def a_sentence(message: str) -> bool:
    """One short line for a person: no traceback, no repr of an exception class."""
    return (10 < len(message) < 400 and "Traceback" not in message and "\n" not in message.strip()
            and 'File "' not in message)


def confidences(label: dict) -> dict[str, float]:
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def same(a: dict[str, float], b: dict[str, float], tol: float = 1e-4) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < tol for k in a)


# ------------------------------------------------------------------------------------ library level

def test_broken_images_are_refused_with_their_sentence(images):
    for name, phrase in corpus.BROKEN.items():
        with pytest.raises(BadImage) as e:
            open_image(images[name])
        assert phrase in str(e.value) and a_sentence(str(e.value)), (name, str(e.value))


def test_odd_images_open_as_rgb_the_right_way_up(images):
    for name in corpus.ODD:
        img = open_image(images[name])
        assert img.mode == "RGB", name
    assert open_image(images["tiny_1x1.png"]).size == (1, 1)
    stored = Image.open(images["exif_rotated.jpg"]).size
    assert open_image(images["exif_rotated.jpg"]).size == stored[::-1]  # orientation 6 honoured
    first = open_image(images["animated.gif"])
    assert first.size == (320, 240) and first.getpixel((0, 0)) != (0, 0, 255)  # frame 0, not the blue frame 2


PROBE = r"""
import json, os, resource, sys, time
from PIL import Image
from resnet import preprocess  # its pixel limit is read from the environment each time an image is opened

out = {}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    preprocess.open_image(sys.argv[2])
except preprocess.BadImage as e:
    out["bomb"] = str(e)
out["bomb_seconds"] = time.perf_counter() - t
out["bomb_peak_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
for setting in ("default", "10000", "lots"):
    if setting != "default":
        os.environ["RESNET_MAX_IMAGE_PIXELS"] = setting
    res = out[setting] = {"max_pixels": preprocess.pixel_limit()}
    for w, h in ((200, 100), (100, 100)):
        try:
            res[f"{w}x{h}"] = list(preprocess.open_image(Image.new("RGB", (w, h))).size)
        except preprocess.BadImage as e:
            res[f"{w}x{h}"] = str(e)
print(json.dumps(out))
"""


def test_a_bomb_is_refused_before_decoding_and_the_limit_is_a_setting(images):
    env = {k: v for k, v in os.environ.items() if k != "RESNET_MAX_IMAGE_PIXELS"}
    run = subprocess.run([sys.executable, "-c", PROBE, "unused", str(images["bomb_20000x20000.png"])], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert "too large" in out["bomb"]
    # Decoding would take 400 MB (one byte per pixel) and seconds; the header alone takes neither.
    assert out["bomb_peak_mb"] < 50 and out["bomb_seconds"] < 1, out
    assert out["default"] == {"max_pixels": 40_000_000, "200x100": [200, 100], "100x100": [100, 100]}
    small = out["10000"]
    assert small["max_pixels"] == 10_000 and small["100x100"] == [100, 100]
    assert "over the limit of 10,000" in small["200x100"]
    assert out["lots"]["max_pixels"] == 40_000_000  # a typo in the setting does not stop the app


def test_randomly_damaged_files_open_or_get_a_sentence():
    """A seeded byte-flipping fuzz over every accepted format: RGB out, or BadImage; nothing else escapes."""
    src = corpus.photo("cheetah.jpg").resize((48, 40))
    seeds = {}
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        buf = io.BytesIO()
        src.save(buf, fmt)
        seeds[fmt] = buf.getvalue()
    rng = random.Random(6)
    outcomes = {"ok": 0, "refused": 0}
    for fmt, data in seeds.items():
        open_image(data)  # the undamaged file opens
        for _ in range(250):
            d = bytearray(data)
            for _ in range(rng.choice([1, 3, 10, 40])):
                d[rng.randrange(len(d))] = rng.randrange(256)
            if rng.random() < 0.25:
                d = d[: rng.randrange(1, len(d))]
            try:
                assert open_image(bytes(d)).mode == "RGB"
                outcomes["ok"] += 1
            except BadImage as e:
                assert "\n" not in str(e), (fmt, str(e))
                outcomes["refused"] += 1
    assert outcomes["ok"] > 100 and outcomes["refused"] > 100, outcomes


# ------------------------------------------------------------------------------- through the server

def test_broken_uploads_get_a_sentence_while_everyone_else_is_served(app_server, client, images, model, photos):
    want = dict(resnet.classify(model, photos["lion"], top_k=5))
    bystander = Client(app_server, verbose=False)
    answers, errors, done = [], [], threading.Event()

    def classify_meanwhile():
        try:
            while not done.is_set() or not answers:
                answers.append(confidences(bystander.predict(handle_file(str(photos["lion"])), "resnet18",
                                                             api_name="/classify")[0]))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    other = threading.Thread(target=classify_meanwhile)
    other.start()
    try:
        for name, phrase in corpus.BROKEN.items():
            for api, rest in (("/classify", ()), ("/feature_maps", ("conv2_x", 8, "top class"))):
                t = time.perf_counter()
                with pytest.raises(Exception) as e:
                    client.predict(handle_file(str(images[name])), "resnet18", *rest, api_name=api)
                assert phrase in str(e.value) and a_sentence(str(e.value)), (name, api, str(e.value))
                assert time.perf_counter() - t < 20, (name, api)  # a hang bound: a refusal must not wait on a decode
    finally:
        done.set()
        other.join(60)
        bystander.close()
    assert not errors and answers and all(same(a, want) for a in answers), errors
    label, _ = client.predict(handle_file(str(photos["cheetah"])), "resnet18", api_name="/classify")
    assert len(label["confidences"]) == 5


def test_odd_uploads_classify_exactly_like_the_library(client, images, model, tmp_path):
    for name in corpus.ODD:
        got = confidences(client.predict(handle_file(str(images[name])), "resnet18", api_name="/classify")[0])
        assert same(got, dict(resnet.classify(model, images[name], top_k=5))), name
    for name in ("tiny_1x1.png", "rgb16.png", "cmyk.jpg", "panorama_8x1.jpg"):  # the feature maps see them too
        _, _, info = client.predict(handle_file(str(images[name])), "resnet18", "conv5_x", 4, "top class",
                                    api_name="/feature_maps")
        assert "512×7×7" in info, name

    def direct(img: Image.Image) -> dict[str, float]:
        path = tmp_path / f"ref{len(list(tmp_path.iterdir()))}.png"
        img.save(path)
        return dict(resnet.classify(model, path, top_k=5))

    def served(name: str) -> dict[str, float]:
        return confidences(client.predict(handle_file(str(images[name])), "resnet18", api_name="/classify")[0])

    # EXIF orientation honoured: the same as the picture turned upright by hand, not as stored.
    stored = Image.open(images["exif_rotated.jpg"])
    stored.load()
    upright = stored.transpose(Image.Transpose.ROTATE_270).convert("RGB")
    got = served("exif_rotated.jpg")
    assert same(got, direct(upright)) and not same(got, direct(stored.convert("RGB")))
    # Animated GIF: the first frame, not another one.
    gif = Image.open(images["animated.gif"])
    frames = []
    for i in range(2):
        gif.seek(i)
        frames.append(gif.convert("RGB"))
    got = served("animated.gif")
    assert same(got, direct(frames[0])) and not same(got, direct(frames[1]))


def test_missing_and_out_of_range_inputs_get_sentences(client):
    cases = [
        (("resnet18", 1, "v1"), "/layer_table", "less than minimum value 32"),
        (("resnet18", 10_000, "v1.5"), "/layer_table", "greater than maximum value 1024"),
        (("resnet18", -224, "v1"), "/layer_table", "less than minimum value 32"),
        (("resnet9", 224, "v1"), "/layer_table", "not in the list of choices"),
        ((None, "resnet18"), "/classify", "upload an image"),
    ]
    for args, api, phrase in cases:
        with pytest.raises(Exception) as e:
            client.predict(*args, api_name=api)
        assert phrase in str(e.value) and "Traceback" not in str(e.value), (args, str(e.value))
    table, summary, _ = client.predict("resnet18", None, "v1", api_name="/layer_table")  # empty box: 224
    assert "224×224" in summary


def call_raw(base: str, api: str, data: list) -> str:
    """POST /gradio_api/call/<api> with ``data`` as JSON text; the event stream's text."""
    url = f"{base}gradio_api/call/{api.strip('/')}"
    r = httpx.post(url, content=data if isinstance(data, str) else json.dumps({"data": data}),
                   headers={"content-type": "application/json"}, timeout=30)
    if r.status_code != 200:
        return f"HTTP {r.status_code}: {r.text}"
    return httpx.get(f"{url}/{r.json()['event_id']}", timeout=120).text


def test_garbage_requests_are_turned_away(app_server):
    assert call_raw(app_server, "layer_table", "not json").startswith("HTTP 422")
    assert call_raw(app_server, "layer_table", '{"data": "junk"}').startswith("HTTP 422")
    nan = call_raw(app_server, "layer_table", '{"data": ["resnet18", NaN, "v1"]}')
    assert "event: error" in nan and "Traceback" not in nan
    nan_lr = call_raw(app_server, "finetune", '{"data": ["synthetic", null, ["head"], "resnet18", 1, 64, 16, NaN, "all"]}')
    assert nan_lr.startswith("HTTP 422") and "learning rate must be a finite number" in nan_lr  # refused at the join
    assert "Traceback" not in nan_lr


# ----------------------------------------------------------------------------------------- datasets

ZIP_PHRASES = {
    "traversal.zip": "outside its folder",
    "absolute.zip": "outside its folder",
    "symlink.zip": "symbolic link",
    "bomb.zip": "zip bomb",
    "many_files.zip": "more than the limit",
    "deep.zip": "No readable images",
    "one_class.zip": "one class",
    "empty.zip": "empty zip",
    "no_images.zip": "No readable images",
    "not_a_zip.zip": "not a readable zip",
}


@pytest.fixture(scope="module")
def zips(tmp_path_factory) -> tuple[dict[str, Path], Path]:
    d = tmp_path_factory.mktemp("zips")
    target = d / "planted" / f"{corpus.MARKER}-absolute.png"
    found = corpus.hostile_zips(d / "hostile", abs_target=target)
    found["bomb.zip"] = corpus.bomb_zip(d / "hostile" / "bomb.zip", megabytes=200)
    assert set(found) == set(ZIP_PHRASES)
    return found, target


def planted(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in r.rglob(f"{corpus.MARKER}*")]


def test_hostile_zips_are_refused_and_nothing_lands_outside(zips, tmp_path, monkeypatch):
    from resnet.data import DatasetError, load_dataset
    found, target = zips
    work = tmp_path / "tmp"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))  # where the extraction folders go (as TMPDIR would)
    for name, phrase in ZIP_PHRASES.items():
        t = time.perf_counter()
        try:
            load_dataset(found[name])
            raise AssertionError(f"{name} was accepted")
        except DatasetError as e:
            message = str(e)  # (the exception, its traceback and the frames it holds end with this block)
        assert phrase.lower() in message.lower() and a_sentence(message), (name, message)
        assert time.perf_counter() - t < 10, name  # a hang bound: a bomb is refused, not extracted
    gc.collect()
    assert not target.exists() and not planted(tmp_path, target.parent.parent, Path(tempfile.gettempdir()))
    assert list(work.iterdir()) == []  # every extraction folder was removed


def test_hostile_zips_through_finetune_get_sentences(client, zips, photos):
    found, target = zips
    for name, phrase in ZIP_PHRASES.items():
        with pytest.raises(Exception) as e:
            client.predict("upload", handle_file(str(found[name])), ["head"], "resnet18", 1, 64, 16, 0,
                           api_name="/finetune")
        assert phrase.lower() in str(e.value).lower() and a_sentence(str(e.value)), (name, str(e.value))
    assert not target.exists()
    label, _ = client.predict(handle_file(str(photos["bus"])), "resnet18", api_name="/classify")
    assert len(label["confidences"]) == 5


def test_one_bad_photo_in_a_good_zip_is_skipped_counted_and_named(client, tmp_path):
    """A phone dump with one broken or oversized photo: the run trains on the rest and its notes say which file
    was skipped and why. Never a crash, never a silent wrong data set."""
    broken = corpus.image_bytes()
    for bad, why in (("truncated.jpg", "damaged or truncated"), ("big_10000x10000.png", "over the limit")):
        entries = {f"{c}/{i}.png": corpus.class_image(k, i) for k, c in enumerate(("cats", "dogs")) for i in range(4)}
        entries[f"cats/{bad}"] = broken[bad]
        path = tmp_path / f"with_{bad}.zip"
        path.write_bytes(corpus.zip_bytes(entries))
        out = client.predict("upload", handle_file(str(path)), ["head"], "resnet18", 1, 32, 8, 0,
                             api_name="/finetune")
        assert [r[0] for r in out[2]["data"]] == [say("finetune.name_head", "en")], (bad, out[0])
        assert "Skipped 1 damaged image" in out[0] and bad in out[0] and why in out[0], (bad, out[0])


@pytest.mark.parametrize("change", [{"epochs": 0}, {"epochs": 10**6}, {"image_size": 1}, {"image_size": 10_000},
                                    {"batch_size": 0}, {"lr": -0.01}, {"lr": float("nan")}, {"lr": float("inf")},
                                    {"lr": 10.0}, {"epochs": 2.5}, {"epochs": True}])
def test_the_engine_refuses_settings_outside_its_documented_limits(change):
    from resnet.train.finetune import LIMITS, FinetuneConfig
    name = next(iter(change))
    with pytest.raises(ValueError) as e:
        FinetuneConfig(**change).validated()
    message = str(e.value)
    assert a_sentence(message)
    lo, hi = LIMITS[name]
    assert f"{hi:g}" in message, message  # the message says what is allowed


def test_out_of_range_learning_rates_through_the_api(client):
    for lr, phrase in ((-0.5, "learning rate must be a finite number above 0 and at most 1, not -0.5"),
                       (1e6, "at most 1, not 1000000")):
        with pytest.raises(Exception) as e:
            client.predict("synthetic", None, ["head"], "resnet18", 1, 64, 16, lr, api_name="/finetune")
        assert phrase in str(e.value) and "Traceback" not in str(e.value), str(e.value)


# ------------------------------------------------------------------------------------------ browser

def test_a_broken_upload_shows_a_sentence_on_the_page(app_server, images, photos):
    sync_api = pytest.importorskip("playwright.sync_api")
    import shutil
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Chromium is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(locale="en-US")
            page.goto(app_server)
            page.get_by_role("tab", name="Classify").click()
            upload = page.locator("#classify-image input[type=file]")
            upload.set_input_files(str(images["text.jpg"]))  # an upload classifies at once
            toast = page.locator(".toast-body.error")
            sync_api.expect(toast.first).to_contain_text("not an image format", timeout=60_000)
            text = toast.first.inner_text()
            assert "Traceback" not in text and "File \"" not in text
        finally:
            browser.close()
