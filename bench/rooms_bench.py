"""Followers of one room, library level (``resnet.classroom``, no Gradio): ``--followers`` async long-polls in one
event loop, as an async server holds them, while the teacher changes step from another thread. Printed: the p50 /
p95 / max time from a change to each follower's wake-up, and the process's CPU while the followers idle (the
library's share of the goal "thirty idle followers under 10 % of one core"; the served app adds its own).

    python bench/rooms_bench.py [--followers 30] [--changes 50] [--idle-s 10]
"""
from __future__ import annotations

import argparse
import asyncio
import threading
import time


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def follower(store, code, sid, stamps, delays, stop):
    version = store.get(code).version
    while not stop.is_set():
        new = await store.changed(code, version, timeout=30)
        if new != version:
            delays.append(time.perf_counter() - stamps[new])
            store.get(code).student_view(sid)  # what the page would draw
            version = new


async def main_async(args):
    from resnet.classroom import MemoryRooms
    store = MemoryRooms()
    room, key = store.create()
    for i in range(args.followers):
        room.join(f"page-{i}", f"S{i}")
    stamps, delays, stop = {}, [], threading.Event()
    tasks = [asyncio.create_task(follower(store, room.code, f"page-{i}", stamps, delays, stop))
             for i in range(args.followers)]
    await asyncio.sleep(0.5)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(args.idle_s)
    idle = (time.process_time() - cpu) / (time.perf_counter() - wall)

    def teacher():
        for n in range(args.changes):
            time.sleep(0.05)
            with room.cond:
                stamps[room.version + 1] = time.perf_counter()
                store.drive(room.code, key, lambda r, n=n: r.move(step=n % 10 + 1))
    thread = threading.Thread(target=teacher)
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    stop.set()
    room.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(f"{args.followers} followers, {args.changes} step changes: "
          f"wake-up p50 {percentile(delays, .5) * 1e3:.1f} ms, "
          f"p95 {percentile(delays, .95) * 1e3:.1f} ms, max {max(delays) * 1e3:.1f} ms ({len(delays)} wake-ups); "
          f"idle CPU {idle:.2%} of one core over {args.idle_s:.0f} s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--followers", type=int, default=30)
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--idle-s", type=float, default=10.0)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
