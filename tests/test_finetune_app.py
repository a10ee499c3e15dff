"""/finetune through a launched server: live intermediate results, downloads, try-it, Stop; what the page says
before Start (the weights' source, the time estimate, presets) and after (standard errors, Best only when it is)."""
import io
import re
import zipfile

import pytest

from resnet.i18n import t
import torch
from gradio_client import handle_file
from PIL import Image

from resnet.models.transfer import load_export
from resnet.train.estimate import PRESETS

pytestmark = pytest.mark.served


def finetune_args(strategies, epochs=2, size=64, batch=16, dataset="synthetic", zip_file=None, per_class="all",
                  arch="resnet18", lr=0):
    return (dataset, zip_file, strategies, arch, epochs, size, batch, lr, per_class)


SOURCE_WORDS = {"**ImageNet**": "ImageNet", "**built-in pretraining source**": "built-in source",
                "Starting weights: random": "random"}


def source_before_start(client, arch="resnet18", strategies=("head",)) -> str:
    """The weights' source as the page says it before Start: the table's word for it."""
    line = client.predict(arch, list(strategies), api_name="/finetune_source")
    found = [word for phrase, word in SOURCE_WORDS.items() if phrase in line]
    assert len(found) == 1, line
    return found[0]


def test_tiny_finetune_streams_results_and_exports_models(client, photos):
    source = source_before_start(client)  # said before Start, and the run then says the same
    job = client.submit(*finetune_args(["head", "replace"], per_class="5"), api_name="/finetune")
    seen = []
    for out in job:  # intermediate outputs, as they arrive
        seen.append(out)
    final = job.outputs()[-1]
    epoch_updates = [o for o in seen[:-1] if "epoch" in str(o[0]) and "validation accuracy" in str(o[0])]
    # Curves before the end (a subscriber that falls behind a fast shared run skips to the latest epoch).
    assert len(epoch_updates) >= 1, [str(o[0])[:80] for o in seen]
    assert any(o[1] and o[1].get("type") == "matplotlib" for o in seen[:-1])
    status, curves, table, files, _choices = final[:5]
    assert curves["type"] == "matplotlib"
    names = {t(f"finetune.name_{s}", "en"): s for s in ("head", "replace")}  # the rows name them, code name aside
    rows = {names.get(r[0], r[0]): r for r in table["data"]}
    assert set(rows) == {"head", "replace"}
    assert rows["head"][2] == "4,004"  # 1000 → 4 new fc: 4,000 weights + 4 biases
    assert rows["replace"][2] == "2,052"  # 512 → 4
    assert rows["head"][1] == rows["replace"][1] == source
    # Accuracy with its standard error; "Best" only when the verdict says so, else the tie is named.
    assert all(re.fullmatch(r"\d+\.\d% ± \d+\.\d%", r[4]) for r in rows.values()), rows
    assert ("Best:" in status) != ("No best strategy" in status), status
    # The small-data knob reached the engine: 5 training images for each of the built-in set's classes.
    assert "5 training images per class" in status, status
    # Asked again, the same run would be a replay, and the estimate says so before Start.
    again = client.predict("synthetic", ["head", "replace"], "resnet18", 2, 64, 16, 0, "5",
                           api_name="/finetune_estimate")
    assert "replays its result at once" in again, again
    assert len(files) == 2
    model, meta = load_export(files[0])
    assert meta["strategy"] in ("head", "replace") and len(model.categories) == 4
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    # The session's own models can be tried on a picture (the state lives on the server, per session).
    label = client.predict(handle_file(str(photos["cheetah"])), "head", api_name="/try_finetuned")
    assert {c["label"] for c in label["confidences"]} <= set(model.categories)


def test_stop_ends_a_long_run_and_the_server_takes_the_next(client):
    job = client.submit(*finetune_args(["all"], epochs=50, size=128, batch=16), api_name="/finetune")
    for out in job:
        if "step" in str(out[0]):
            break
    assert "Stopped" in client.predict(api_name="/stop_finetune")
    final = job.result(timeout=60)  # a hang bound only: 50 epochs of `all` would take many minutes
    assert "Stopped" in final[0]
    quick = client.predict(*finetune_args(["head"], epochs=1), api_name="/finetune")
    assert [r[0] for r in quick[2]["data"]] == [t("finetune.name_head", "en")]


def colour_zip(tmp_path, per_class=10):
    """Two classes that any network tells apart: red and blue squares (a little noise so no two are equal)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, rgb in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            for i in range(per_class):
                img = Image.new("RGB", (40, 40), tuple(max(0, c - 3 * i) for c in rgb))
                out = io.BytesIO()
                img.save(out, format="PNG")
                z.writestr(f"{name}/{i}.png", out.getvalue())
    path = tmp_path / "colours.zip"
    path.write_bytes(buf.getvalue())
    return path


def test_a_tie_is_called_a_tie(client, tmp_path):
    """Both frozen strategies classify red vs blue perfectly: no strategy is ahead, so none is announced as best."""
    final = client.predict(*finetune_args(["head", "replace"], epochs=8, size=32, batch=8, dataset="upload",
                                          zip_file=handle_file(str(colour_zip(tmp_path)))), api_name="/finetune")
    status, table = final[0], final[2]
    accs = {r[0]: r[4] for r in table["data"]}
    assert set(accs.values()) == {"100.0% ± 0.0%"}, accs
    assert "No best strategy" in status and "Best:" not in status, status
    assert "Chance level: 50%" in status


def test_estimate_and_presets_before_start(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    defaults = {p["parameter_name"]: p["parameter_default"] for p in api["/finetune"]["parameters"]}
    quick = PRESETS["quick"]
    # The page opens on the quick preset, and each preset sets the sliders.
    for key in ("arch", "epochs", "image_size", "batch_size", "lr"):
        assert defaults[key] == quick[key], key
    assert set(defaults["strategies"]) == set(quick["strategies"]) and defaults["per_class"] == str(quick["per_class"])
    thorough = client.predict("thorough", api_name="/finetune_preset")
    assert list(thorough[1:6]) == [PRESETS["thorough"][k] for k in ("arch", "epochs", "image_size", "batch_size", "lr")]
    assert set(thorough[0]) == set(PRESETS["thorough"]["strategies"])
    assert thorough[6] == str(PRESETS["thorough"]["per_class"])
    # The estimate: measured on this server, in seconds, with the runs ahead.
    args = ["synthetic", quick["strategies"], quick["arch"], quick["epochs"], quick["image_size"],
            quick["batch_size"], quick["lr"], str(quick["per_class"])]
    line = client.predict(*args, api_name="/finetune_estimate")
    seconds = re.search(r"about (?:(\d+) min )?(\d+) s", line)
    assert seconds and 60 * int(seconds[1] or 0) + int(seconds[2]) > 0, line
    assert f"{quick['per_class'] * 4} training" in line and "ahead" in line, line
    assert "depends on how many images" in client.predict("upload", *args[1:], api_name="/finetune_estimate")
    refused = client.predict("synthetic", ["all"], "resnet152", 100, 512, 256, 0, "all", api_name="/finetune_estimate")
    assert "would be refused" in refused and "Traceback" not in refused


@pytest.mark.parametrize("change,expected", [
    # The sliders' documented limits (resnet.train.finetune.LIMITS) are checked before the job joins the queue.
    ({"epochs": 0}, "epochs must be a whole number from 1 to 100, not 0"),
    ({"epochs": 10**6}, "epochs must be a whole number from 1 to 100, not 1000000"),
    ({"batch": 0}, "batch size must be a whole number from 1 to 256, not 0"),
    ({"size": 10_000}, "image size must be a whole number from 32 to 512, not 10000"),
    ({"size": 1}, "image size must be a whole number from 32 to 512, not 1"),
    ({"strategies": []}, "at least one strategy"),
    ({"dataset": "upload"}, "Upload a .zip"),
    ({"per_class": "0"}, "training images per class must be a whole number from 1 to 10000, not 0"),
    ({"per_class": "many"}, "training images per class must be a number, not 'many'"),
])
def test_bad_settings_are_sentences(client, change, expected):
    kwargs = {"strategies": ["head"], **change}
    with pytest.raises(Exception) as e:
        client.predict(*finetune_args(**kwargs), api_name="/finetune")
    assert expected in str(e.value) and "Traceback" not in str(e.value)
