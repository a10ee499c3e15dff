"""The first five minutes on a fresh offline server (issue 20 §2): ``python app.py`` with no ImageNet weights, no
stored backbone and no way to download, so that it prepares the built-in source by itself (``resnet.train.prepare``).

1. seconds from spawning ``python app.py`` until the page's line before Start names the built-in source (goal: within
   8 minutes on 2 cores), and what the line said meanwhile (its progress and time left, every 30 s);
2. ``/classify`` round trips during the preparation, from ``--probes`` clients (a request, a pause, again): p50, p95
   and the slowest (goal: p95 ≤ 3 s), beside the same probes on the same server without a preparation
   (``RESNET_PREPARE_SOURCE=0``) for ``--reference-s`` seconds first: on a shared machine, what the preparation costs
   the rest of the app reads from the difference;
3. the first default Start afterwards (``/finetune`` with the page's quick preset): each strategy's best validation
   accuracy and its weights, and ``head`` and ``last`` above ``scratch`` (goal: ≥ 15 points each).

    python bench/offline_start_bench.py [--probes 2] [--pause 1.0] [--reference-s 120] [--weights-host URL]
                                        [--limit 3600]

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


class Probes:
    """``n`` clients classifying a photo on ``url`` (a request, ``pause`` seconds, again) until ``stop``: each round
    trip's seconds, and the failures."""

    def __init__(self, url: str, n: int, pause: float):
        from gradio_client import Client, handle_file
        from matplotlib import cbook
        photo = handle_file(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
        self.times: list[float] = []
        self.failures: list[str] = []
        self.going = threading.Event()
        self.going.set()

        def probe():
            c = Client(url, verbose=False)
            while self.going.is_set():
                t = time.perf_counter()
                try:
                    c.predict(photo, "resnet18", api_name="/classify")
                    if self.going.is_set():
                        self.times.append(time.perf_counter() - t)
                except Exception as e:  # noqa: BLE001 - counted and shown
                    self.failures.append(f"{type(e).__name__}: {e}")
                time.sleep(pause)
            c.close()
        self.threads = [threading.Thread(target=probe, daemon=True) for _ in range(n)]
        for th in self.threads:
            th.start()

    def stop(self) -> str:
        self.going.clear()
        for th in self.threads:
            th.join()
        t = self.times
        said = (f"{len(t)} answers, p50 {percentile(t, .5):.2f} s, p95 {percentile(t, .95):.2f} s, slowest "
                f"{max(t):.2f} s" if t else "no answers") + f", {len(self.failures)} failures"
        return said + "".join(f"\n    failure: {f}" for f in self.failures[:3])


def fresh_env(root: Path, weights_host: str | None, prepare: bool) -> dict:
    env = {"RESNET_WEIGHTS_DIR": str(root / "weights"), "TORCH_HOME": str(root / "torch"),
           "RESNET_DATA_DIR": str(root / "data"), "RESNET_ALLOW_DOWNLOAD": "1",
           "RESNET_PREPARE_SOURCE": "1" if prepare else "0"}
    if weights_host:
        env["RESNET_WEIGHTS_BASE_URL"] = weights_host
    return env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=2, help="clients classifying during the preparation")
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between one probe's requests")
    ap.add_argument("--weights-host", default=None, help="RESNET_WEIGHTS_BASE_URL for the server (default: the "
                    "official host, unreachable offline)")
    ap.add_argument("--limit", type=float, default=3600, help="give up after this many seconds")
    ap.add_argument("--reference-s", type=float, default=120, help="seconds of probes on a server that does not "
                    "prepare, first (0: none)")
    args = ap.parse_args()
    from gradio_client import Client

    from resnet.train.estimate import DEFAULT_PRESET, PRESETS
    from resnet.ui.tabs.finetune import preset_values

    for name in ("RESNET_WEIGHTS_BASE_URL", "RESNET_PREPARE_EPOCHS", "RESNET_PREPARE_PER_CLASS"):
        os.environ.pop(name, None)  # the defaults, whatever this shell has set
    print(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    if args.reference_s > 0:
        with tempfile.TemporaryDirectory(prefix="resnet-offline-ref-") as root:
            server = Server(fresh_env(Path(root), args.weights_host, prepare=False))
            try:
                probes = Probes(server.url, args.probes, args.pause)
                time.sleep(args.reference_s)
                print(f"/classify without a preparation ({args.reference_s:.0f} s, {args.probes} clients): "
                      f"{probes.stop()}")
            finally:
                server.close()
    tmp = tempfile.TemporaryDirectory(prefix="resnet-offline-start-")
    weights = Path(tmp.name) / "weights"
    t0 = time.monotonic()
    server = Server(fresh_env(Path(tmp.name), args.weights_host, prepare=True))
    print(f"page answers after {server.start_seconds:.1f} s")
    try:
        client = Client(server.url, verbose=False)
        probes = Probes(server.url, args.probes, args.pause)
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
                break
            time.sleep(2)
        ready_s = time.monotonic() - t0
        during = probes.stop()
        stored = [p.name for p in weights.glob("*-source-*.pth")]
        if READY in line:
            print(f"built-in source ready {ready_s:.0f} s ({ready_s / 60:.1f} min) after spawning python app.py: "
                  f"{stored} (goal: within 8 min)")
        else:
            print(f"the built-in source was not ready after {ready_s:.0f} s (--limit)")
        print(f"the preparation's process used {cpu:.0f} s of CPU (one thread; sampled every 2 s): about its time "
              "alone on a quiet machine")
        print(f"/classify during the preparation ({args.probes} clients): {during} (goal: p95 ≤ 3 s)")
        print(f"load average then: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if READY not in line:
            return 1
        t = time.monotonic()
        status, _, table = client.predict("synthetic", None, *preset_values(DEFAULT_PRESET),
                                          api_name="/finetune")[:3]
        acc = {row[0]: float(row[4].split("%")[0]) for row in table["data"]}
        print(f"first default Start ({DEFAULT_PRESET} preset): {time.monotonic() - t:.0f} s")
        for row in table["data"]:
            print(f"  {row[0]:<8} weights: {row[1]:<16} best {row[4]}")
        print(f"head − scratch {acc['head'] - acc['scratch']:+.1f} points, last − scratch "
              f"{acc['last'] - acc['scratch']:+.1f} points (goal: ≥ +15 each)")
    finally:
        server.close()
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
