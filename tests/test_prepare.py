"""A first Start that teaches, offline too (issue 20 §2): a server that finds no ImageNet weights and cannot download
any prepares the built-in pretraining source by itself, in the background, and says so before Start; its first Start
afterwards starts the pretrained strategies from it. With the setting off, or ImageNet weights on disk or downloadable,
it never prepares. The preparations here run the real pretraining, on a tiny recipe set through the settings
(``RESNET_PREPARE_EPOCHS``, ``RESNET_PREPARE_PER_CLASS``); the default recipe is the command's (checked here), whose
transfer margins tests/test_pretrain.py checks."""
from __future__ import annotations

import functools
import http.server
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from resnet import downloads, weights
from resnet.i18n import t as say
from resnet.train import prepare
from resnet.train.finetune import FinetuneConfig

ROOT = Path(__file__).resolve().parent.parent
TINY = {"RESNET_PREPARE_EPOCHS": "1", "RESNET_PREPARE_PER_CLASS": "4"}  # seconds of real pretraining
TAB_DEFAULT = ["all", "last", "head", "scratch"]  # the quick preset's strategies


def closed_port() -> int:
    """A loopback port nothing listens on: a weights host that refuses every connection."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """No ImageNet weights on disk, downloads allowed but the weights host unreachable, a tiny preparation recipe;
    yields the (empty) weights folder."""
    folder = tmp_path / "weights"
    env = {"RESNET_WEIGHTS_DIR": str(folder), "TORCH_HOME": str(tmp_path / "torch"), "RESNET_ALLOW_DOWNLOAD": "1",
           "RESNET_WEIGHTS_BASE_URL": f"http://127.0.0.1:{closed_port()}", "RESNET_PREPARE_SOURCE": "1",
           "RESNET_TORCH_THREADS": str(torch.get_num_threads()), **TINY}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    yield folder
    prepare.PREPARATION.stop()


@pytest.fixture
def mirror(tmp_path):
    """A weights host on loopback that answers: it serves a file under ResNet-18's official name and records the
    methods it was asked with."""
    root = tmp_path / "www"
    root.mkdir()
    (root / weights.file_name("resnet18")).write_bytes(b"not really weights")
    asked: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def send_head(self):
            asked.append(self.command)
            return super().send_head()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", asked
    httpd.shutdown()


def stored(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.pth")) if folder.is_dir() else []


# ---------------------------------------------------------------- finding out, without downloading

def test_the_probe_asks_without_downloading_and_is_remembered(offline, mirror, monkeypatch):
    base, asked = mirror
    monkeypatch.setenv("RESNET_WEIGHTS_BASE_URL", base)
    assert downloads.reachable(weights.weights_url("resnet18")) is None  # never asked yet
    assert weights.probe_imagenet("resnet18") is True
    assert asked == ["HEAD"] and not list(weights.hub_dir().glob("*"))  # asked, nothing downloaded
    assert weights.pretrained_source("resnet18") == "imagenet" and FinetuneConfig().allow_download is True

    unreachable = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("RESNET_WEIGHTS_BASE_URL", unreachable)
    assert weights.probe_imagenet("resnet18") is False
    # Remembered: the line before Start and the run itself no longer count on a download, for any depth.
    assert downloads.reachable(weights.weights_url("resnet50")) is False
    assert weights.pretrained_source("resnet18") == "random" and weights.pretrained_source("resnet50") == "random"
    assert FinetuneConfig().allow_download is False and not weights.downloads_allowed()

    monkeypatch.setenv("RESNET_WEIGHTS_BASE_URL", base)
    monkeypatch.setenv("RESNET_ALLOW_DOWNLOAD", "0")
    assert weights.probe_imagenet("resnet18") is False and asked == ["HEAD"]  # downloads off: nothing asked


def test_the_preparation_is_the_pretrain_command_s_default_recipe(monkeypatch):
    from resnet.cli import parser
    from resnet.train.pretrain import config_from_args
    for name in TINY:
        monkeypatch.delenv(name, raising=False)
    command = config_from_args(parser().parse_args(["pretrain"]))  # `python -m resnet pretrain`, its defaults
    assert prepare.recipe("resnet18") == command
    for name, value in TINY.items():
        monkeypatch.setenv(name, value)
    tiny = prepare.recipe("resnet18")
    assert (tiny.epochs, tiny.per_class) == (1, 4) and tiny.image_size == command.image_size


# ---------------------------------------------------------------- preparing, and what the page says meanwhile

@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_offline_the_source_is_prepared_in_the_background_and_the_line_follows_it(offline):
    from resnet.ui.tabs.finetune import source_line
    assert prepare.start("resnet18").state in ("checking", "preparing")
    seen = []  # (status, English line, Chinese line), as a visitor's page would show them
    deadline = time.monotonic() + 600
    while prepare.status().running and time.monotonic() < deadline:
        s = prepare.status()
        seen.append((s, source_line("resnet18", TAB_DEFAULT, True, "en"),
                     source_line("resnet18", TAB_DEFAULT, True, "zh-CN")))
        time.sleep(0.05)
    final = prepare.status()
    assert final.state == "ready", final
    # Meanwhile: progress, then a time left, and that a run started now would start from random weights.
    preparing = [(s, en, zh) for s, en, zh in seen if s.state == "preparing"]
    assert preparing and all("this server is preparing the **built-in pretraining source**" in en
                             and "starts every strategy from **random** weights" in en for _, en, _ in preparing
                             if "built-in pretraining source** (" not in en)  # the file may just have landed
    # (A status read just before the run ended may be paired with the line read just after it: those are skipped.)
    timed = [(s, en, zh) for s, en, zh in preparing if s.seconds_left is not None and "is preparing" in en]
    assert timed, [s for s, _, _ in seen]
    s, en, zh = timed[-1]
    assert re.search(r"\d+% done, about .+ left\.", en), en  # the line reads the status again: its own figure
    assert "正在后台自行准备**内置预训练任务的权重**" in zh and "约还需" in zh
    fractions = [s.fraction for s, _, _ in preparing]
    assert fractions == sorted(fractions) and 0 <= fractions[0] < 1
    # Stored where fine-tuning finds it; from now on the line names it.
    assert stored(offline) == [final.file] == [weights.find_source("resnet18").name]
    assert weights.pretrained_source("resnet18") == "builtin-source"
    assert "start from the **built-in pretraining source**" in source_line("resnet18", TAB_DEFAULT, True, "en")
    prepare.start("resnet18")  # a server started again
    assert prepare.PREPARATION.wait(60).state == "not-needed"
    assert prepare.status().reason == "stored" and stored(offline) == [final.file]  # never prepared twice


@pytest.mark.parametrize("case", ["setting off", "weights on disk", "weights downloadable"])
def test_a_server_that_need_not_or_may_not_prepare_never_does(case, offline, weights_dir, mirror, monkeypatch):
    from resnet.ui import create_app
    from resnet.ui.tabs.finetune import source_line
    base, asked = mirror
    if case == "setting off":
        monkeypatch.setenv("RESNET_PREPARE_SOURCE", "0")
    elif case == "weights on disk":
        monkeypatch.setenv("RESNET_WEIGHTS_DIR", str(weights_dir))  # a ResNet-18 checkpoint, hash-named
    else:
        monkeypatch.setenv("RESNET_WEIGHTS_BASE_URL", base)
    create_app()  # the server's start-up: it finds out in the background
    final = prepare.PREPARATION.wait(120)
    assert final.arch == "resnet18" and final.state == ("off" if case == "setting off" else "not-needed"), final
    line = source_line("resnet18", TAB_DEFAULT, True, "en")
    if case == "setting off":  # said plainly: random, and how to prepare the source by hand
        assert "Starting weights: random." in line and stored(offline) == []
    else:
        assert final.reason == "imagenet" and "start from **ImageNet** weights" in line
        assert asked == (["HEAD"] if case == "weights downloadable" else [])  # nothing downloaded to find out
        assert not list(offline.glob("*-source-*.pth")) and not list(weights.hub_dir().glob("*"))


# ---------------------------------------------------------------- the launched server

@pytest.mark.served
@pytest.mark.timeout(900)
def test_a_server_that_cannot_reach_the_weights_host_prepares_the_source_and_its_first_start_uses_it(tmp_path):
    """``python app.py`` on a machine where the weights host refuses connections: the line before Start says there
    are no ImageNet weights and the server prepares the built-in source (its progress while it does), then names it;
    the first Start's pretrained strategies start from it."""
    from gradio_client import Client
    from conftest import free_port, wait_for_app
    folder = tmp_path / "weights"
    port = free_port()
    env = {**os.environ, "RESNET_WEIGHTS_DIR": str(folder), "TORCH_HOME": str(tmp_path / "torch"),
           "RESNET_ALLOW_DOWNLOAD": "1", "RESNET_WEIGHTS_BASE_URL": f"http://127.0.0.1:{closed_port()}",
           "RESNET_DATA_DIR": str(tmp_path / "data"), "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
           "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONPATH": str(ROOT), **TINY}
    env.pop("RESNET_PREPARE_SOURCE", None)  # the default: on
    log = tmp_path / "app.log"
    server = subprocess.Popen([sys.executable, "app.py"], env=env, cwd=ROOT, stdout=open(log, "wb"),
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_app(url, server, log)
        client = Client(url, verbose=False)
        lines = []
        deadline = time.monotonic() + 600
        while not lines or "start from the **built-in pretraining source**" not in lines[-1]:
            assert time.monotonic() < deadline, lines[-3:]
            lines.append(client.predict("resnet18", TAB_DEFAULT, api_name="/finetune_source"))
            time.sleep(0.5)
        # Before it was ready, each line said what a run would start from then, or how far the preparation was.
        for line in lines[:-1]:
            assert "finding out whether ImageNet weights" in line or (
                "none can be downloaded, so this server is preparing the **built-in pretraining source**" in line
                and "% done" in line), line
        assert "no ImageNet weights for ResNet-18 here" in lines[-1]
        zh = Client(url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
        assert "内置预训练任务的权重" in zh.predict("resnet18", TAB_DEFAULT, api_name="/finetune_source")
        backbone = [p.name for p in folder.glob("resnet18-source-*.pth")]
        assert len(backbone) == 1 and not [p for p in folder.glob("*.pth") if "-source-" not in p.name]
        # The first Start: the pretrained strategy starts from the built-in source, the control from random weights.
        status, _, table = client.predict("synthetic", None, ["head", "scratch"], "resnet18", 1, 48, 10, 0, "5",
                                          api_name="/finetune")[:3]
        rows = {r[0]: r[1] for r in table["data"]}
        assert rows == {say("finetune.name_head", "en"): "built-in source",
                        say("finetune.name_scratch", "en"): "random"}, table
        assert "started from **the built-in pretraining source**" in status and "rl-warn" not in status, status
        assert "cannot be downloaded from here" in log.read_text(errors="replace")  # the operator's log says why
    finally:
        server.terminate()
        server.wait(30)
