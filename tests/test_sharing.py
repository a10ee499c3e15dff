"""A class pressing Start together (issue 14 §1): on the real launched app, sessions asking for the same job share one
run (the registry's own count, ``resnet.train.jobs.JOBS.runs``, says the engine ran once), one of them stopping does
not stop the others, and a job asked for again once finished is replayed, marked as such, equal to the original.
The same for a lab (the training race)."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from gradio_client import Client

from resnet.i18n import t as say
from resnet.models.transfer import load_export
from resnet.train.jobs import JOBS
from resnet.ui.tabs import finetune as finetune_tab
from resnet.ui.tabs import labs as labs_tab

pytestmark = pytest.mark.served

# Small, and unlike other tests' settings, so that no earlier test has left this job in the replay cache.
SHARED = ["synthetic", None, ["head", "all"], "resnet18", 2, 48, 12, 0, "10"]  # 10 per class: 40 to train
STOPPED = ["synthetic", None, ["all"], "resnet18", 3, 32, 6, 0, "all"]
RACE = [20, 8, 0.07]


def together(url: str, n: int, work) -> list:
    """``work(client, i)`` for ``n`` sessions released at the same moment; their results in order."""
    clients = [Client(url, verbose=False, download_files=False) for _ in range(n)]  # files: the server's paths
    gate = threading.Barrier(n)

    def one(i):
        gate.wait()
        return work(clients[i], i)
    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(one, range(n)))
    finally:
        for c in clients:
            c.close()


def served(files) -> list[str]:
    """The server's paths of a File output's files."""
    return [f["path"] if isinstance(f, dict) else f for f in files]


def weights(path: str) -> dict:
    model, _ = load_export(path)
    return model.state_dict()


def same_weights(a: str, b: str) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_three_sessions_share_one_finetune_and_a_later_one_gets_a_replay(app_server):
    key = finetune_tab.start_key(*SHARED, None, "en")
    runs, shared = JOBS.runs[key], JOBS.counts["attached"] + JOBS.counts["replayed"]
    finals = together(app_server, 3, lambda c, i: c.predict(*SHARED, api_name="/finetune"))
    assert JOBS.runs[key] == runs + 1, "the engine ran more than once for one job"
    assert JOBS.counts["attached"] + JOBS.counts["replayed"] == shared + 2
    statuses, curves, tables, files = zip(*[f[:4] for f in finals])
    assert all("Done in" in s for s in statuses), statuses
    assert [r[0] for r in tables[0]["data"]] == [say("finetune.name_head", "en"), say("finetune.name_all", "en")]
    assert tables[0] == tables[1] == tables[2]  # identical histories: accuracies, losses, timings
    assert curves[0] == curves[1] == curves[2] and curves[0]["type"] == "matplotlib"
    # Each session has its own download files on the server, with the same trained weights.
    paths = [sorted(served(f)) for f in files]
    assert len({p for f in paths for p in f}) == 6
    for i in (1, 2):
        assert all(same_weights(a, b) for a, b in zip(paths[0], paths[i]))
    # Asked again once finished: replayed, marked, equal to the original; the engine did not run again.
    client = Client(app_server, verbose=False, download_files=False)
    try:
        status, curve, table, again = client.predict(*SHARED, api_name="/finetune")[:4]
        again = served(again)
    finally:
        client.close()
    assert "Replayed" in status and "Done in" in status, status
    assert table == tables[0] and curve == curves[0] and JOBS.runs[key] == runs + 1
    assert not set(again) & {p for f in paths for p in f}
    assert all(same_weights(a, b) for a, b in zip(sorted(again), paths[0]))


def test_one_session_stopping_does_not_stop_the_others(app_server):
    key = finetune_tab.start_key(*STOPPED, None, "en")
    runs = JOBS.runs[key]
    training = threading.Barrier(3)

    def student(client, i):
        job = client.submit(*STOPPED, api_name="/finetune")
        t = time.monotonic()
        while not any("step" in str(out[0]) for out in job.outputs()):
            assert time.monotonic() - t < 300, "no training step"
            time.sleep(0.1)
        training.wait(300)  # all three are watching the same run train
        if i == 0:
            assert "Stopped" in client.predict(api_name="/stop_finetune")
        return job.result(timeout=600)

    finals = together(app_server, 3, student)
    assert "Stopped" in finals[0][0]
    for status, _, table, files in (f[:4] for f in finals[1:]):
        assert "Done in" in status and [r[0] for r in table["data"]] == [say("finetune.name_all", "en")] \
            and len(files) == 1, status
    assert finals[1][2] == finals[2][2]
    assert JOBS.runs[key] == runs + 1 and JOBS.known(key) == "cached"  # it ran to the end, once


def test_a_lab_is_shared_and_replayed(app_server):
    key = labs_tab.run_race.job_key(*RACE, "en")
    runs = JOBS.runs[key]
    finals = together(app_server, 3, lambda c, i: c.predict(*RACE, api_name="/training_race"))
    assert JOBS.runs[key] == runs + 1
    plots, texts = zip(*finals)
    # A session that joined the run is told so above the same result.
    bare = [t.split("\n\n", 1)[1] if t.startswith("⇄") else t for t in texts]
    assert bare[0] == bare[1] == bare[2] and "Finished" in bare[0] and plots[0] == plots[1] == plots[2]
    client = Client(app_server, verbose=False)
    try:
        plot, text = client.predict(*RACE, api_name="/training_race")
    finally:
        client.close()
    assert text.startswith("↺") and "Replayed" in text and text.split("\n\n", 1)[1] == bare[0] and plot == plots[0]
    assert JOBS.runs[key] == runs + 1
