"""The app's speed, three figures in one run:

1. cold start of ``python app.py`` to the first page (goal ≤ 10 s on 2 cores);
2. a ``/classify`` round trip through the server, minus Gradio's own round trip for a trivial image
   endpoint, as a multiple of the bare model's forward time (goal ≤ 1.5×);
3. the pieces: bare forward, preprocessing, trivial round trip.

    python bench/app_bench.py [--arch resnet18] [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from load_bench import Server  # python app.py on a free port, waited for until it answers


def cold_start() -> float:
    """Seconds from spawning ``python app.py`` until its first page answers."""
    server = Server({})  # offline unless RESNET_ALLOW_DOWNLOAD says otherwise
    server.close()
    return server.start_seconds


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
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    os.environ.setdefault("RESNET_ALLOW_DOWNLOAD", "0")

    start = cold_start()

    import gradio as gr
    import gradio.media
    import torch
    from gradio_client import Client, handle_file

    from resnet.predict import to_batch
    from resnet.serving import ModelCache
    from resnet.ui import create_app

    photo = gradio.media.get_image("lion.jpg")
    demo, kwargs = create_app()  # in this process, on the first free port Gradio finds
    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, **kwargs)

    with gr.Blocks() as trivial:  # the same kind of endpoint, doing nothing
        img, out = gr.Image(type="filepath"), gr.Label()
        gr.Button().click(lambda x: {"ok": 1.0}, img, out, api_name="echo", preprocess=False)
    trivial.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)

    app, echo = Client(demo.local_url, verbose=False), Client(trivial.local_url, verbose=False)
    cache = ModelCache(allow_download=False)
    model = cache.get(args.arch).model
    x = to_batch(model, photo)

    def forward():
        with torch.inference_mode():
            model(x)

    bare = median_time(forward, args.repeats)
    prep = median_time(lambda: to_batch(model, photo), args.repeats)
    trip = median_time(lambda: echo.predict(handle_file(photo), api_name="/echo"), args.repeats)
    rt = median_time(lambda: app.predict(handle_file(photo), args.arch, api_name="/classify"), args.repeats)
    demo.close()
    trivial.close()

    print(f"cold start to first page:          {start:6.2f} s   (goal ≤ 10 s)")
    print(f"bare {args.arch} forward (1 image):    {bare * 1e3:6.1f} ms")
    print(f"decode + preprocess:                {prep * 1e3:6.1f} ms")
    print(f"trivial image endpoint round trip:  {trip * 1e3:6.1f} ms")
    print(f"/classify round trip:               {rt * 1e3:6.1f} ms")
    print(f"(classify − trivial) / forward:     {(rt - trip) / bare:6.2f} ×  (goal ≤ 1.5)")


if __name__ == "__main__":
    main()
