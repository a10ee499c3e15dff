"""An idle app's own CPU: the real app (``create_app``) launched in this process on a free loopback port, no visitor,
its process's CPU time over ``--seconds`` seconds, as percent of one core: first with Gradio's own queue poll
(``Queue.sleep_when_free``, 1 ms), the reference, then with the app's (``resnet.ui.fairshare.IDLE_POLL_S``).

    python bench/idle_bench.py [--seconds 10]
"""
from __future__ import annotations

import argparse
import os
import socket
import time

import psutil


def busy_percent(seconds: float) -> float:
    """This process's CPU time (user + system) over the next ``seconds``, as percent of one core."""
    proc = psutil.Process()
    before, start = proc.cpu_times(), time.perf_counter()
    time.sleep(seconds)
    after = proc.cpu_times()
    used = (after.user + after.system) - (before.user + before.system)
    return 100 * used / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    os.environ.setdefault("RESNET_ALLOW_DOWNLOAD", "0")
    os.environ.setdefault("RESNET_PREPARE_SOURCE", "0")  # no background pretraining in this process's count
    from resnet.ui import create_app
    from resnet.ui.fairshare import IDLE_POLL_S
    demo, kwargs = create_app()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **kwargs)
    try:
        time.sleep(3)  # start-up settles
        results = {}
        for name, poll in (("gradio's poll", 0.001), ("the app's poll", IDLE_POLL_S)):
            demo._queue.sleep_when_free = poll
            results[name] = busy_percent(args.seconds)
            print(f"{name} ({poll * 1000:g} ms): {results[name]:.1f} % of a core")
        ref, ours = results["gradio's poll"], results["the app's poll"]
        print(f"idle CPU, the app's poll / gradio's: {ours / ref:.2f}" if ref > 0 else "reference at zero")
    finally:
        demo.close()


if __name__ == "__main__":
    main()
