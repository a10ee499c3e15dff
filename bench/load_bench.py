"""A classroom's load on the real server (``python app.py`` as a subprocess, loopback only):

1. ``/classify`` latency (p50, p95) and throughput with 1, 5 and 20 concurrent clients, beside the bare
   model's forward time measured in the same run (so the figures read as ratios on any machine), and beside
   the same load on a trivial image endpoint (a Gradio app that returns a constant): what the web layer
   itself costs per request, clients included, on the same cores;
2. the server's memory: RSS idle after start, idle with ResNet-50 loaded, and its peak during a fine-tune
   (``VmHWM``, the kernel's high-water mark, and the highest RSS sampled every 50 ms).

    python bench/load_bench.py [--arch resnet18] [--requests 40] [--clients 1,5,20] [--weights-dir DIR]
                               [--finetune-epochs 2] [--skip-finetune] [--skip-reference]

Without ``--weights-dir`` (or a hub cache) the models have random weights: the same work, offline.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def vm_hwm_mb(pid: int) -> float:
    """Peak resident set size of ``pid`` so far (Linux ``VmHWM``), in MiB; NaN elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


TRIVIAL_APP = r"""
import os
import gradio as gr
with gr.Blocks() as demo:
    image, label = gr.Image(type="filepath"), gr.Label()
    gr.Button().click(lambda x, arch: {"ok": 1.0}, [image, gr.Textbox()], label, api_name="classify",
                      preprocess=False)
demo.queue(default_concurrency_limit=int(os.environ.get("RESNET_QUICK_CONCURRENCY", 4)))
demo.launch(server_name="127.0.0.1", quiet=True)
"""


class Server:
    """``python app.py`` (or ``code``) on a free loopback port, with its own temporary folders."""

    def __init__(self, env_extra: dict[str, str], code: str | None = None):
        import psutil
        self.tmp = tempfile.TemporaryDirectory(prefix="resnet-load-bench-")
        port = free_port()
        env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
                   GRADIO_TEMP_DIR=str(Path(self.tmp.name) / "gradio"), GRADIO_ANALYTICS_ENABLED="False",
                   **env_extra)
        env.setdefault("RESNET_ALLOW_DOWNLOAD", "0")
        # Offline without weights the app would pretrain the built-in source in the background (resnet.train.prepare),
        # a core's worth of load that is no part of what these benchmarks measure: off unless asked for.
        env.setdefault("RESNET_PREPARE_SOURCE", "0")
        self.log = open(Path(self.tmp.name) / "server.log", "w")
        t0 = time.perf_counter()
        argv = [sys.executable, "-c", code] if code else [sys.executable, str(ROOT / "app.py")]
        self.proc = subprocess.Popen(argv, cwd=self.tmp.name, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}/"
        self.ps = psutil.Process(self.proc.pid)
        import urllib.request
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("the app exited:\n" + (Path(self.tmp.name) / "server.log").read_text()[-2000:])
            try:
                if urllib.request.urlopen(self.url, timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(0.1)
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("the app did not answer within 120 s")
        self.start_seconds = time.perf_counter() - t0

    def rss_mb(self) -> float:
        return self.ps.memory_info().rss / 2**20

    def settled_rss_mb(self, seconds: float = 1.5) -> float:
        time.sleep(seconds)
        return self.rss_mb()

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        self.tmp.cleanup()


def bare_forward_ms(arch: str, photo: str, repeats: int = 20) -> tuple[float, float]:
    """Median forward time of the bare model on one preprocessed image, and the preprocessing time (ms)."""
    import torch

    from resnet.predict import to_batch
    from resnet.serving import ModelCache
    model = ModelCache(allow_download=os.environ.get("RESNET_ALLOW_DOWNLOAD", "0") != "0").get(arch).model
    x = to_batch(model, photo)

    def median(fn) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e3

    with torch.inference_mode():
        forward = median(lambda: model(x))
    prep = median(lambda: to_batch(model, photo))
    return forward, prep


def classify_load(url: str, arch: str, photos: list[str], clients: int, requests: int) -> dict:
    """``requests`` /classify calls spread over ``clients`` concurrent clients; latencies and throughput."""
    from gradio_client import Client, handle_file
    pool_clients = [Client(url, verbose=False) for _ in range(clients)]
    for c in pool_clients:  # each connection warm
        c.predict(handle_file(photos[0]), arch, api_name="/classify")
    per_client = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def student(i: int) -> None:
        start.wait()
        for r in range(per_client[i]):
            t = time.perf_counter()
            pool_clients[i].predict(handle_file(photos[(i + r) % len(photos)]), arch, api_name="/classify")
            with lock:
                latencies.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(student, range(clients)))
    wall = time.perf_counter() - t0
    for c in pool_clients:
        c.close()
    return {"clients": clients, "requests": len(latencies), "p50": percentile(latencies, 0.5) * 1e3,
            "p95": percentile(latencies, 0.95) * 1e3, "throughput": len(latencies) / wall}


def finetune_peak(server: Server, epochs: int) -> dict:
    """Run the default comparison (synthetic set, all/last/head) for ``epochs``; sample RSS every 50 ms."""
    from gradio_client import Client
    client = Client(server.url, verbose=False)
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(server.rss_mb())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t0 = time.perf_counter()
    try:
        out = client.predict("synthetic", None, ["all", "last", "head"], "resnet18", epochs, 128, 32, 0,
                             api_name="/finetune")
    finally:
        done.set()
        sampler.join()
        client.close()
    return {"seconds": time.perf_counter() - t0, "peak_sampled": max(samples), "hwm": vm_hwm_mb(server.proc.pid),
            "status": str(out[0]).splitlines()[0][:100]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--requests", type=int, default=40, help="/classify calls per concurrency level")
    ap.add_argument("--clients", default="1,5,20")
    ap.add_argument("--weights-dir", help="a folder of torchvision checkpoints (RESNET_WEIGHTS_DIR)")
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--skip-finetune", action="store_true")
    ap.add_argument("--skip-reference", action="store_true", help="no trivial-endpoint reference")
    args = ap.parse_args()
    if args.weights_dir:
        os.environ["RESNET_WEIGHTS_DIR"] = str(Path(args.weights_dir).resolve())
    os.environ.setdefault("RESNET_ALLOW_DOWNLOAD", "0")

    import gradio.media
    photos = [gradio.media.get_image(n) for n in ("lion.jpg", "cheetah.jpg", "tower.jpg", "bus.png")]

    levels = [int(c) for c in args.clients.split(",")]
    reference = {}
    if not args.skip_reference:
        trivial = Server({}, code=TRIVIAL_APP)
        reference = {n: classify_load(trivial.url, args.arch, photos, n, max(args.requests, n)) for n in levels}
        trivial.close()

    server = Server({})
    print(f"server: python app.py, first page after {server.start_seconds:.1f} s; "
          f"RSS idle {server.settled_rss_mb():.0f} MiB")
    forward, prep = bare_forward_ms(args.arch, photos[0])
    print(f"bare {args.arch} forward, 1 image:   {forward:7.1f} ms   (decode + preprocess {prep:.1f} ms)")
    print(f"{'clients':>8} {'requests':>9} {'p50 ms':>9} {'p95 ms':>9} {'req/s':>8} {'p50/forward':>12}"
          + (f" {'trivial p50':>12} {'trivial req/s':>14}" if reference else ""))
    for n in levels:
        r = classify_load(server.url, args.arch, photos, n, max(args.requests, n))
        line = (f"{r['clients']:>8} {r['requests']:>9} {r['p50']:>9.1f} {r['p95']:>9.1f} {r['throughput']:>8.2f} "
                f"{r['p50'] / forward:>11.1f}×")
        if reference:
            line += f" {reference[n]['p50']:>12.1f} {reference[n]['throughput']:>14.2f}"
        print(line)
    print(f"(1 / forward = {1e3 / forward:.1f} images/s: the most a server doing only forwards could answer"
          + ("; 'trivial': the same load on an endpoint that returns a constant)" if reference else ")"))

    from gradio_client import Client, handle_file
    c = Client(server.url, verbose=False)
    c.predict(handle_file(photos[0]), "resnet50", api_name="/classify")
    c.close()
    print(f"RSS idle with resnet50 loaded:  {server.settled_rss_mb():7.0f} MiB   (peak so far {vm_hwm_mb(server.proc.pid):.0f})")
    if not args.skip_finetune:
        ft = finetune_peak(server, args.finetune_epochs)
        print(f"fine-tune (synthetic, all/last/head, {args.finetune_epochs} epochs, 128 px): {ft['seconds']:.1f} s; "
              f"peak RSS {ft['hwm']:.0f} MiB (VmHWM), {ft['peak_sampled']:.0f} MiB sampled; "
              f"{server.settled_rss_mb():.0f} MiB after")
        print(f"  {ft['status']}")
    server.close()


if __name__ == "__main__":
    main()
