"""A hostile visitor on a public Space, attacking the launched server over raw HTTP and through gradio_client:
only uploaded files are ever opened, no URL is fetched, a fair share of the queue per visitor, bounded disk,
downloads that cannot hang, and nothing of the server in a message."""
from __future__ import annotations

import functools
import http.server
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

import resnet
from resnet import config, downloads
from resnet.serving import ModelCache
from resnet.ui import disk
from resnet.ui.uploads import upload_root

REFUSAL = "This request names a file that was not uploaded through this page"
TAG = {"_type": "gradio.FileData"}


class Hits(http.server.SimpleHTTPRequestHandler):
    """Serves a folder and counts every request: a URL payload must never make the server fetch."""
    count = 0

    def do_GET(self):
        type(self).count += 1
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web(tmp_path_factory, photos):
    root = tmp_path_factory.mktemp("www")
    (root / "lion.jpg").write_bytes(photos["lion"].read_bytes())
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Hits, directory=str(root)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def post(base: str, api: str, data, headers=None) -> httpx.Response:
    return httpx.post(f"{base}gradio_api/call/{api}", json={"data": data}, timeout=60,
                      headers={"content-type": "application/json", **(headers or {})})


def endpoint_calls(fd):
    """Every endpoint that takes a file or an image, with ``fd`` where the file goes (``api#input`` for each further
    file input of an endpoint: a student's checkpoint and its class-index file)."""
    return {"classify": [fd, "resnet18"], "feature_maps": [fd, "resnet18", "conv2_x", 8, "top class"],
            "classify#checkpoint": [None, "resnet18", fd, None], "classify#class_indices": [None, "resnet18", None, fd],
            "feature_maps#checkpoint": [None, "resnet18", "conv2_x", 8, "top class", fd, None],
            "feature_maps#class_indices": [None, "resnet18", "conv2_x", 8, "top class", None, fd],
            "bn_lab": [fd, "bn1", 0, 16], "try_finetuned": [fd, "head"],
            "finetune": ["upload", fd, ["head"], "resnet18", 1, 64, 16, 0, "all"]}


@pytest.fixture
def server_files(tmp_path, photos):
    """Files the server process could read: a photo, a FIFO (opening it would hang the request), a link to
    the photo inside the upload folder, and a name that does not exist."""
    photo = tmp_path / "server-side.jpg"
    photo.write_bytes(photos["lion"].read_bytes())
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    links = Path(upload_root()) / f"attack-{os.getpid()}-{tmp_path.name}"
    links.mkdir(parents=True)
    (links / "link.jpg").symlink_to(photo)
    yield {"photo": photo, "fifo": fifo, "link": links / "link.jpg", "missing": tmp_path / "missing.jpg"}
    (links / "link.jpg").unlink()
    links.rmdir()


def test_only_uploaded_files_are_opened_on_every_file_endpoint(app_server, server_files, web):
    Hits.count = 0
    url = f"{web}/lion.jpg"
    payloads = {
        "untagged dict": {"path": str(server_files["photo"])},
        "tagged, outside the upload folder": {"path": str(server_files["photo"]), "meta": TAG},
        "tagged, missing": {"path": str(server_files["missing"]), "meta": TAG},
        "tagged FIFO": {"path": str(server_files["fifo"]), "meta": TAG},
        "relative": {"path": "server-side.jpg", "meta": TAG},
        "dot-dot": {"path": f"{upload_root()}/../../{server_files['photo']}", "meta": TAG},
        "symlink in the upload folder": {"path": str(server_files["link"]), "meta": TAG},
        "URL": {"path": url, "url": url, "meta": TAG},
        "plain string": str(server_files["photo"]),
    }
    for api, _ in endpoint_calls(None).items():
        answers = {}
        for name, fd in payloads.items():
            t0 = time.perf_counter()
            r = post(app_server, api.split("#")[0], endpoint_calls(fd)[api])
            answers[name] = (r.status_code, r.text)
            assert r.status_code == 422 and REFUSAL in r.text, (api, name, r.status_code, r.text[:300])
            assert time.perf_counter() - t0 < 10, (api, name)  # a hang bound: opening the FIFO would block forever
        # The refusal cannot be used to probe the disk: the same answer for an existing and a missing file.
        assert answers["tagged, outside the upload folder"] == answers["tagged, missing"] == answers["relative"]
        assert str(server_files["photo"]) not in answers["tagged, outside the upload folder"][1]
    assert Hits.count == 0  # no URL was fetched on a visitor's behalf


def test_the_same_refusal_reaches_gradio_client_and_the_queue(app_server, server_files, web):
    client = Client(app_server, verbose=False)
    try:
        for fd in ({"path": str(server_files["photo"])}, handle_file(f"{web}/lion.jpg")):
            with pytest.raises(Exception) as e:
                client.predict(fd, "resnet18", api_name="/classify")
            assert REFUSAL in str(e.value) and "Traceback" not in str(e.value)
        # Raw queue/join, as the page itself sends it, in Chinese.
        fn_index = next(d["id"] for d in httpx.get(f"{app_server}config", timeout=30).json()["dependencies"]
                        if d.get("api_name") == "classify")
        r = httpx.post(f"{app_server}gradio_api/queue/join", timeout=30, headers={"accept-language": "zh-CN"},
                       json={"data": [{"path": str(server_files["photo"]), "meta": TAG}, "resnet18"],
                             "fn_index": fn_index, "session_hash": "probe", "event_data": None, "trigger_id": None})
        assert r.status_code == 422 and "不是通过本页面上传的" in r.text
        assert Hits.count == 0
        # A real upload still works, through the same check.
        label, _ = client.predict(handle_file(str(server_files["photo"])), "resnet18", api_name="/classify")
        assert len(label["confidences"]) == 5
    finally:
        client.close()


@pytest.mark.timeout(900)  # training races one after another: minutes on a busy 2-core machine
def test_a_visitor_holds_at_most_two_jobs_and_cannot_starve_the_layer_table(app_server, photos):
    # The default shares: two jobs per open page, two for all the page-less requests of an address together.
    greedy, neighbour, student = (Client(app_server, verbose=False) for _ in range(3))
    calls = []
    try:
        # Three distinct jobs (identical ones would share one run, which counts a quarter: see test_fairshare.py).
        # The longest races there are (about a minute each on a fast laptop): they hold the train slot while the
        # cheap requests below are answered, then the test cancels them. One runs at a time; the second waits.
        jobs = [greedy.submit(steps, 8, 0.05, api_name="/training_race") for steps in (600, 590, 580)]
        refused = []
        for job in jobs:  # the three joins race each other: whichever came third is refused
            try:
                job.result(timeout=1)
            except TimeoutError:
                pass
            except Exception as e:
                refused.append(str(e))
        assert len(refused) == 1 and "You already have 2 jobs queued or running" in refused[0], refused
        jobs = [job for job in jobs if not job.done()]
        # Raw HTTP from the same address: /call makes a new session each time, with no page open: those requests
        # share one pot of two. (Step counts no other test uses: a run another test left in the replay cache would
        # be a subscription, which costs a quarter.)
        calls += [post(app_server, "training_race", [steps, 8, 0.05]) for steps in (13, 14)]
        assert [r.status_code for r in calls] == [200, 200]
        r = post(app_server, "training_race", [27, 8, 0.05])
        assert r.status_code == 422 and "without an open page already hold 2 jobs" in r.text
        # The page's neighbour (another page on the same address) still has its own share.
        label, _ = neighbour.predict(handle_file(str(photos["lion"])), "resnet18", api_name="/classify")
        assert len(label["confidences"]) == 5
        # Everyone else's cheap request is answered while the training jobs hold the queue.
        rows, summary, _ = student.predict("resnet50", 224, "v1", api_name="/layer_table")
        assert "ResNet-50" in summary
        assert len(jobs) == 2 and not any(job.done() for job in jobs), "the jobs ended before the cheap requests"
        for job in jobs:
            job.cancel()  # gradio_client waits for the server's answer: both events are over then
        # Once they are gone, the greedy visitor may start again.
        assert "Finished" in greedy.predict(10, 8, 0.05, api_name="/training_race")[1]
        assert neighbour.predict("resnet18", 64, "v1", api_name="/layer_table")
    finally:
        for c in (greedy, neighbour, student):
            c.close()
        for r in calls:  # the page-less runs to their end, so that no later test finds the address's pot taken
            if r.status_code == 200:
                httpx.get(f"{app_server}gradio_api/call/training_race/{r.json()['event_id']}", timeout=600).read()


def test_quick_jobs_share_one_limit_and_cheap_ones_none(app_env):
    from resnet.ui import create_app
    demo, _ = create_app()
    groups = {}
    for fn in demo.fns.values():
        if fn.queue and fn.api_name:
            groups.setdefault(fn.concurrency_id, set()).add(fn.api_name)
    assert {"classify", "feature_maps", "bn_lab", "group_conv", "gradient_flow", "try_finetuned"} <= groups["quick"]
    assert {"finetune", "training_race", "deep_network"} <= groups["train"]
    limits = {fn.concurrency_limit for fn in demo.fns.values() if fn.concurrency_id == "quick"}
    assert limits == {config.get("RESNET_QUICK_CONCURRENCY")}
    assert all(fn.concurrency_limit is None for fn in demo.fns.values() if fn.api_name == "layer_table")


def test_a_session_keeps_only_its_latest_run(app_server):
    runs = Path(upload_root()) / disk.RUNS
    before = set(runs.iterdir()) if runs.is_dir() else set()
    client = Client(app_server, verbose=False)
    try:
        args = ["synthetic", None, ["head"], "resnet18", 1, 32, 16, 0]
        client.predict(*args, api_name="/finetune")
        first = set(runs.iterdir()) - before
        assert len(first) == 1 and any(next(iter(first)).glob("*.pth"))
        client.predict(*args, api_name="/finetune")
        second = set(runs.iterdir()) - before
        assert len(second) == 1 and not (first & second)
        assert not any(p.exists() for p in first)  # the first run's checkpoints are gone, with their folder
    finally:
        client.close()


def test_the_disk_budget_removes_the_oldest_uploads_and_runs_first(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    root = Path(upload_root())
    (root / "example").mkdir(parents=True)
    (root / "example" / "cheetah.jpg").write_bytes(b"x" * 100_000)
    monkeypatch.setattr(disk, "_protected", set())
    disk.protect_existing()  # the app's own copies
    folders = []
    for i in range(4):
        folder = disk.run_folder() if i % 2 else root / f"upload{i}"
        folder.mkdir(exist_ok=True)
        (folder / "file.bin").write_bytes(b"x" * 300_000)
        stamp = time.time() - 3600 + i * 60
        os.utime(folder, (stamp, stamp))
        folders.append(folder)
    fresh = root / "fresh"
    fresh.mkdir()
    (fresh / "upload.bin").write_bytes(b"x" * 300_000)
    monkeypatch.setenv("RESNET_DISK_BUDGET_MB", "1")  # 1 MiB: 1.6 MB now, so the two oldest must go
    removed = disk.enforce_budget()
    assert removed == 2 * 300_000
    assert [f.exists() for f in folders] == [False, False, True, True]  # oldest first
    assert fresh.exists() and (root / "example").exists()  # younger than a minute; the app's own


@pytest.fixture
def silent_server():
    """Accepts connections and never answers: a download from it must time out, not hang."""
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()


def test_downloads_time_out_and_back_off(silent_server, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_DOWNLOAD_TIMEOUT_S", "1")
    monkeypatch.setenv("RESNET_DOWNLOAD_RETRY_S", "30")
    url = f"{silent_server}/weights.pth"
    t0 = time.perf_counter()
    with pytest.raises(downloads.DownloadFailed) as e:
        downloads.fetch(url, tmp_path / "w.pth", max_bytes=1 << 20)
    assert time.perf_counter() - t0 < 10 and "127.0.0.1" not in str(e.value)  # a hang bound: the server never answers
    with pytest.raises(downloads.DownloadFailed, match="next one is allowed"):  # backed off: not tried again now
        downloads.fetch(url, tmp_path / "w.pth", max_bytes=1 << 20)
    assert 0 < downloads.retry_in(url) <= 30
    monkeypatch.setenv("RESNET_DOWNLOAD_RETRY_S", "0")  # the back-off passed: tried again
    assert downloads.retry_in(url) == 0
    with pytest.raises(downloads.DownloadFailed, match="failed"):
        downloads.fetch(url, tmp_path / "w.pth", max_bytes=1 << 20)
    with pytest.raises(downloads.DownloadFailed, match="https"):
        downloads.fetch("http://example.com/w.pth", tmp_path / "w.pth", max_bytes=1 << 20)


def test_a_request_never_waits_on_a_weights_download(silent_server, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("RESNET_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("RESNET_WEIGHTS_BASE_URL", silent_server)
    monkeypatch.setenv("RESNET_DOWNLOAD_TIMEOUT_S", "3")
    cache = ModelCache(allow_download=True)
    entry = cache.get("resnet18")
    again = cache.get("resnet18")  # while the download hangs in the background
    assert cache._fetching["resnet18"].is_alive()  # answered without waiting for the download to time out
    assert not entry.pretrained and again is entry and "being downloaded" in entry.source
    thread = cache._fetching["resnet18"]
    thread.join(timeout=30)
    assert not thread.is_alive()  # the hung download timed out on its own
    assert downloads.retry_in(resnet.weights.weights_url("resnet18")) > 0  # and will be tried again later


def test_settings_are_parsed_tolerantly(monkeypatch, caplog):
    monkeypatch.setenv("RESNET_QUICK_CONCURRENCY", "lots")
    monkeypatch.setenv("RESNET_MAX_FILE_MB", "-5")
    monkeypatch.setenv("RESNET_ALLOW_DOWNLOAD", "maybe")
    monkeypatch.setenv("RESNET_DEFAULT_ARCH", "resnet9000")
    assert config.get("RESNET_QUICK_CONCURRENCY") == 4 and config.get("RESNET_MAX_FILE_MB") == 100
    assert config.get("RESNET_ALLOW_DOWNLOAD") is True
    assert resnet.serving.Settings().default_arch == "resnet18"
    assert "RESNET_QUICK_CONCURRENCY" in caplog.text and "RESNET_DEFAULT_ARCH" in caplog.text
    monkeypatch.setenv("RESNET_MAX_FILE_MB", "7.0")
    assert config.get("RESNET_MAX_FILE_MB") == 7


def test_settings_are_read_in_one_place_and_documented():
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text()
    for name in config.SETTINGS:
        assert f"`{name}`" in readme, name
    for source in (root / "resnet").rglob("*.py"):
        if source.name != "config.py":
            text = source.read_text()
            assert 'environ.get("RESNET_' not in text and 'environ["RESNET_' not in text, source


def test_messages_never_name_a_server_path(app_server, app_env, photos, tmp_path):
    client = Client(app_server, verbose=False)
    try:
        _, info = client.predict(handle_file(str(photos["lion"])), "resnet50", api_name="/classify")
        assert "random weights" in info  # no resnet50 weights on this server, and it says so
        broken = tmp_path / "broken.jpg"
        broken.write_bytes(photos["lion"].read_bytes()[:2000])
        with pytest.raises(Exception) as e:
            client.predict(handle_file(str(broken)), "resnet18", api_name="/classify")
        for text in (info, str(e.value)):
            for secret in (app_env["TORCH_HOME"], app_env["RESNET_WEIGHTS_DIR"], upload_root(), "/tmp", "Errno",
                           ".cache", "Traceback"):
                assert secret not in text, (secret, text)
    finally:
        client.close()


@pytest.mark.parametrize("arch", list(resnet.ARCHS))
def test_a_finetune_over_the_budget_is_refused_before_it_queues(app_server, monkeypatch, arch):
    """Every arch at the largest size, batch and epochs the API takes, on a 16 GB server: refused at once, by
    the join request itself (so no job ran: no data set, no weights), with a setting that fits."""
    monkeypatch.setenv("RESNET_MEMORY_BUDGET_MB", "16000")
    t0 = time.perf_counter()
    r = post(app_server, "finetune", ["synthetic", None, ["all", "last", "head", "replace", "scratch"], arch, 100,
                                      512, 256, 0, "all"])
    seconds = time.perf_counter() - t0
    assert r.status_code == 422 and "over this server's" in r.text, r.text[:400]
    assert "fits" in r.text or "brings it under this limit" in r.text, r.text[:400]
    assert seconds < 30, seconds  # a hang bound (it takes 0.05–0.5 s); the 422 says the join refused it, no job ran


def test_every_lab_over_the_budget_is_refused_before_it_queues(app_server, monkeypatch, photos):
    monkeypatch.setenv("RESNET_MEMORY_BUDGET_MB", "20")  # a tiny server: the labs' largest settings are over
    monkeypatch.setenv("RESNET_WORK_BUDGET_TMACS", "0.001")
    calls = {"gradient_flow": [["cifar110", "resnet34", "cifar20"], ["none", "bn"], 64],
             "training_race": [600, 64, 0.05], "deep_network": [4, "bn"]}
    for api, data in calls.items():
        r = post(app_server, api, data)  # 422: refused by the join request itself, so it never queued
        assert r.status_code == 422 and "over this server's" in r.text, (api, r.text[:300])
    client = Client(app_server, verbose=False)  # the BatchNorm lab takes an upload
    try:
        with pytest.raises(Exception, match="over this server's"):
            client.predict(handle_file(str(photos["lion"])), "bn1", 0, 128, api_name="/bn_lab")
    finally:
        client.close()
