"""classify() on real photos in every PIL mode, with a checkpoint this test makes."""
import io
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import resnet
from resnet.preprocess import BadImage, open_image
from resnet.weights import categories


MODES = ["1", "L", "LA", "P", "PA-transparency", "RGBA", "CMYK", "I;16", "F", "RGB"]


def as_mode(img: Image.Image, mode: str) -> Image.Image:
    if mode == "PA-transparency":
        p = img.convert("P")
        p.info["transparency"] = 0
        return p
    if mode == "I;16":
        a = (np.asarray(img.convert("L"), dtype=np.uint16) * 257)
        return Image.fromarray(a, mode="I;16")
    if mode == "F":
        return img.convert("L").convert("F")
    return img.convert(mode)


@pytest.fixture(scope="module")
def model(weights_dir):
    return resnet.load_pretrained("resnet18", path=next(weights_dir.glob("resnet18-*.pth")))


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_imagenet_labels(model, photos, mode):
    names = set(categories())
    for photo in ("grace_hopper", "cheetah"):
        img = as_mode(Image.open(photos[photo]), mode)
        top = resnet.classify(model, img, top_k=5)
        assert len(top) == 5
        assert all(label in names for label, _ in top)
        probs = [p for _, p in top]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6 and probs[-1] > 0


def test_classify_equals_the_manual_pipeline(model, photos):
    img = Image.open(photos["lion"]).convert("RGB")
    x = resnet.weights.preprocess("resnet18")(img).unsqueeze(0)
    with torch.inference_mode():
        p = model(x).softmax(-1)[0]
    top = resnet.classify(model, photos["lion"], top_k=3)
    idx = p.topk(3).indices.tolist()
    assert [label for label, _ in top] == [categories()[i] for i in idx]
    assert abs(top[0][1] - p[idx[0]].item()) < 1e-5


def test_odd_sizes_and_exif_orientation(model, photos):
    resnet.classify(model, Image.new("RGB", (1, 1), "red"))
    resnet.classify(model, Image.new("RGB", (3000, 17), "blue"))
    src = Image.open(photos["grace_hopper"]).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    src.save(buf, "JPEG", exif=exif)
    shown = open_image(buf.getvalue())
    assert shown.size == (src.height, src.width)


def test_grayscale_16bit_spans_the_range():
    a = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    rgb = open_image(Image.fromarray(a, mode="I;16"))
    px = np.asarray(rgb)
    assert px.min() == 0 and px.max() == 255


def test_bad_images_are_clear_errors(tmp_path):
    cases = {"empty.jpg": b"", "text.jpg": b"hello, I am not a picture\n" * 10,
             "page.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>"}
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), "green").save(buf, "JPEG")
    cases["truncated.jpg"] = buf.getvalue()[:600]
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadImage) as e:
            open_image(tmp_path / name)
        assert len(str(e.value)) > 10 and "\n" not in str(e.value)
    with pytest.raises(BadImage, match="over the limit"):
        open_image(Image.new("L", (5000, 5000)), max_pixels=1_000_000)


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_cli_classify_json(weights_dir, photos):
    import json
    weights = str(next(weights_dir.glob("resnet18-*.pth")))
    # Both commands at once: each spends most of its time importing torch on one core.
    good, bad = (subprocess.Popen([sys.executable, "-m", "resnet", "classify", image, "--weights", weights, *more],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for image, more in ((str(photos["cheetah"]), ["--json", "--top-k", "3"]), (__file__, [])))
    out, _ = good.communicate(timeout=120)
    _, bad_err = bad.communicate(timeout=120)
    assert good.returncode == 0
    data = json.loads(out)
    assert data["pretrained"] is True and len(data["top"]) == 3
    assert bad.returncode == 2 and "error:" in bad_err and "Traceback" not in bad_err


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_the_eval_transform_is_the_weights_own(photos, arch):
    """One factory (``resnet.preprocess``) makes every pipeline; its ``eval`` is torchvision's preset for the weights
    (ResNet-50's V2 weights resize to 232, not 256), with mean and std read from that metadata, not written down."""
    from torchvision.models import get_model_weights
    from resnet.preprocess import transform
    preset = get_model_weights(arch).DEFAULT.transforms()
    ours = transform("eval", arch=arch)
    assert ours.resize_size == preset.resize_size and ours.crop_size == preset.crop_size
    assert ours.mean == list(preset.mean) and ours.std == list(preset.std)
    assert resnet.weights.preprocess(arch).resize_size == preset.resize_size
    for name in ("cheetah", "lion", "bus"):
        img = open_image(photos[name])
        torch.testing.assert_close(ours(img), preset(img), rtol=0, atol=1e-5)


def test_the_factorys_kinds(photos):
    from resnet.preprocess import transform
    img = open_image(photos["cheetah"])  # 502×343
    square = transform("decode", 96)(img)
    assert square.dtype == torch.uint8 and tuple(square.shape) == (3, 110, 110)
    view = transform("view", 96)(img)
    assert isinstance(view, Image.Image) and view.size == (96, 96)
    assert torch.equal(transform("eval", 96, decoded=True)(view), transform("eval", 96)(img))
    before = torch.get_rng_state()
    a, b = (transform("train", 96, generator=torch.Generator().manual_seed(3))(img) for _ in range(2))
    assert torch.equal(a, b) and a.shape == (3, 96, 96) and torch.equal(torch.get_rng_state(), before)
    with pytest.raises(ValueError, match="unknown transform"):
        transform("test", 96)


def test_no_mean_or_std_is_written_down_outside_the_factory():
    from pathlib import Path
    root = Path(resnet.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "0.485" not in text and "0.229" not in text, path.name
