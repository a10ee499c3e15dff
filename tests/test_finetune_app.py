"""/finetune through a launched server: live intermediate results, downloads, try-it, Stop."""
import time

import pytest
import torch
from gradio_client import handle_file

from resnet.models.transfer import load_export

pytestmark = pytest.mark.served


def finetune_args(strategies, epochs=2, size=64, batch=16, dataset="synthetic", zip_file=None):
    return (dataset, zip_file, strategies, "resnet18", epochs, size, batch, 0)


def test_tiny_finetune_streams_results_and_exports_models(client, photos):
    job = client.submit(*finetune_args(["head", "replace"]), api_name="/finetune")
    seen = []
    for out in job:  # intermediate outputs, as they arrive
        seen.append(out)
    final = job.outputs()[-1]
    epoch_updates = [o for o in seen[:-1] if "epoch" in str(o[0]) and "validation accuracy" in str(o[0])]
    assert len(epoch_updates) >= 3, [str(o[0])[:80] for o in seen]  # curves updated each epoch, before the end
    assert any(o[1] and o[1].get("type") == "matplotlib" for o in seen[:-1])
    status, curves, table, files, _choices = final[:5]
    assert curves["type"] == "matplotlib"
    rows = {r[0]: r for r in table["data"]}
    assert set(rows) == {"head", "replace"}
    assert rows["head"][2] == "4,004"  # 1000 → 4 new fc: 4,000 weights + 4 biases
    assert rows["replace"][2] == "2,052"  # 512 → 4
    # resnet18 has the test's checkpoint in RESNET_WEIGHTS_DIR, so both start from "pretrained" weights.
    assert rows["head"][1] == "yes" and "random" not in status and "Best:" in status
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
    t = time.monotonic()
    assert "Stopped" in client.predict(api_name="/stop_finetune")
    final = job.result(timeout=60)
    stopped_after = time.monotonic() - t
    assert "Stopped" in final[0]
    assert stopped_after < 30, stopped_after  # 50 epochs of `all` would take many minutes
    quick = client.predict(*finetune_args(["head"], epochs=1), api_name="/finetune")
    assert [r[0] for r in quick[2]["data"]] == ["head"]


@pytest.mark.parametrize("change,expected", [
    # The sliders' documented limits (resnet.train.finetune.LIMITS) are checked before the job joins the queue.
    ({"epochs": 0}, "epochs must be a whole number from 1 to 100, not 0"),
    ({"epochs": 10**6}, "epochs must be a whole number from 1 to 100, not 1000000"),
    ({"batch": 0}, "batch size must be a whole number from 1 to 256, not 0"),
    ({"size": 10_000}, "image size must be a whole number from 32 to 512, not 10000"),
    ({"size": 1}, "image size must be a whole number from 32 to 512, not 1"),
    ({"strategies": []}, "at least one strategy"),
    ({"dataset": "upload"}, "Upload a .zip"),
])
def test_bad_settings_are_sentences(client, change, expected):
    kwargs = {"strategies": ["head"], **change}
    with pytest.raises(Exception) as e:
        client.predict(*finetune_args(**kwargs), api_name="/finetune")
    assert expected in str(e.value) and "Traceback" not in str(e.value)
