"""One training engine, every caller: the command line, the app's /finetune endpoint and torchrun with one
process give the same run for the same seed and data (CPU); with two processes the validation accuracy is over
exactly the validation set (an odd number of images, none padded) and BatchNorm statistics match across ranks.

Every run reads the same zip of the built-in shapes: 40 training and 9 validation images, 32 px, ResNet-18."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from gradio_client import Client, handle_file

from resnet.data import load_dataset, synthetic, targets
from resnet.models.transfer import load_export
from resnet.preprocess import transform
from resnet.weights import read_state_dict

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ["--arch", "resnet18", "--epochs", "2", "--image-size", "32", "--batch-size", "8", "--per-class", "all",
            "--seed", "0"]  # given, not the quick preset's values: the app's endpoint gets the same
TORCHRUN = (sys.executable, "-m", "torch.distributed.run", "--standalone")


@pytest.fixture(scope="module")
def shapes_zip(tmp_path_factory) -> Path:
    """train/ and val/ folders of 4 shapes: 10 training images a class, 3 + 2 + 2 + 2 validation images."""
    ds = synthetic(80, image_size=40, seed=3, val_fraction=0.5)
    wanted = {"train": [10] * 4, "val": [3, 2, 2, 2]}
    path = tmp_path_factory.mktemp("data") / "shapes.zip"
    with zipfile.ZipFile(path, "w") as z:
        for split, part in (("train", ds.train), ("val", ds.val)):
            kept = [0] * 4
            for i in range(len(part)):
                image, k = part[i]
                if kept[k] < wanted[split][k]:
                    buf = io.BytesIO()
                    image.save(buf, "PNG")
                    z.writestr(f"{split}/{ds.classes[k]}/{kept[k]}.png", buf.getvalue())
                    kept[k] += 1
    return path


def resnet(args: list[str], weights_dir: Path, out: Path, launcher=(sys.executable,)) -> dict:
    """``python -m resnet finetune …`` (or under torchrun), models saved to ``out``; its JSON summary."""
    env = dict(os.environ, RESNET_WEIGHTS_DIR=str(weights_dir), RESNET_ALLOW_DOWNLOAD="0",
               TORCH_HOME=str(out / "torch_home"), OMP_NUM_THREADS=str(torch.get_num_threads()))
    cmd = [*launcher, "-m", "resnet", "finetune", *args, "--json", str(out / "run.json"), "--save-dir", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "run.json").read_text())


def untimed(report: dict) -> dict:
    """Every number of a summary but the timings."""
    drop = {"seconds", "seconds_per_epoch", "images_per_s", "decode_seconds", "cache_seconds"}
    return {"strategies": [{k: v for k, v in s.items() if k not in drop} for s in report["strategies"]],
            "history": {n: {k: v for k, v in h.items() if k not in drop} for n, h in report["history"].items()},
            **{k: report[k] for k in ("config", "dataset", "classes", "pretrained", "notes")}}


def same_weights(a: Path, b: Path) -> None:
    sa, sb = read_state_dict(a), read_state_dict(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), (a.name, b.name)


@pytest.fixture(scope="module")
def cli_run(shapes_zip, weights_dir, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("cli")
    return resnet(["--dataset", str(shapes_zip), "--strategies", "all,head", *SETTINGS], weights_dir, out), out


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_torchrun_with_one_process_is_the_command_line_run(cli_run, shapes_zip, weights_dir, tmp_path):
    single, models = cli_run
    ddp = resnet(["--dataset", str(shapes_zip), "--strategies", "all,head", *SETTINGS], weights_dir, tmp_path,
                 launcher=(*TORCHRUN, "--nproc_per_node=1"))
    assert single.keys() == ddp.keys()  # one schema, one process or several
    assert (single["world_size"], single["backend"], ddp["world_size"], ddp["backend"]) == (1, None, 1, "gloo")
    assert [s["pretrained"] for s in single["strategies"]] == [True, True]  # the test's checkpoint was found
    assert untimed(single) == untimed(ddp)  # the checksums of weights and BatchNorm statistics included
    for name in ("all", "head"):
        same_weights(models / f"resnet18-{name}.pth", tmp_path / f"resnet18-{name}.pth")


@pytest.mark.served
def test_the_app_endpoint_is_the_command_line_run(cli_run, shapes_zip, app_server):
    single, models = cli_run
    client = Client(app_server, verbose=False)
    try:
        _, _, table, files = client.predict("upload", handle_file(str(shapes_zip)), ["all", "head"], "resnet18", 2,
                                            32, 8, 0, "all", api_name="/finetune")[:4]
    finally:
        client.close()
    rows = {r[0]: r[4:] for r in table["data"]}
    from resnet.i18n import t  # the page names each strategy by its one display name
    assert rows == {t(f"finetune.name_{s['strategy']}", "en"):
                    [f"{s['best_val_acc']:.1%} ± {s['best_val_acc_se']:.1%}", f"{s['final_val_acc']:.1%}"]
                    for s in single["strategies"]}
    assert sorted(Path(f).name for f in files) == ["resnet18-all.pth", "resnet18-head.pth"]
    for f in files:
        same_weights(Path(f), models / Path(f).name)


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_two_processes_validate_on_exactly_the_validation_set_with_equal_batchnorm(shapes_zip, weights_dir,
                                                                                   tmp_path):
    report = resnet(["--dataset", str(shapes_zip), "--strategies", "all,last", *SETTINGS], weights_dir, tmp_path,
                    launcher=(*TORCHRUN, "--nproc_per_node=2"))
    assert report["world_size"] == 2 and report["backend"] == "gloo"
    assert (report["dataset"]["n_train"], report["dataset"]["n_val"]) == (40, 9)
    ds = load_dataset(str(shapes_zip))  # the images as the engine reads them, in its order
    dec, ev = transform("decode", 32), transform("eval", 32, decoded=True)
    x, y = torch.stack([ev(dec(ds.val[i][0])) for i in range(len(ds.val))]), torch.tensor(targets(ds.val))
    last = next(s for s in report["strategies"] if s["strategy"] == "last")
    assert last["pretrained"] is True  # the test's checkpoint was found through RESNET_WEIGHTS_DIR by every rank
    assert last["trainable_params"] == 8_393_728 + 513 * len(report["classes"])  # conv5_x + a new fc
    for s in report["strategies"]:
        assert len(s["rank_checksums"]) == 2 and s["rank_checksums"][0] == s["rank_checksums"][1], s
        model, _ = load_export(tmp_path / f"resnet18-{s['strategy']}.pth")  # rank 0's
        assert not torch.equal(model.layer4[0].bn1.running_var, torch.ones(512))  # re-estimated after training
        with torch.no_grad():
            logits = model(x)
        correct = int((logits.argmax(1) == y).sum())
        # Ninths: each of the 9 images counted once (a padded 10th image would give tenths).
        assert s["final_val_acc"] == pytest.approx(correct / 9, abs=1e-12), (s["strategy"], correct)
        assert s["final_val_loss"] == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-4)
