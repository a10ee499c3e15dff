"""Shared fixtures: a test-made ResNet-18 checkpoint, real photos, and a launched app."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """A folder with a ResNet-18 checkpoint named as torch.hub names files, ``resnet18-<its sha256 prefix>.pth``:
    torchvision's own model, seeded random init (no real ImageNet weights can be had offline)."""
    import hashlib
    import torchvision
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), d / "tmp.pth")
    digest = hashlib.sha256((d / "tmp.pth").read_bytes()).hexdigest()
    (d / "tmp.pth").rename(d / f"resnet18-{digest[:8]}.pth")
    return d


@pytest.fixture(scope="session")
def photos() -> dict[str, Path]:
    """Real photos that ship inside the dependencies."""
    import gradio.media
    from matplotlib import cbook
    out = {name.split(".")[0]: Path(gradio.media.get_image(name)) for name in ("cheetah.jpg", "lion.jpg", "bus.png", "tower.jpg")}
    out["grace_hopper"] = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    return out


@pytest.fixture(scope="session")
def app_env(weights_dir, tmp_path_factory):
    """Environment for an offline app: our test checkpoint for resnet18, no downloads, a private hub cache."""
    env = {"RESNET_WEIGHTS_DIR": str(weights_dir), "RESNET_ALLOW_DOWNLOAD": "0",
           "TORCH_HOME": str(tmp_path_factory.mktemp("torch_home")),
           # Every simulated student of these tests comes from 127.0.0.1; the per-address share is tested on its own.
           "RESNET_JOBS_PER_ADDRESS": "64",
           # The app shares the cores among the jobs that may run at once (one thread each on 2 cores); the test
           # process runs library tests beside its servers, so it keeps torch's own default.
           "RESNET_TORCH_THREADS": str(torch.get_num_threads())}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def app_server(app_env):
    """The real app, launched in this process on a free port; yields its URL."""
    from resnet.ui import create_app
    demo, kwargs = create_app()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **kwargs)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="session")
def client(app_server):
    from gradio_client import Client
    return Client(app_server, verbose=False)
