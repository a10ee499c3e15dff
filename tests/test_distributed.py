"""torchrun with 2 CPU processes (gloo): data-parallel fine-tuning ends with identical weights on both ranks."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet.models.transfer import load_export

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent


def test_torchrun_two_processes_identical_weights(tmp_path, weights_dir):
    env = dict(os.environ, RESNET_WEIGHTS_DIR=str(weights_dir), RESNET_ALLOW_DOWNLOAD="0", OMP_NUM_THREADS="1")
    out = tmp_path / "ddp.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "resnet",
           "finetune", "--dataset", "synthetic", "--arch", "resnet18", "--strategies", "last", "--epochs", "1",
           "--image-size", "32", "--batch-size", "16", "--json", str(out), "--save-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["world_size"] == 2 and report["backend"] == "gloo" and report["config"]["batch_size"] == 16
    (last,) = report["strategies"]
    checksums = last["rank_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert last["pretrained"] is True  # the test's checkpoint was found through RESNET_WEIGHTS_DIR
    assert last["trainable_params"] == 8_393_728 + 512 * 4 + 4  # conv5_x plus a 512 → 4 classifier
    assert 0.0 <= last["final_val_acc"] <= 1.0 and report["history"]["last"]["epoch"] == [1]
    model, meta = load_export(tmp_path / "resnet18-last.pth")  # saved once, by rank 0
    assert meta["strategy"] == "last" and model.fc.out_features == 4
    with torch.inference_mode():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)
    assert proc.stdout.count("2 processes (gloo)") == 1  # only rank 0 reports
