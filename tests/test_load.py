"""A classroom at once, on loopback: many concurrent users, a full queue, isolation between sessions.

Real server, real model (the session's test-made ResNet-18 checkpoint), bounded loops.
"""
from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from gradio_client import Client, handle_file
from PIL import Image

import corpus
import resnet
from conftest import PATIENT, ROOT, free_port
from resnet.i18n import t as say

pytestmark = pytest.mark.load


CLIENTS, REQUESTS = 20, 3  # twenty at once, each with pictures of its own, one after another


@pytest.fixture(scope="module")
def model(weights_dir):
    return resnet.load_pretrained("resnet18", path=next(weights_dir.glob("resnet18-*.pth")))


@pytest.fixture(scope="module")
def distinct_images(tmp_path_factory, photos) -> list[Path]:
    """CLIENTS × REQUESTS different small pictures: crops, flips and rotations of the real photos."""
    d = tmp_path_factory.mktemp("load_images")
    sources = [Image.open(p).convert("RGB").resize((256, 256)) for p in photos.values()]
    out = []
    for i in range(CLIENTS * REQUESTS):
        img = sources[i % len(sources)]
        k = i // len(sources)
        img = img.rotate(17 * k, expand=False).crop((k % 7, k % 5, 224 + k % 7, 224 + k % 5))
        if k % 2:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = d / f"{i:03d}.jpg"
        img.save(path, quality=92)
        out.append(path)
    return out


def confidences(result) -> dict[str, float]:
    label = result[0]
    return {c["label"]: c["confidence"] for c in label["confidences"]}


def same(a: dict[str, float], b: dict[str, float], tol: float = 1e-4) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < tol for k in a)


def close(clients) -> None:
    """End the clients' heartbeat connections (the server then treats their sessions as closed tabs)."""
    for c in clients:
        c.close()


def test_twenty_concurrent_students_each_get_their_own_right_answers(app_server, model, distinct_images):
    expected = [dict(resnet.classify(model, p, top_k=5)) for p in distinct_images]
    # The check has teeth: every picture's answer differs from every other's, so a swapped answer shows.
    for j, a in enumerate(expected):
        assert not any(same(a, b) for b in expected[j + 1:])

    with ThreadPoolExecutor(CLIENTS) as pool:
        clients = list(pool.map(lambda _: Client(app_server, verbose=False, httpx_kwargs=PATIENT), range(CLIENTS)))
    start = threading.Barrier(CLIENTS)

    def student(i: int) -> list[tuple[int, dict]]:
        start.wait()
        answers = []
        for r in range(REQUESTS):
            k = i * REQUESTS + r
            answers.append((k, confidences(clients[i].predict(handle_file(str(distinct_images[k])), "resnet18",
                                                              api_name="/classify"))))
        return answers

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [a for answers in pool.map(student, range(CLIENTS)) for a in answers]
    finally:
        close(clients)
    elapsed = time.perf_counter() - t0

    assert len(results) == CLIENTS * REQUESTS
    print(f"{CLIENTS}×{REQUESTS} /classify: {elapsed:.1f} s, {len(results) / elapsed:.1f} answers/s")
    for k, got in results:
        want = expected[k]
        assert max(got, key=got.get) == max(want, key=want.get), k
        assert same(got, want), (k, got, want)


@pytest.fixture(scope="module")
def tiny_queue_server(app_env):
    """A second app with tiny limits: a queue of one waiting request, one running at a time, 1 MB uploads."""
    from resnet.serving import ModelCache, Settings
    from resnet.ui import create_app
    settings = Settings(max_queue=1, quick_concurrency=1, max_file_mb=1, allow_download=False)
    demo, kwargs = create_app(settings, ModelCache(settings.cache_mb, allow_download=False))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **kwargs)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_a_full_queue_says_busy_try_again_instead_of_hanging(tiny_queue_server, photos):
    n = 8
    with ThreadPoolExecutor(n) as pool:
        clients = list(pool.map(lambda _: Client(tiny_queue_server, verbose=False), range(n)))
    start = threading.Barrier(n)

    def student(i: int) -> str:
        start.wait()
        try:
            result = clients[i].predict(handle_file(str(photos["lion"])), "resnet34", api_name="/classify")
            return "ok" if len(result[0]["confidences"]) == 5 else "wrong"
        except Exception as e:  # noqa: BLE001 - the message is what we check
            return str(e)

    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(n) as pool:
            outcomes = list(pool.map(student, range(n)))
    finally:
        close(clients[1:])
    elapsed = time.perf_counter() - t0
    busy = [o for o in outcomes if o != "ok"]
    assert "ok" in outcomes and busy, outcomes
    for message in busy:
        assert "full" in message.lower() and "try again" in message.lower(), message
    assert elapsed < 60, f"the flood took {elapsed:.0f} s: requests hung instead of being turned away"
    # The turned-away students simply try again, and get served.
    result = clients[0].predict(handle_file(str(photos["cheetah"])), "resnet34", api_name="/classify")
    clients[0].close()
    assert len(result[0]["confidences"]) == 5


def test_an_upload_over_the_size_setting_is_refused_by_the_server(tiny_queue_server, tmp_path, photos):
    big = b"\xff\xd8\xff\xe0" + bytes(2 * 2**20)  # 2 MB, over this server's RESNET_MAX_FILE_MB=1
    r = httpx.post(f"{tiny_queue_server}gradio_api/upload", files={"files": ("big.jpg", big, "image/jpeg")},
                   timeout=30)
    assert r.status_code == 413 and "maximum allowed size" in r.text
    path = tmp_path / "big.jpg"
    path.write_bytes(big)
    with pytest.raises(Exception, match="exceeds the maximum file size"):
        Client(tiny_queue_server, verbose=False).predict(handle_file(str(path)), "resnet18", api_name="/classify")
    label, _ = Client(tiny_queue_server, verbose=False).predict(handle_file(str(photos["bus"])), "resnet18",
                                                                 api_name="/classify")
    assert len(label["confidences"]) == 5


# ------------------------------------------------------------------ the app as its own process: fine-tuning


@dataclass
class Served:
    url: str
    proc: subprocess.Popen
    dirs: dict
    log: Path
    idle_threads: set = field(default_factory=set)  # threads that tick over even when nobody trains

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def cpu_by_thread(self, window: float) -> dict[int, float]:
        """CPU seconds each of the server's threads used during the next ``window`` seconds."""
        before = {t.id: t.user_time + t.system_time for t in self.ps.threads()}
        time.sleep(window)
        return {t.id: t.user_time + t.system_time - before.get(t.id, 0.0) for t in self.ps.threads()}

    def training_threads(self, window: float = 1.0) -> set[int]:
        """The threads doing real work now (the run and torch's pool), not the event loop ticking over."""
        return {tid for tid, cpu in self.cpu_by_thread(window).items()
                if cpu > 0.1 * window and tid not in self.idle_threads}

    def seconds_until_idle(self, threads: set[int], limit: float = 10.0, window: float = 0.25) -> float:
        """Seconds until ``threads`` together use under 5 % of a core (what was training has stopped)."""
        t = time.monotonic()
        while time.monotonic() - t < limit:
            used = self.cpu_by_thread(window)
            if sum(used.get(tid, 0.0) for tid in threads) < 0.05 * window:
                return time.monotonic() - t
        return float("inf")


@pytest.fixture(scope="module")
def served(app_env, tmp_path_factory):
    """``python app.py`` as a teacher starts it, with its own working, temporary and Gradio folders."""
    root = tmp_path_factory.mktemp("served")
    dirs = {name: root / name for name in ("cwd", "tmp", "gradio", "data")}
    for d in dirs.values():
        d.mkdir()
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1", TMPDIR=str(dirs["tmp"]),
               GRADIO_TEMP_DIR=str(dirs["gradio"]), RESNET_DATA_DIR=str(dirs["data"]), RESNET_TRAIN_CONCURRENCY="3",
               RESNET_MAX_IMAGE_PIXELS="1000000", RESNET_MODEL_CACHE_MB="150", GRADIO_ANALYTICS_ENABLED="False")
    log = root / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=dirs["cwd"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    t = time.monotonic()
    while True:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() - t < 90, "the app did not start"
        time.sleep(0.2)
    server = Served(url, proc, dirs, log)
    server.idle_threads = {tid for tid, cpu in server.cpu_by_thread(1.0).items() if cpu > 0.01}
    yield server
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def finetune_args(dataset_zip: Path | None, strategies, *, epochs=2, size=64, batch=8):
    if dataset_zip is None:
        return ("synthetic", None, strategies, "resnet18", epochs, size, batch, 0)
    return ("upload", handle_file(str(dataset_zip)), strategies, "resnet18", epochs, size, batch, 0)


SESSIONS = {  # zip name → (classes, strategies, colour family): three students, three different data sets
    "pets": (("cats", "dogs"), ["head"], 0),
    "fruit": (("apples", "pears", "plums"), ["replace"], 2),
    "bugs": (("ants", "bees", "flies", "wasps"), ["head", "replace"], 1),
}


def test_three_concurrent_finetunes_each_see_only_their_own_results(served, tmp_path, photos):
    from resnet.models.transfer import load_export
    zips = {name: corpus.dataset_zip(tmp_path / f"{name}.zip", classes, per_class=5, offset=offset)
            for name, (classes, _, offset) in SESSIONS.items()}
    clients = {name: Client(served.url, verbose=False) for name in SESSIONS}
    start = threading.Barrier(len(SESSIONS))

    def student(name: str):
        classes, strategies, _ = SESSIONS[name]
        start.wait()
        job = clients[name].submit(*finetune_args(zips[name], strategies), api_name="/finetune")
        seen = [str(out[0]) for out in job]
        return seen, job.outputs()[-1]

    with ThreadPoolExecutor(len(SESSIONS)) as pool:
        runs = dict(zip(SESSIONS, pool.map(student, SESSIONS)))

    files_seen = set()
    for name, (seen, final) in runs.items():
        classes, strategies, _ = SESSIONS[name]
        others = [n for n in SESSIONS if n != name]
        status, curves, table, files = final[:4]
        assert [r[0] for r in table["data"]] == [say(f"finetune.name_{s}", "en") for s in strategies], (name, table)
        assert curves and curves.get("type") == "matplotlib"
        text = " ".join(seen)
        assert f"{name}:" in text and not any(f"{o}:" in text for o in others), (name, text[:500])
        names = {say(f"finetune.name_{s}", "en"): s for s in ("head", "replace", "last", "all", "scratch")}
        mentioned = {names[m] for m in re.findall(r"\*\*(.+?)\*\*", text) if m in names}  # the lines name them so
        assert mentioned and mentioned <= set(strategies), (name, mentioned)
        assert len(files) == len(strategies)
        for f in files:
            model, meta = load_export(f)
            assert list(model.categories) == list(classes) and meta["strategy"] in strategies, (name, meta)
            files_seen.add(Path(f).name + str(Path(f).parent))
        label = clients[name].predict(handle_file(str(photos["cheetah"])), strategies[0], api_name="/try_finetuned")
        assert {c["label"] for c in label["confidences"]} <= set(classes), (name, label)
    close(clients.values())
    assert len(files_seen) == sum(len(s) for _, s, _ in SESSIONS.values())  # nobody got another's files


def wait_for_training(job, seconds: float = 120) -> None:
    t = time.monotonic()
    while time.monotonic() - t < seconds:
        outs = job.outputs()
        if outs and "step" in str(outs[-1][0]):
            return
        time.sleep(0.05)
    raise AssertionError(f"no training step within {seconds} s: {[str(o[0])[:80] for o in job.outputs()]}")


def test_stop_ends_a_run_within_two_seconds(served):
    client = Client(served.url, verbose=False)
    job = client.submit(*finetune_args(None, ["all"], epochs=50, size=32, batch=4), api_name="/finetune")
    wait_for_training(job)
    trainers = served.training_threads()
    assert trainers, "nothing seems to be training"
    t = time.monotonic()
    client.predict(api_name="/stop_finetune")
    while not job.done() and time.monotonic() - t < 30:
        time.sleep(0.02)
    answered = time.monotonic() - t
    stopped = answered + served.seconds_until_idle(trainers)
    client.close()
    print(f"stop: the page was answered after {answered:.2f} s, training had stopped after {stopped:.2f} s")
    assert answered < 3 and stopped < 3, (answered, stopped)


DISCONNECTING_STUDENT = r"""
import sys
from gradio_client import Client
client = Client(sys.argv[1], verbose=False)
job = client.submit("synthetic", None, ["all"], "resnet18", 50, 32, 4, 0, api_name="/finetune")
for out in job:
    if "step" in str(out[0]):
        print("training", flush=True)
"""


def test_a_student_who_closes_the_tab_frees_the_run(served):
    student = subprocess.Popen([sys.executable, "-c", DISCONNECTING_STUDENT, served.url], stdout=subprocess.PIPE,
                               text=True)
    try:
        assert student.stdout.readline().strip() == "training"
        trainers = served.training_threads()
        assert trainers, "nothing seems to be training"
    finally:
        student.kill()  # the tab closes mid-run: no Stop, the connection just drops
        student.wait()
    stopped = served.seconds_until_idle(trainers, limit=15)
    print(f"disconnect: training stopped {stopped:.2f} s after the client vanished")
    assert stopped < 5, "the abandoned run kept training"


def test_memory_comes_back_after_five_runs(served, tmp_path, photos):
    """After a first run has warmed the allocator, five more runs (each also classifying with two networks)
    leave the server's memory where it was: nothing per run stays."""
    data = corpus.dataset_zip(tmp_path / "mem.zip", per_class=5)
    client = Client(served.url, verbose=False)

    def one_run():
        out = client.predict(*finetune_args(data, ["head"], epochs=1, size=32), api_name="/finetune")
        assert [r[0] for r in out[2]["data"]] == [say("finetune.name_head", "en")]
        for arch in ("resnet18", "resnet34"):
            client.predict(handle_file(str(photos["lion"])), arch, api_name="/classify")

    one_run()
    gc_settle = 1.0
    time.sleep(gc_settle)
    start = served.rss_mb()
    rss = []
    for _ in range(5):
        one_run()
        rss.append(served.rss_mb())
    client.close()
    time.sleep(gc_settle)
    end = served.rss_mb()
    print(f"server RSS: {start:.0f} MB after a first run, then {', '.join(f'{r:.0f}' for r in rss)}; "
          f"{end:.0f} MB at the end")
    assert end - start < 200, (start, rss, end)


def test_the_model_cache_stays_within_its_budget(app_env, photos):
    """Students picking one network after another: the cache drops the least recently used to stay under
    its budget, and what it drops is really freed (nothing else keeps a reference)."""
    from resnet.serving import ModelCache
    cache = ModelCache(150, allow_download=False)  # MB: resnet18 45, resnet34 83, resnet50 98
    refs = []
    for arch in ["resnet18", "resnet34", "resnet50", "resnet18", "resnet34"]:
        entry = cache.get(arch)
        resnet.classify(entry.model, photos["lion"])
        refs.append((arch, weakref.ref(entry.model)))
        del entry
        held = list(cache._items.values())
        assert sum(e.megabytes for e in held) <= 150 or len(held) == 1, [(e.arch, e.megabytes) for e in held]
        del held
        gc.collect()
        alive = [a for a, r in refs if r() is not None]
        assert len(alive) == len(cache.cached_archs()), (alive, cache.cached_archs())
    assert cache.cached_archs() == ["resnet18", "resnet34"]


def test_hostile_uploads_write_nothing_outside_the_app_s_temporary_folders(served, tmp_path):
    """Last on this server: after everything above and a round of hostile uploads, its folders are clean."""
    client = Client(served.url, verbose=False)
    images = corpus.images(tmp_path / "images")
    for name in ("bomb_20000x20000.png", "truncated.jpg", "text.jpg", "corrupt.png"):
        with pytest.raises(Exception, match=corpus.BROKEN[name]):
            client.predict(handle_file(str(images[name])), "resnet18", api_name="/classify")
    big = tmp_path / "big.jpg"
    corpus.photo().resize((1200, 1000)).save(big)  # fine by default, over this server's RESNET_MAX_IMAGE_PIXELS
    with pytest.raises(Exception, match="over the limit of 1,000,000"):
        client.predict(handle_file(str(big)), "resnet18", api_name="/classify")
    target = tmp_path / "planted" / f"{corpus.MARKER}-absolute.png"
    zips = corpus.hostile_zips(tmp_path / "zips", abs_target=target)
    for name in ("traversal.zip", "absolute.zip", "symlink.zip", "deep.zip", "not_a_zip.zip"):
        with pytest.raises(Exception):
            client.predict(*finetune_args(zips[name], ["head"], epochs=1), api_name="/finetune")
    ok = client.predict(*finetune_args(corpus.dataset_zip(tmp_path / "ok.zip", per_class=4), ["head"], epochs=1,
                                       size=32), api_name="/finetune")
    assert [r[0] for r in ok[2]["data"]] == [say("finetune.name_head", "en")]
    client.close()

    root = served.dirs["cwd"].parent  # traversal entries climb from <root>/tmp/resnet-data-…/ upwards
    assert not target.exists() and not list(root.rglob(f"{corpus.MARKER}*"))
    assert not list(root.parent.glob(f"{corpus.MARKER}*")) and not list(Path("/tmp").glob(f"{corpus.MARKER}*"))
    assert list(served.dirs["cwd"].iterdir()) == []  # nothing written where the app was started
    t = time.monotonic()
    while time.monotonic() - t < 10:  # extraction folders go as soon as their run (or refusal) is over
        extracted = list(served.dirs["tmp"].glob("resnet-data-*"))
        if not extracted:
            break
        time.sleep(0.5)
    assert not extracted
    unexpected = [p.name for p in served.dirs["tmp"].iterdir()
                  if not p.name.startswith(("resnet-lab-run-", "torchinductor_"))]
    assert not unexpected, unexpected  # only the sessions' own run folders (and torch's compile cache)
    log = served.log.read_text()
    assert "Traceback" not in log, log[-3000:]
