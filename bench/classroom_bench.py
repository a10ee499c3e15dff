"""A class of thirty on the real server (``python app.py`` in a subprocess on a free loopback port): each simulated
student is its own ``gradio_client.Client`` (its own session) in its own thread, and follows a scripted lesson. At
each step the teacher says "now" (a barrier), so every step is taken by the whole class at once:

1. open the page (``GET /`` and the client's connection: what a browser fetches first);
2. the layer table (``/layer_table``, the page's defaults);
3. classify an example photo (``/classify``, Grace Hopper from matplotlib, or Gradio's example photos);
4. feature maps of that photo (``/feature_maps``);
5. everyone presses Start on the default fine-tune at the same moment (``/finetune`` with the page's defaults);
   meanwhile a few extra clients classify photos, to measure what the rest of the app feels like during it;
6. a new student, after the run finished, asks for the same fine-tune (a finished run is replayed);
7. everyone runs the training race (``/training_race``, defaults) at the same moment.

Printed: for each step p50 / p95 latency (seconds); for the fine-tune the time until the last student has the full
result beside one student's run alone, measured in the same benchmark on a fresh server of its own (so neither run
can answer from the other's results); classify p95 during the fine-tune; the replay's time; the server's peak
resident memory (``VmHWM`` of the server and of any child processes, summed: an upper bound of the peak).

    python bench/classroom_bench.py [--students 30] [--quick] [--probes 3] [--weights-dir DIR]

``--quick``: a smoke run (a one-epoch fine-tune of one strategy at 64 px, a 20-step race). Every student comes
from 127.0.0.1, like a class behind one NAT address, and no setting is raised: each student's client keeps its
page's heartbeat open, as a browser tab does, so each has a share of its own. Parameters not given are the page's
own defaults, read from the server's API description.

``--one-address``: the class twice at the server's defaults, on 127.0.0.1 and behind one ``X-Forwarded-For``
address with ``RESNET_TRUST_PROXY=1`` (a Space), each step's p50 / p95 and refusals; then a flood beside a student
(``--flood`` identical and as many distinct training-race requests, each under a fresh session id, no page): how
many the flooding client got in, and the p95 of the student's layer table and classify during the flood.

    python bench/classroom_bench.py --one-address [--students 30] [--flood 300] [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_bench import Server, percentile, vm_hwm_mb  # noqa: E402  (python app.py on a free port)

# What --quick changes, by API parameter name (those an endpoint does not have are left out).
QUICK = {"/finetune": {"epochs": 1, "image_size": 64, "strategies": ["head"]},
         "/training_race": {"steps": 20}}
STEPS = ["open", "layer_table", "classify", "feature_maps", "finetune", "training_race"]
GOALS = {"finetune": "last ≤ 1.5 × alone", "classify_during": "p95 ≤ 3 s on 2 cores", "replay": "< 2 s"}


def photos() -> list[str]:
    from matplotlib import cbook
    import gradio.media
    return [str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))] + [
        str(gradio.media.get_image(n)) for n in ("cheetah.jpg", "lion.jpg", "tower.jpg")]


def tree_hwm_mb(pid: int) -> tuple[float, int]:
    """VmHWM of ``pid`` plus that of each living child process (MiB), and how many children there were."""
    import psutil
    total, children = vm_hwm_mb(pid), []
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        pass
    for child in children:
        hwm = vm_hwm_mb(child.pid)
        total += 0 if hwm != hwm else hwm  # NaN: gone
    return total, len(children)


class Lesson:
    """The endpoints' keyword arguments (page defaults, --quick overrides) and the recorded latencies per step."""

    def __init__(self, url: str, quick: bool, headers: dict | None = None):
        from gradio_client import Client
        self.url, self.quick, self.headers = url, quick, headers
        c = Client(url, verbose=False)
        self.api = c.view_api(return_format="dict", print_info=False)["named_endpoints"]
        c.close()
        self.photos = photos()
        self.times: dict[str, list[float]] = {}
        self.failures: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def kwargs(self, endpoint: str, **given) -> dict:
        """What differs from the page's defaults (--quick's overrides and ``given``), by parameter name."""
        params = self.api[endpoint]["parameters"]
        names = {p["parameter_name"] for p in params}
        # An input without a default (an optional upload such as the fine-tune's zip) is left empty, as on the page.
        empty = {p["parameter_name"]: None for p in params if not p.get("parameter_has_default")}
        wanted = {**empty, **(QUICK.get(endpoint, {}) if self.quick else {}), **given}
        return {k: v for k, v in wanted.items() if k in names}

    def record(self, step: str, seconds: float | None, error: str | None = None) -> None:
        with self.lock:
            if error is None:
                self.times.setdefault(step, []).append(seconds)
            else:
                self.failures.setdefault(step, []).append(error)

    def timed(self, step: str, fn):
        t0 = time.perf_counter()
        try:
            out = fn()
        except Exception as e:  # a refused or failed request: counted, and the lesson goes on
            self.record(step, None, f"{type(e).__name__}: {str(e)[:160]}")
            return None
        self.record(step, time.perf_counter() - t0)
        return out


def open_page(url: str, headers: dict | None = None):
    """What a browser does first: the page, then the app's configuration (the client fetches it). Like a page, the
    client does not fetch result files (the fine-tuned models, ~170 MB a run): the page shows them as download
    links, so a student has the result when the answer arrives, not when 170 MB have crossed the network."""
    from gradio_client import Client
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=120) as r:
        r.read()
    # A browser's requests have no 5 s time limit (gradio_client's default): a student waits as long as the page does.
    return Client(url, verbose=False, download_files=False, headers=headers, httpx_kwargs={"timeout": 300})


class Probes:
    """Other students classifying photos while a fine-tune runs (a request, half a second's pause, again), each its
    own client: the latencies between ``start()`` and ``stop()``."""

    def __init__(self, lesson: Lesson, n: int):
        from gradio_client import handle_file
        self.lesson, self.times, self.errors = lesson, [], []
        self.clients = [open_page(lesson.url, lesson.headers) for _ in range(n)]
        self.go, self.running = threading.Event(), threading.Event()
        self.handle_file = handle_file
        self.threads = [threading.Thread(target=self._run, args=(j,), daemon=True) for j in range(n)]
        for th in self.threads:
            th.start()

    def _run(self, j: int) -> None:
        self.go.wait()
        k = 0
        while self.running.is_set():
            photo = self.lesson.photos[(j + k) % len(self.lesson.photos)]
            t0 = time.perf_counter()
            try:
                self.clients[j].predict(api_name="/classify",
                                        **self.lesson.kwargs("/classify", image=self.handle_file(photo)))
                self.times.append(time.perf_counter() - t0)
            except Exception as e:
                self.errors.append(f"{type(e).__name__}: {str(e)[:160]}")
            k += 1
            time.sleep(0.5)

    def start(self) -> None:
        self.running.set()
        self.go.set()

    def stop(self) -> "Probes":
        self.running.clear()
        self.go.set()
        for th in self.threads:
            th.join()
        for c in self.clients:
            c.close()
        return self

    def p95(self) -> str:
        return f"{percentile(self.times, .95):.2f} s" if self.times else "—"


def finetune_alone(args, env: dict) -> tuple[float, object, Probes]:
    """One student alone on a fresh server, with the same classifying probes as the class has: the default
    fine-tune's seconds to the full result."""
    server = Server(env)
    try:
        lesson = Lesson(server.url, args.quick)
        client = open_page(server.url)
        from gradio_client import handle_file
        image = handle_file(lesson.photos[0])
        # The lesson's earlier steps first, as in class (the server has loaded what they need when Start is pressed).
        client.predict(api_name="/layer_table", **lesson.kwargs("/layer_table"))
        client.predict(api_name="/classify", **lesson.kwargs("/classify", image=image))
        client.predict(api_name="/feature_maps", **lesson.kwargs("/feature_maps", image=image))
        probes = Probes(lesson, args.probes)
        probes.start()
        t0 = time.perf_counter()
        try:
            out = client.predict(api_name="/finetune", **lesson.kwargs("/finetune"))
        finally:
            seconds = time.perf_counter() - t0
            probes.stop()
        client.close()
        return seconds, out, probes
    finally:
        server.close()


def results_of(out) -> object:
    """The part of a fine-tune's answer that must be the same for every student: the results table's rows, without
    the column of seconds (a run alone takes its own time)."""
    for value in out if isinstance(out, (list, tuple)) else []:
        if isinstance(value, dict) and "data" in value and "headers" in value:
            drop = {i for i, h in enumerate(value["headers"]) if "second" in str(h).lower()}
            return [[c for i, c in enumerate(row) if i not in drop] for row in value["data"]]
    return None


def run_class(server, args, headers: dict | None = None):
    """The scripted lesson, every student at once at each step: the lesson's record, the probes' classify times
    during the fine-tune, the students' fine-tune answers, and a late student's replay (seconds, answer)."""
    n = args.students
    lesson = Lesson(server.url, args.quick, headers)
    from gradio_client import handle_file
    photo = lesson.photos[0]
    barriers = {s: threading.Barrier(n) for s in STEPS}
    probes = Probes(lesson, args.probes)  # classifying while the class fine-tunes
    outs: list = []

    def student(i: int) -> None:
        barriers["open"].wait()
        client = lesson.timed("open", lambda: open_page(server.url, headers))
        if client is None:
            for s in STEPS[1:]:
                barriers[s].wait()
            return
        try:
            barriers["layer_table"].wait()
            lesson.timed("layer_table", lambda: client.predict(api_name="/layer_table",
                                                              **lesson.kwargs("/layer_table")))
            barriers["classify"].wait()
            lesson.timed("classify", lambda: client.predict(api_name="/classify", **lesson.kwargs(
                "/classify", image=handle_file(photo))))
            barriers["feature_maps"].wait()
            lesson.timed("feature_maps", lambda: client.predict(api_name="/feature_maps", **lesson.kwargs(
                "/feature_maps", image=handle_file(photo))))
            if barriers["finetune"].wait() == 0:
                probes.start()
            out = lesson.timed("finetune", lambda: client.submit(api_name="/finetune", **lesson.kwargs(
                "/finetune")).result(timeout=args.timeout))
            with lesson.lock:
                outs.append(out)
            barriers["training_race"].wait()
            lesson.timed("training_race", lambda: client.submit(api_name="/training_race", **lesson.kwargs(
                "/training_race")).result(timeout=args.timeout))
        finally:
            client.close()

    with ThreadPoolExecutor(n) as pool:
        students = [pool.submit(student, i) for i in range(n)]
        # The fine-tune's window closes when the last student has the full result (or gave up).
        while len(lesson.times.get("finetune", [])) + len(lesson.failures.get("finetune", [])) < n:
            if all(f.done() for f in students):
                break
            time.sleep(0.2)
        probes.stop()
        for f in students:
            f.result()
    for e in probes.errors:
        lesson.record("classify_during", None, e)

    # A new student after the run finished: the same request again (replayed from the finished run).
    client = open_page(server.url, headers)
    late_t0 = time.perf_counter()
    try:
        late = client.predict(api_name="/finetune", **lesson.kwargs("/finetune"))
    except Exception as e:
        late = None
        lesson.record("replay", None, f"{type(e).__name__}: {str(e)[:160]}")
    replay = time.perf_counter() - late_t0
    client.close()
    for f in lesson.failures.get("replay", []):
        print(f"replay failed: {f}")
    return lesson, probes.times, outs, (replay, late)


def print_steps(lesson: Lesson, probe_times: list[float]) -> int:
    """The table of steps: n, p50, p95, max and refusals or failures (listed below each row); their total."""
    print(f"\n{'step':<28} {'n':>4} {'p50 s':>8} {'p95 s':>8} {'max s':>8}  refused/failed")
    rows = [(s, lesson.times.get(s, [])) for s in STEPS] + [("classify during fine-tune", probe_times)]
    total = 0
    for name, times in rows:
        fails = lesson.failures.get(name if name != "classify during fine-tune" else "classify_during", [])
        total += len(fails)
        if times:
            print(f"{name:<28} {len(times):>4} {percentile(times, .5):>8.2f} {percentile(times, .95):>8.2f} "
                  f"{max(times):>8.2f}  {len(fails)}")
        else:
            print(f"{name:<28} {0:>4} {'—':>8} {'—':>8} {'—':>8}  {len(fails)}")
        for f in dict.fromkeys(fails):
            print(f"    {f}")
    return total


def flood(server, args, kind: str) -> None:
    """One client joins ``--flood`` training races at once, each under a fresh session id and with no page (identical
    ones, or distinct ones), while another student (a page of its own) asks for layer tables and classifies:
    how many the flood got in, and the student's p95 meanwhile."""
    import asyncio
    import uuid

    import httpx
    from gradio_client import handle_file
    deps = httpx.get(f"{server.url}config", timeout=60).json()["dependencies"]
    index = next(d["id"] for d in deps if d.get("api_name") == "training_race")
    steps = [60 if kind == "identical" else 1000 + i for i in range(args.flood)]
    lesson = Lesson(server.url, args.quick)
    done = threading.Event()
    tables, classifies = [], []

    def student() -> None:
        client = open_page(server.url)
        image = handle_file(lesson.photos[1])
        archs = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
        k = 0
        while not done.is_set():
            t0 = time.perf_counter()
            client.predict(archs[k % 5], 224, "v1", api_name="/layer_table")
            tables.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            client.predict(image, "resnet18", api_name="/classify")
            classifies.append(time.perf_counter() - t0)
            k += 1
        client.close()

    async def joins():
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=args.flood + 10)) as http:
            async def join(n):
                session = uuid.uuid4().hex
                r = await http.post(f"{server.url}gradio_api/queue/join", json={
                    "data": [n, 8, 0.05], "fn_index": index, "session_hash": session, "event_data": None,
                    "trigger_id": None})
                return r.status_code, session, (r.json().get("event_id") if r.status_code == 200 else None)
            return await asyncio.gather(*(join(n) for n in steps))

    watcher = threading.Thread(target=student)
    watcher.start()
    time.sleep(2)  # the student is under way
    t0 = time.perf_counter()
    answers = asyncio.run(joins())
    joined_in = time.perf_counter() - t0
    time.sleep(max(0.0, args.flood_watch - joined_in))  # the student goes on while the flood's runs hold the queue
    done.set()
    watcher.join()
    for status, session, event in answers:  # the flooder leaves: its runs stop
        if status == 200:
            httpx.post(f"{server.url}gradio_api/cancel", json={"session_hash": session, "fn_index": index,
                                                               "event_id": event}, timeout=60)
    time.sleep(5)  # the cancelled runs end before the next flood
    codes = [a[0] for a in answers]
    print(f"flood of {args.flood} {kind} training races (fresh session ids, no page): {codes.count(200)} let in, "
          f"{codes.count(422)} refused (share), {codes.count(503)} refused (queue full), "
          f"{len(codes) - codes.count(200) - codes.count(422) - codes.count(503)} other; joined in {joined_in:.1f} s")
    for name, times in (("layer table", tables), ("classify", classifies)):
        if times:
            print(f"    another student's {name:<11} during it: n {len(times):>3}  p50 {percentile(times, .5):.2f} s  "
                  f"p95 {percentile(times, .95):.2f} s  (goal: p95 ≤ 3 s)")


def one_address(args) -> None:
    """The class on one address and on one forwarded address at the defaults, then each flood."""
    n = args.students
    print(f"$ python {' '.join(sys.argv)}   ({time.strftime('%Y-%m-%d %H:%M')}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"classroom bench, one address: {n} students{' (quick)' if args.quick else ''}, {os.cpu_count()} CPUs here, "
          "every setting at its default", flush=True)
    # The built-in source is not prepared in the background here (RESNET_PREPARE_SOURCE=0): that would take a core
    # for minutes, and this bench measures the share, not the preparation (bench/offline_start_bench.py does).
    quiet = {"RESNET_PREPARE_SOURCE": "0"}
    forwarded = {"X-Forwarded-For": "203.0.113.7"}  # a documentation address: a header only, nothing is sent there
    for label, env, headers in (("127.0.0.1", quiet, None),
                                ("X-Forwarded-For 203.0.113.7, RESNET_TRUST_PROXY=1",
                                 {**quiet, "RESNET_TRUST_PROXY": "1"}, forwarded)):
        server = Server(env)
        try:
            lesson, probe_times, outs, (replay, _) = run_class(server, args, headers)
        finally:
            server.close()
        print(f"\n== {n} students on one address ({label}), first page after {server.start_seconds:.1f} s")
        refused = print_steps(lesson, probe_times)
        print(f"refused or failed: {refused}; replay for a late student {replay:.2f} s", flush=True)
    server = Server(quiet)
    try:
        for kind in ("identical", "distinct"):
            print(f"\n== flood ({kind})", flush=True)
            flood(server, args, kind)
    finally:
        server.close()
    print("(timings on a machine shared with other work are inflated; rerun on an idle one to compare with the goals)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="a short smoke run")
    ap.add_argument("--probes", type=int, default=3, help="clients classifying while the class fine-tunes")
    ap.add_argument("--weights-dir", help="a folder of torchvision checkpoints (RESNET_WEIGHTS_DIR)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds a step may take before it is abandoned")
    ap.add_argument("--one-address", action="store_true", help="at the defaults, one address, then floods")
    ap.add_argument("--flood", type=int, default=300, help="requests of each flood (--one-address)")
    ap.add_argument("--flood-watch", type=float, default=20, help="seconds the student is watched during a flood")
    args = ap.parse_args()
    if args.weights_dir:
        os.environ["RESNET_WEIGHTS_DIR"] = str(Path(args.weights_dir).resolve())
    if args.one_address:
        return one_address(args)
    n = args.students
    env: dict = {"RESNET_PREPARE_SOURCE": "0"}  # no background preparation of the built-in source (a core for minutes)
    print(f"$ python {' '.join(sys.argv)}   ({time.strftime('%Y-%m-%d %H:%M')}, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())})")
    print(f"classroom bench: {n} students{' (quick)' if args.quick else ''}, {os.cpu_count()} CPUs here; "
          "every student from 127.0.0.1, as for a class behind one NAT address, at the default settings", flush=True)

    alone, alone_out, alone_probes = finetune_alone(args, env)
    print(f"one student alone (fresh server, {args.probes} others classifying): default fine-tune {alone:.1f} s; "
          f"classify p95 meanwhile {alone_probes.p95()}", flush=True)

    server = Server(env)
    print(f"class server: first page after {server.start_seconds:.1f} s", flush=True)
    try:
        lesson, probe_times, outs, (replay, late) = run_class(server, args)
        hwm, children = tree_hwm_mb(server.proc.pid)
    finally:
        server.close()
    print_steps(lesson, probe_times)
    ft = lesson.times.get("finetune", [])
    if ft:
        last = max(ft)
        print(f"\nfine-tune: the last of {len(ft)} students had the full result after {last:.1f} s; one student "
              f"alone: {alone:.1f} s → {last / alone:.2f} × (goal: {GOALS['finetune']})")
    if probe_times:
        print(f"classify during the class's fine-tune: p95 {percentile(probe_times, .95):.2f} s over {len(probe_times)} "
              f"requests from {args.probes} clients (goal: {GOALS['classify_during']}); during the run alone: "
              f"p95 {alone_probes.p95()}")
    print(f"replay for a new student after the run: {replay:.2f} s (goal: {GOALS['replay']})")
    same = [results_of(o) for o in outs if o is not None]
    if same:
        print(f"the class's results: {'all identical' if all(s == same[0] for s in same) else 'NOT identical'} "
              f"({len(same)} students); the replay's {'equal' if results_of(late) == same[0] else 'DIFFERENT'}; "
              f"alone {'equal' if results_of(alone_out) == same[0] else 'different'} (the seconds column may differ)")
    print(f"server peak RSS (VmHWM, server + {children} child processes): {hwm:.0f} MiB")
    print("(timings on a machine shared with other work are inflated; rerun on an idle one to compare with the goals)")


if __name__ == "__main__":
    main()
