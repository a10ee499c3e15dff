"""A run's events on the terminal: the tqdm bars the command lines show (``finetune`` and ``pretrain`` alike)."""
from __future__ import annotations

import sys


def follow(events, *, lead: bool = True, step_label=lambda ev: ev.strategy):
    """Show ``events`` (``finetune.Event``s) as tqdm bars, a new bar whenever the phase changes (drawing, decoding,
    downloading in MiB, each strategy's steps), and return the last event's result. Ctrl-C closes the run (it
    stops and cleans up), says so and raises ``KeyboardInterrupt`` again. Only ``lead`` prints (rank 0 under
    torchrun); ``step_label``: the name of a step's bar."""
    from tqdm import tqdm
    bar, shown, final = None, None, None

    def progress(what: str, **kw) -> tqdm:
        nonlocal bar, shown
        if what != shown:
            if bar is not None:
                bar.close()
            bar, shown = tqdm(desc=what, disable=not lead, **kw), what
        return bar

    try:
        for ev in events:
            if ev.kind == "start" and lead:
                print(ev.message, file=sys.stderr)
            elif ev.kind == "prepare":
                unit = "MiB" if getattr(ev.message, "key", "") == "engine.downloading" else "img"
                progress(str(ev.message), total=ev.steps, unit=unit, leave=False).n = ev.step
                bar.refresh()
            elif ev.kind == "step":
                progress(step_label(ev), total=ev.epochs * ev.steps, unit="step").update(1)
                bar.set_postfix(epoch=f"{ev.epoch}/{ev.epochs}", loss=f"{ev.train_loss:.3f}", refresh=False)
            elif ev.kind == "epoch" and bar is not None:
                bar.set_postfix(epoch=f"{ev.epoch}/{ev.epochs}", loss=f"{ev.train_loss:.3f}",
                                val_acc=f"{ev.val_acc:.1%}")
            elif ev.kind in ("done", "cancelled"):
                final = ev.result
    except KeyboardInterrupt:
        events.close()
        if lead:
            print("cancelled", file=sys.stderr)
        raise
    finally:
        if bar is not None:
            bar.close()
    return final
