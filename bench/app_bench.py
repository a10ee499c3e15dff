"""The app's speed, in one run:

1. cold start of ``python app.py`` to the first page (goal ≤ 10 s on 2 cores);
2. a ``/classify`` round trip through the server, minus Gradio's own round trip for a trivial image endpoint, as a
   multiple of the bare model's forward time (goal ≤ 1.5×). The app and the trivial app each run in a process of
   their own (``python app.py``, as a visitor meets it), the client in this one. The bare forward is timed here on
   as many torch threads as the server gives one job (``RESNET_TORCH_THREADS``, default: the cores shared among the
   jobs that may run at once), and on all cores for comparison;
3. the pieces: bare forward, preprocessing, trivial round trip.

    python bench/app_bench.py [--arch resnet18] [--repeats 30]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from load_bench import TRIVIAL_APP, Server  # a server process on a free port, waited for until it answers


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    os.environ.setdefault("RESNET_ALLOW_DOWNLOAD", "0")

    import gradio.media
    import torch
    from gradio_client import Client, handle_file

    from resnet.predict import to_batch
    from resnet.serving import ModelCache, Settings

    photo = gradio.media.get_image("lion.jpg")
    # No background preparation of the built-in source (it would take a core for minutes: not what is measured).
    app, trivial = Server({"RESNET_PREPARE_SOURCE": "0"}), Server({}, code=TRIVIAL_APP)
    try:
        app_client, echo = Client(app.url, verbose=False), Client(trivial.url, verbose=False)
        trip = median_time(lambda: echo.predict(handle_file(photo), "", api_name="/classify"), args.repeats)
        rt = median_time(lambda: app_client.predict(handle_file(photo), args.arch, api_name="/classify"),
                         args.repeats)
        app_client.close()
        echo.close()
    finally:
        app.close()
        trivial.close()

    model = ModelCache(allow_download=False).get(args.arch).model
    x = to_batch(model, photo)

    def forward():
        with torch.inference_mode():
            model(x)

    all_cores = torch.get_num_threads()
    per_job = Settings().torch_threads
    bare_all = median_time(forward, args.repeats)
    torch.set_num_threads(per_job)
    bare = median_time(forward, args.repeats)
    prep = median_time(lambda: to_batch(model, photo), args.repeats)

    print(f"cold start to first page:             {app.start_seconds:6.2f} s   (goal ≤ 10 s)")
    print(f"bare {args.arch} forward, {per_job} thread(s) (a job's): {bare * 1e3:6.1f} ms")
    print(f"bare {args.arch} forward, {all_cores} thread(s):          {bare_all * 1e3:6.1f} ms")
    print(f"decode + preprocess:                   {prep * 1e3:6.1f} ms")
    print(f"trivial image endpoint round trip:     {trip * 1e3:6.1f} ms")
    print(f"/classify round trip:                  {rt * 1e3:6.1f} ms")
    print(f"(classify − trivial) / forward:        {(rt - trip) / bare:6.2f} ×  (goal ≤ 1.5; "
          f"{(rt - trip) / bare_all:.2f} × the forward on all {all_cores} threads)")


if __name__ == "__main__":
    main()
