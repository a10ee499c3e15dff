"""The first five minutes on a fresh offline server (issue 20 §2): ``python app.py`` with no ImageNet weights, no
stored backbone and no way to download, so that it prepares the built-in source by itself (``resnet.train.prepare``).

1. seconds from spawning ``python app.py`` until the page's line before Start names the built-in source (goal: within
   8 minutes on 2 cores), and what the line said meanwhile (its progress and time left, every 30 s);
2. ``/classify`` round trips during the preparation, from ``--probes`` clients (a request, a pause, again): p50, p95
   and the slowest (goal: p95 ≤ 3 s);
3. the first default Start afterwards (``/finetune`` with the page's quick preset): each strategy's best validation
   accuracy and its weights, and ``head`` and ``last`` above ``scratch`` (goal: ≥ 15 points each).

    python bench/offline_start_bench.py [--probes 2] [--pause 1.0] [--weights-host URL]

The server gets fresh folders (weights, hub cache, data, Gradio's temporary files) and its default settings, the
preparation's default recipe included. Where the machine can reach download.pytorch.org, pass ``--weights-host``
with a loopback URL nobody answers (``http://127.0.0.1:9``), as the tests do. The load average is printed at the
start and the end: other work on the cores slows the preparation (it runs at the lowest priority) and the probes.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import Server, percentile  # noqa: E402  (python app.py on a free port)

READY = "start from the **built-in pretraining source**"


def preparation_cpu(server) -> float:
    """CPU seconds (user + system) used so far by the server's preparation process (0 when there is none)."""
    import psutil
    total = 0.0
    for proc in server.ps.children(recursive=True):
        try:
            if "resnet.train.prepare" in " ".join(proc.cmdline()):
                t = proc.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=2, help="clients classifying during the preparation")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between one probe's requests")
    ap.add_argument("--weights-host", default=None, help="RESNET_WEIGHTS_BASE_URL for the server (default: the "
                    "official host, unreachable offline)")
    ap.add_argument("--limit", type=float, default=1200, help="give up after this many seconds")
    args = ap.parse_args()
    from gradio_client import Client, handle_file
    from matplotlib import cbook

    from resnet.train.estimate import DEFAULT_PRESET, PRESETS
    from resnet.ui.tabs.finetune import preset_values

    tmp = tempfile.TemporaryDirectory(prefix="resnet-offline-start-")
    weights = Path(tmp.name) / "weights"
    env = {"RESNET_WEIGHTS_DIR": str(weights), "TORCH_HOME": str(Path(tmp.name) / "torch"),
           "RESNET_DATA_DIR": str(Path(tmp.name) / "data"), "RESNET_ALLOW_DOWNLOAD": "1",
           "RESNET_PREPARE_SOURCE": "1"}
    if args.weights_host:
        env["RESNET_WEIGHTS_BASE_URL"] = args.weights_host
    for name in ("RESNET_WEIGHTS_BASE_URL", "RESNET_PREPARE_EPOCHS", "RESNET_PREPARE_PER_CLASS"):
        if name not in env:
            os.environ.pop(name, None)  # the defaults, whatever this shell has set
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    t0 = time.monotonic()
    server = Server(env)
    print(f"page answers after {server.start_seconds:.1f} s")
    try:
        client = Client(server.url, verbose=False)
        photo = handle_file(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        times: list[float] = []
        failures: list[str] = []
        preparing = threading.Event()
        preparing.set()

        def probe():
            c = Client(server.url, verbose=False)
            while preparing.is_set():
                t = time.perf_counter()
                try:
                    c.predict(photo, "resnet18", api_name="/classify")
                    if preparing.is_set():
                        times.append(time.perf_counter() - t)
                except Exception as e:  # noqa: BLE001 - counted and shown
                    failures.append(f"{type(e).__name__}: {e}")
                time.sleep(args.pause)
            c.close()
        threads = [threading.Thread(target=probe, daemon=True) for _ in range(args.probes)]
        for th in threads:
            th.start()
        line, said, cpu = "", 0.0, 0.0
        default = list(PRESETS[DEFAULT_PRESET]["strategies"])
        while READY not in line:
            line = client.predict("resnet18", default, api_name="/finetune_source")
            cpu = max(cpu, preparation_cpu(server))
            now = time.monotonic() - t0
            if now - said >= 30 or READY in line:
                said = now
                m = re.search(r"(\d+% done[^.]*)", line)
                print(f"  {now:6.1f} s: {m.group(1) if m else line[:110]}")
            if now > args.limit:
                print("the built-in source was not ready in time")
                return 1
            time.sleep(2)
        ready_s = time.monotonic() - t0
        preparing.clear()
        for th in threads:
            th.join()
        stored = [p.name for p in weights.glob("*-source-*.pth")]
        print(f"built-in source ready {ready_s:.0f} s ({ready_s / 60:.1f} min) after spawning python app.py: {stored} "
              "(goal: within 8 min)")
        print(f"the preparation's process used {cpu:.0f} s of CPU (one thread; sampled every 2 s): about its time "
              "alone on a quiet machine")
        if times:
            print(f"/classify during the preparation: {len(times)} answers from {args.probes} clients, p50 "
                  f"{percentile(times, .5):.2f} s, p95 {percentile(times, .95):.2f} s, slowest {max(times):.2f} s, "
                  f"{len(failures)} failures (goal: p95 ≤ 3 s)")
        for f in failures[:3]:
            print("  failure:", f)
        t = time.monotonic()
        status, _, table = client.predict("synthetic", None, *preset_values(DEFAULT_PRESET),
                                          api_name="/finetune")[:3]
        acc = {row[0]: float(row[4].split("%")[0]) for row in table["data"]}
        print(f"first default Start ({DEFAULT_PRESET} preset): {time.monotonic() - t:.0f} s")
        for row in table["data"]:
            print(f"  {row[0]:<8} weights: {row[1]:<16} best {row[4]}")
        print(f"head − scratch {acc['head'] - acc['scratch']:+.1f} points, last − scratch "
              f"{acc['last'] - acc['scratch']:+.1f} points (goal: ≥ +15 each)")
        print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        server.close()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
