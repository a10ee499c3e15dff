"""Shared fixtures: a test-made ResNet-18 checkpoint, real photos, and a launched app; the tiers.

Tiers (markers registered in pyproject.toml): ``unit`` (library level, the fast tier: ``python -m pytest -m unit``),
``slow`` (library level, but trains for minutes), ``served`` (a launched Gradio server), ``browser`` (Chromium
through Playwright), ``load`` (many clients at once).
A module states its tier with ``pytestmark``; in a module that mixes tiers, a test without a tier of its own gets
one from its fixtures (see ``pytest_collection_modifyitems``).

The suite runs in two worker processes (pytest-xdist: ``-n 2 --dist loadgroup`` in pyproject.toml; ``-n 0`` runs it in
this process alone). Each test file is one unit of work, the longest files first; each worker has its own temporary
folder, its own launched app and one torch thread."""
from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

# Torch's OpenMP threads sleep as soon as they wait instead of spinning. With other processes on the cores (a shared
# 2-core machine, or tests beside their own servers) spinning made small training steps 10-30x slower: a tiny
# fine-tune test took over 150 s instead of ~18 s at a load of 4. Read when torch loads, so set before its first
# import; subprocesses (the CLI, torchrun, app.py) inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# One torch thread per test process: the suite runs in two processes at once (pytest-xdist, ``-n 2`` in
# pyproject.toml), one per core. A second thread in each would only oversubscribe the cores, and it barely helps
# the small models the tests train even alone: the race at its defaults took 30 s on one thread and 47 s on two,
# the short fine-tune test 29 s and 27 s (41 and 47 CPU-seconds). On a 2-core machine the app itself gives each of
# its jobs one thread (``Settings.torch_threads``), so the served tests run as a class's server would.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Under pytest-xdist each worker gets a temporary folder of its own (inherited by the servers and command lines it
# starts): tests that check what a run left behind in the temporary folder (extracted zips, Gradio's uploads) then
# see their own worker's files only.
# Set once per worker: tests that import from conftest import it a second time. The name stays short, because
# Chromium's socket path inside it must fit 108 characters.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
# The goal test's pretraining (one process, one thread, about 620 CPU-seconds) is the longest chain of work in the
# suite, so the workers step back for it, once each, with the folder: a lower priority, inherited by their servers and
# command lines (Chromium sets its own, and where the kernel groups processes by session, the pretraining's session
# competes as a group).
if WORKER and "RESNET_TEST_WORKER_TMP" not in os.environ:
    os.environ["TMPDIR"] = os.environ["RESNET_TEST_WORKER_TMP"] = tempfile.mkdtemp(prefix=f"rl-{WORKER}-")
    tempfile.tempdir = None  # read TMPDIR again
    os.nice(10)
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TIERS = ("unit", "slow", "served", "browser", "load")
# Fixtures that launch the app: a test using one (directly or through ``client``) is never ``unit``.
SERVER_FIXTURES = {"app_server"}
# Browser tests in modules of another tier, named until their module marks them ``@pytest.mark.browser`` itself.
BROWSER_TESTS = {"test_robustness.py::test_a_broken_upload_shows_a_sentence_on_the_page"}


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config, items):
    """Give every test exactly the tier it needs: its own or its module's mark, else one read from its fixtures
    (``browser`` → browser, ``app_server``/``client`` → served, none of these → unit)."""
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        fixtures = set(getattr(item, "fixturenames", ()))
        uses_server = bool(SERVER_FIXTURES & fixtures)
        if not tiers:
            if "browser" in fixtures or f"{item.path.name}::{getattr(item, 'originalname', item.name)}" in BROWSER_TESTS:
                tier = "browser"
            else:
                tier = "served" if uses_server else "unit"
            item.add_marker(tier)
        elif len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid} is marked with several tiers ({', '.join(sorted(tiers))}): "
                                    "one test, one tier")
        elif tiers == {"unit"} and uses_server:
            raise pytest.UsageError(f"{item.nodeid} launches the app (fixture app_server or client) but is marked "
                                    "unit: mark it served (pytest.mark.served), or its module if all its tests are")
        if WORKER:  # pytest-xdist's loadgroup: a file is one unit of work; the goal test is one of its own
            item.add_marker(pytest.mark.xdist_group(name="goal" if is_goal(item) else item.path.name))


# The transfer-goal test (tests/test_pretrain.py) needs a backbone pretrained with the library's own recipe: minutes of
# work (about 600 CPU-seconds). ``python -m resnet pretrain`` makes it in a process of its own, started as soon as the
# test is collected (by pytest-xdist's controller when the suite runs in workers), while the other tests run; the
# test itself waits for the process's exit status, which lands in a file so that any worker can read it.
GOAL_TEST = "test_with_the_source_backbone_head_and_last_beat_scratch_by_15_points"
SOURCE_DIR = "RESNET_TEST_SOURCE_DIR"  # the controller's pretraining folder, for its workers
# Files that each take a minute or more of the suite (``--durations``), handed out first so that the two workers
# start on them and end together; every file is one unit of work (its module's server and browser start once), and
# the goal test one of its own.
LONG_FILES = ("test_lesson_app.py", "test_labs.py", "test_load.py", "test_fairshare.py", "test_finetune.py",
              "test_screens.py", "test_sharing.py", "test_classroom_app.py", "test_safety.py", "test_budget.py",
              "test_browser.py")
# Runs the command in its arguments, then writes its exit status whole (a reader never sees a half-written file).
_STATUS = ("import os, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
           "open(sys.argv[1] + '.part', 'w').write(str(rc)); os.replace(sys.argv[1] + '.part', sys.argv[1])")


def is_goal(item) -> bool:
    return getattr(item, "originalname", item.name) == GOAL_TEST


def start_pretraining(folder: Path):
    """ResNet-18 pretrained at the library's defaults into ``folder``, on one thread (the tests use the other cores:
    a second thread here only made three processes share two cores); its exit status is written to
    ``folder/status``."""
    import subprocess
    import sys
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RESNET_ALLOW_DOWNLOAD": "0",
           "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", _STATUS, str(folder / "status"),
                             sys.executable, "-m", "resnet", "pretrain", "--arch", "resnet18", "--out", str(folder),
                             "--json", str(folder / "result.json")], env=env, cwd=ROOT, start_new_session=True,
                            stdout=open(folder / "pretrain.log", "wb"), stderr=subprocess.STDOUT)


def stop_pretraining(config) -> None:
    """Kill the pretraining if it still runs (the status wrapper and the command with it), and remove its folder."""
    import shutil
    import signal
    proc, folder = getattr(config, "pretraining", (None, None))
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def pretraining_folder(config) -> Path | None:
    """Where this run's pretraining writes: started by this process, or by pytest-xdist's controller."""
    own = getattr(config, "pretraining", (None, None))[1]
    return own or (Path(os.environ[SOURCE_DIR]) if SOURCE_DIR in os.environ else None)


def pytest_configure(config):
    if getattr(config.option, "dist", "no") != "no" and not hasattr(config, "workerinput"):  # xdist's controller
        folder = Path(tempfile.mkdtemp(prefix="source_backbone_"))
        os.environ[SOURCE_DIR] = str(folder)  # the workers it starts inherit it
        config.pretraining = (None, folder)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """The controller starts the pretraining once, when a worker has collected the goal test."""
    proc, folder = node.config.pretraining
    if proc is None and any(GOAL_TEST in i for i in ids) and not node.config.option.collectonly:
        node.config.pretraining = (start_pretraining(folder), folder)


@pytest.hookimpl(tryfirst=True)  # before the terminal lists the items, and before a worker sends them
def pytest_collection_finish(session):
    def order(item) -> int:
        """One process: the files' own order, the goal test last (it waits for the pretraining). Workers: the long
        files first, then the goal test (a worker waiting for the pretraining leaves its core to the pretraining
        and to the other worker, so it need not wait for the end), then the rest."""
        if is_goal(item):
            return len(LONG_FILES) if WORKER else len(LONG_FILES) + 2
        if WORKER and item.path.name in LONG_FILES:
            return LONG_FILES.index(item.path.name)
        return len(LONG_FILES) + 1
    session.items.sort(key=order)  # stable: within a file, its own order
    if any(is_goal(item) for item in session.items) and WORKER is None and not session.config.option.collectonly \
            and getattr(session.config.option, "dist", "no") == "no":
        folder = Path(tempfile.mkdtemp(prefix="source_backbone_"))
        session.config.pretraining = (start_pretraining(folder), folder)


def pytest_sessionfinish(session):
    stop_pretraining(session.config)
    if WORKER:
        import shutil
        shutil.rmtree(os.environ["RESNET_TEST_WORKER_TMP"], ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_app(url: str, process, log: Path, timeout: float = 300) -> None:
    """Return once ``GET url`` answers 200 from the app ``process`` started; fail with the tail of its ``log`` if it
    exits first or does not answer within ``timeout`` seconds (a hang bound: a busy machine imports torch slowly)."""
    import time
    import urllib.request
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, f"the app exited:\n{log.read_text(errors='replace')[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"no answer from {url} in {timeout:.0f} s:\n" \
                                            f"{log.read_text(errors='replace')[-3000:]}"
        time.sleep(0.3)


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


# Like a browser: a busy machine may take longer than httpx's default 5 s to answer one of many requests at once.
PATIENT = {"timeout": 120}


@pytest.fixture(scope="session")
def client(app_server):
    from gradio_client import Client
    return Client(app_server, verbose=False, httpx_kwargs=PATIENT)
