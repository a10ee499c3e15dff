"""The fine-tuning engine: limits, cached = recomputed features, learning, determinism, cancel, export, CLI."""
from __future__ import annotations

import copy
import dataclasses
import gc
import json
import math
import threading
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resnet import WeightsUnavailable, build_model, classify
from resnet.data import DatasetError, load_dataset, synthetic, targets
from resnet.train.finetune import LIMITS, FinetuneConfig, RunResult, check_setting, run
from resnet.ui.figures.training import training_figure
from resnet.preprocess import transform
from resnet.models.transfer import STRATEGIES, TransferNet, frozen_features, load_export, prepare
from resnet.weights import read_state_dict


TINY = dict(image_size=32, batch_size=16, allow_download=False)
# Runs whose validation set is not what they check: the synthetic images split 3:1, not 400 separate ones to validate.
SMALL_VAL = dict(TINY, val_fraction=0.25)


@pytest.fixture(scope="module")
def checkpoint(weights_dir):
    """torchvision's ResNet-18, seeded random init, standing in for ImageNet weights (conftest makes it)."""
    return next(weights_dir.glob("resnet18-*.pth"))


def last_event(cfg, **kw):
    events = list(run(cfg, **kw))
    assert events[0].kind == "start" and events[-1].kind in ("done", "cancelled")
    return events


@pytest.fixture(scope="module")
def frozen_run(checkpoint):
    """One short run of the three frozen strategies, shared by several tests."""
    cfg = FinetuneConfig(strategies="head,replace,last", epochs=2, synthetic_images=64, weights=str(checkpoint), **TINY)
    return last_event(cfg)


# ---------------------------------------------------------------- limits

@pytest.mark.parametrize("name,bad", [("epochs", 0), ("epochs", 101), ("epochs", 2.5), ("image_size", 31),
                                      ("image_size", 513), ("batch_size", 0), ("batch_size", 257),
                                      ("lr", 0.0), ("lr", -1e-3), ("lr", math.nan), ("lr", math.inf), ("lr", 2.0)])
def test_limits_reject_out_of_range_settings(name, bad):
    with pytest.raises(ValueError) as e:
        check_setting(name, bad)
    msg = str(e.value)
    assert msg.endswith(".") and msg.count(". ") == 0 and str(LIMITS[name][1]).rstrip("0").rstrip(".") in msg
    with pytest.raises(ValueError):
        FinetuneConfig(**{name: bad}).validated()


def test_limits_accept_their_bounds_and_config_checks_names():
    for name, (lo, hi) in LIMITS.items():
        if name != "lr":
            check_setting(name, lo)
        check_setting(name, hi)
    check_setting("lr", 1e-4)
    assert FinetuneConfig(strategies=" head , all ,head").validated().strategies == ("head", "all")
    for bad, match in (({"strategies": "head,bogus"}, "Unknown strategy"), ({"strategies": ""}, "at least one"),
                       ({"arch": "vgg16"}, "Unknown architecture"),
                       ({"batch_size": 1, "image_size": 32}, "batch size of 2")):
        with pytest.raises(ValueError, match=match):
            FinetuneConfig(**bad).validated()


# ---------------------------------------------------------------- caching

def test_cached_and_recomputed_features_match_and_give_the_same_first_step_gradients(checkpoint):
    state = read_state_dict(checkpoint)
    ds = synthetic(12, image_size=40, seed=5)
    dec, ev = transform("decode", 32), transform("eval", 32, decoded=True)
    x = torch.stack([ev(dec(ds.train[i][0])) for i in range(len(ds.train))])
    y = torch.tensor(targets(ds.train))
    backbone = build_model("resnet18")
    backbone.load_state_dict(state)
    points = tuple(STRATEGIES[n].cache_point for n in ("last", "replace", "head"))
    cache = frozen_features(backbone.eval(), x, points)  # the engine's one pass
    for name in ("last", "head", "replace"):
        torch.manual_seed(0)
        a = prepare(name, "resnet18", 4, backbone_state=state).train()
        b = copy.deepcopy(a)
        point = STRATEGIES[name].cache_point
        recomputed = torch.cat([a.features(x[i:i + 5]) for i in range(0, len(x), 5)])  # other batch shapes
        assert torch.allclose(recomputed, cache[point], rtol=1e-4, atol=1e-5), name
        F.cross_entropy(a.trainable(cache[point]), y).backward()
        F.cross_entropy(b(x), y).backward()
        ga = [p.grad for p in a.trainable_parameters()]
        gb = [p.grad for p in b.trainable_parameters()]
        assert len(ga) == len(gb) > 0
        for u, v in zip(ga, gb):
            assert torch.allclose(u, v, rtol=1e-3, atol=1e-6), name


def test_cached_validation_agrees_with_the_full_forward_pass(frozen_run):
    """The engine's val accuracy (computed on cached features) equals the exported model's on the images."""
    result = frozen_run[-1].result
    ds = load_dataset("synthetic", synthetic_images=64, image_size=32, seed=0)  # the engine's data: 400 separate val
    assert len(ds.val) == result.dataset["n_val"] == 400 and len(ds.train) == result.dataset["n_train"] == 64
    x = torch.stack([transform("eval", 32)(ds.val[i][0]) for i in range(len(ds.val))])
    y = torch.tensor(targets(ds.val))
    for name in ("head", "replace", "last"):
        with torch.no_grad():
            acc = float((result.models[name].export()(x).argmax(1) == y).float().mean())
        assert acc == pytest.approx(result.summary(name).final_val_acc, abs=1.5 / len(y)), name
        assert result.summary(name).cached_features
    assert any("computed once" in str(n) and "eval transform" in str(n) for n in result.notes)


# ---------------------------------------------------------------- learning, determinism, labels

@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_short_run_clearly_beats_chance_for_all_and_scratch(checkpoint):
    """The plain synthetic set (same shapes, places, sizes and angles; white on black): random weights learn it in
    a few dozen steps. ``checkpoint`` stands in for pretrained weights, so both start from random weights here."""
    ds = synthetic(480, image_size=32, plain=True)
    cfg = FinetuneConfig(dataset=ds, strategies="all,scratch", epochs=5, lr=1e-3, weights=str(checkpoint), **TINY)
    result = last_event(cfg)[-1].result
    chance = 1 / len(result.classes)
    for name in ("all", "scratch"):
        s = result.summary(name)
        assert s.best_val_acc >= chance + 0.35, (name, s.best_val_acc, result.history[name]["val_acc"])
        assert s.trainable_params == s.total_params == 11_178_564
    assert result.summary("all").pretrained and not result.summary("scratch").pretrained


def test_precise_bn_sets_running_statistics_from_the_current_weights():
    """After an epoch, the BatchNorm layers that train get the statistics of the current weights on training
    images; frozen ones keep theirs, and each layer gets its own momentum back."""
    from resnet.train.engine import precise_bn
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 32, 32, generator=gen)
    for name in ("scratch", "last"):
        net = prepare(name, "resnet18", 4, generator=gen).train()
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(5.0)
        net.backbone.layer4[0].bn1.momentum = 0.3
        assert precise_bn(net, x, torch.device("cpu"), size=32)
        b = net.backbone
        conv1_out = b.conv1(x)
        if name == "scratch":
            assert torch.allclose(b.bn1.running_mean, conv1_out.mean((0, 2, 3)), atol=1e-5)
            assert torch.allclose(b.bn1.running_var, conv1_out.var((0, 2, 3)), rtol=1e-3)
        else:  # the stem and conv2_x–conv4_x are frozen: untouched
            assert torch.equal(b.bn1.running_mean, torch.full_like(b.bn1.running_mean, 5.0))
        assert not torch.equal(b.layer4[1].bn2.running_mean, torch.full_like(b.layer4[1].bn2.running_mean, 5.0))
        assert net.backbone.layer4[0].bn1.momentum == 0.3 and net.training
        assert all(m.momentum == 0.1 for n, m in net.named_modules()
                   if isinstance(m, torch.nn.BatchNorm2d) and n != "backbone.layer4.0.bn1")


def test_runs_are_deterministic(checkpoint):
    cfg = FinetuneConfig(strategies="head,replace", epochs=2, synthetic_images=48, weights=str(checkpoint), **SMALL_VAL)
    a, b = last_event(cfg)[-1].result, last_event(cfg)[-1].result
    for name in ("head", "replace"):
        assert a.history[name]["val_loss"] == b.history[name]["val_loss"]
        assert a.history[name]["train_loss"] == b.history[name]["train_loss"]


def test_events_carry_progress_and_serialise(frozen_run):
    kinds = [e.kind for e in frozen_run]
    assert kinds[0] == "start" and "prepare" in kinds and kinds[-1] == "done"
    steps = [e for e in frozen_run if e.kind == "step"]
    epochs = [e for e in frozen_run if e.kind == "epoch"]
    assert {e.strategy for e in steps} == {"head", "replace", "last"} and len(epochs) == 6
    for e in epochs:
        assert 0 <= e.val_acc <= 1 and e.val_loss > 0 and e.images_per_s > 0 and e.seconds > 0
    done = [e for e in frozen_run if e.kind == "strategy_done"]
    assert [e.summary.strategy for e in done] == ["head", "replace", "last"]
    text = json.dumps([e.to_dict() for e in frozen_run])
    result = json.loads(text)[-1]["result"]
    assert [s["strategy"] for s in result["strategies"]] == ["head", "replace", "last"]
    assert set(result["history"]["head"]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"}


def test_without_pretrained_weights_every_strategy_is_labelled_random(monkeypatch, tmp_path):
    monkeypatch.delenv("RESNET_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    events = last_event(FinetuneConfig(strategies="head,replace", epochs=1, synthetic_images=32, **SMALL_VAL))
    result = events[-1].result
    assert not result.pretrained and all(not s.pretrained for s in result.summaries)
    assert "random" in str(events[0].message) and any("random weights" in str(n) for n in result.notes)
    assert result.to_dict()["strategies"][0]["pretrained"] is False


def test_an_explicit_missing_checkpoint_is_an_error(tmp_path):
    with pytest.raises(WeightsUnavailable):
        list(run(FinetuneConfig(strategies="head", weights=str(tmp_path / "none.pt"), **TINY)))


# ---------------------------------------------------------------- cancel

def test_cancel_event_stops_within_one_step(checkpoint):
    cancel = threading.Event()
    cfg = FinetuneConfig(strategies="all,head", epochs=3, synthetic_images=96, weights=str(checkpoint), **SMALL_VAL)
    after = []
    for ev in run(cfg, cancel=cancel):
        if after or (ev.kind == "step" and ev.step == 2):
            after.append(ev)
            cancel.set()
    assert [e.kind for e in after] == ["step", "cancelled"]
    assert after[-1].result.cancelled and after[-1].result.summaries == []


def test_closing_the_iterator_stops_and_frees(checkpoint, monkeypatch):
    gc.collect()
    before = sum(type(o) is TransferNet for o in gc.get_objects())
    forward, passes = TransferNet.forward, []
    monkeypatch.setattr(TransferNet, "forward", lambda self, x: passes.append(1) or forward(self, x))
    events = run(FinetuneConfig(strategies="all", epochs=5, synthetic_images=96, weights=str(checkpoint), **SMALL_VAL))
    for ev in events:
        if ev.kind == "step":
            break
    passes_before_close = len(passes)
    events.close()
    assert events.gi_frame is None and len(passes) == passes_before_close  # stopped: not one more forward pass
    monkeypatch.undo()
    gc.collect()
    assert sum(type(o) is TransferNet for o in gc.get_objects()) == before


# ---------------------------------------------------------------- export

def test_exported_model_reloads_and_predicts_the_same(frozen_run, tmp_path):
    result: RunResult = frozen_run[-1].result
    images = [synthetic(8, image_size=32, seed=9).val[i][0] for i in range(2)]
    x = torch.stack([transform("eval", 32)(im) for im in images])
    for name in ("head", "last"):
        path = result.export(name, tmp_path / f"{name}.pt")
        model, meta = load_export(path)
        assert meta == {"arch": "resnet18", "num_classes": 4, "classes": result.classes, "strategy": name,
                        "image_size": 32, "pretrained": True}
        with torch.no_grad():
            assert torch.allclose(model(x), result.models[name].eval()(x), atol=1e-4)
        plain = build_model("resnet18", 4).eval()
        plain.load_state_dict(read_state_dict(path))
        top = classify(model, images[0], top_k=4)
        assert {label for label, _ in top} == set(result.classes)
        assert top[0][0] == result.classes[int(result.models[name](x[:1]).argmax())]
    with pytest.raises(ValueError, match="No trained model"):
        result.export("all", tmp_path / "x.pt")


# ---------------------------------------------------------------- figure and CLI

def test_training_figure(frozen_run):
    result = frozen_run[-1].result
    fig = training_figure(result.history, chance=0.25, labels={"epoch": "Epoche"})
    acc, loss = fig.axes
    assert len(acc.lines) == 4 and len(loss.lines) == 6 and acc.get_xlabel() == "Epoche"
    fig.canvas.draw()
    partial = {"all": {"epoch": [1], "val_acc": [0.5], "val_loss": [1.0], "train_loss": [1.2]}, "head": {"epoch": []}}
    assert len(training_figure(partial).axes[0].lines) == 1


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_cli_finetune_writes_the_summary(checkpoint, tmp_path, capsys):
    from resnet.cli import main
    out = tmp_path / "summary.json"
    rc = main(["finetune", "--dataset", "synthetic", "--strategies", "head,replace", "--epochs", "1",
               "--image-size", "32", "--batch-size", "32", "--weights", str(checkpoint), "--json", str(out),
               "--save-dir", str(tmp_path / "models")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "head" in printed and "replace" in printed and "4,004" in printed
    summary = json.loads(out.read_text())
    rows = {s["strategy"]: s for s in summary["strategies"]}
    assert rows["head"]["trainable_params"] == 4_004 and rows["replace"]["trainable_params"] == 2_052
    for row in rows.values():
        assert row["pretrained"] is True and 0 <= row["best_val_acc"] <= 1 and row["seconds"] > 0
        assert {"final_val_acc", "total_params"} <= row.keys()
    assert load_export(tmp_path / "models" / "resnet18-head.pth")[1]["strategy"] == "head"
    assert main(["finetune", "--epochs", "0"]) == 2
    assert "epochs must be a whole number from 1 to 100" in capsys.readouterr().err


@pytest.mark.parametrize("preset", ["quick", "thorough"])
def test_the_command_line_s_fine_tune_is_the_page_s_preset_and_a_flag_overrides_it(preset):
    """``python -m resnet finetune`` (``--preset quick`` by default) runs what the page's preset runs: the two parsed
    configurations are equal, field by field; any flag given replaces that one value."""
    from resnet.cli import parser
    from resnet.train.finetune import config_from_args
    from resnet.ui.tabs import finetune_request as tab

    def cli(*flags):
        return config_from_args(parser().parse_args(["finetune", *flags]))
    page = tab.FinetuneRequest("synthetic", None, *tab.preset_values(preset)).config()  # what Start sends
    assert cli(*(["--preset", preset] if preset != "quick" else [])) == page
    assert cli("--preset", preset, "--epochs", "3", "--per-class", "all", "--strategies", "head") == \
        dataclasses.replace(page, epochs=3, per_class=None, strategies=("head",))
    assert cli("--preset", preset, "--image-size", "96", "--lr", "0.01") == \
        dataclasses.replace(page, image_size=96, lr=0.01)
    assert tab.matching_preset(*tab.preset_values(preset)) == preset  # the page shows it as that preset


def test_a_dataset_too_big_to_decode_is_refused_before_decoding():
    """Many small images asked for at a large size: refused with a sentence, nothing decoded."""
    cfg = FinetuneConfig(strategies="head", epochs=1, synthetic_images=40, image_size=512, batch_size=8,
                         allow_download=False, max_decoded_mb=10)
    with pytest.raises(ValueError, match="over this server's limit of 10 MB"):
        list(run(cfg))


# ---------------------------------------------------------------- damaged images inside a good data set

def _write_folder(root, layout: dict[str, bytes]):
    for name, payload in layout.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
    return root


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_damaged_images_are_skipped_counted_and_the_split_refilled(checkpoint, tmp_path):
    """A file whose header looks fine but which cannot be decoded is skipped and named in the notes. Where the
    engine made the split and a class lost its only validation image, a training image of that class moves over;
    where the split was given in folders, a class left without images is a clear error."""
    import corpus
    truncated = corpus.image_bytes()["truncated.jpg"]
    good = {f"{c}/{i}.png": corpus.class_image(k, i) for k, c in enumerate(("ants", "bees")) for i in range(3)}
    root = _write_folder(tmp_path / "auto", {**good, "ants/zz_broken.jpg": truncated})
    ds = load_dataset(str(root), val_fraction=0.25, seed=5)
    assert [Path(ds.val.dataset.samples[i][0]).name for i in ds.val.indices][0] == "zz_broken.jpg"  # ants' only
    cfg = FinetuneConfig(dataset=str(root), strategies="head", epochs=1, val_fraction=0.25, seed=5,
                         weights=str(checkpoint), **TINY)
    result = last_event(cfg)[-1].result
    assert result.dataset["damaged"] == 1 and (result.dataset["n_train"], result.dataset["n_val"]) == (4, 2)
    note = next(str(n) for n in result.notes if str(n).startswith("Skipped 1 damaged image"))
    assert "zz_broken.jpg" in note and "damaged or truncated" in note
    # The split is still ours when per_class keeps a sample of its training side (the page's default is 10).
    for per_class, n_train in ((10, 4), (2, 3)):
        result = last_event(dataclasses.replace(cfg, per_class=per_class))[-1].result
        assert (result.dataset["n_train"], result.dataset["n_val"]) == (n_train, 2), per_class

    given = {f"train/{k}": v for k, v in good.items()}
    given |= {"val/ants/broken.jpg": truncated, "val/bees/0.png": corpus.class_image(1, 9)}
    root = _write_folder(tmp_path / "given", given)
    cfg = FinetuneConfig(dataset=str(root), strategies="head", epochs=1, weights=str(checkpoint), **TINY)
    with pytest.raises(DatasetError, match=r"class 'ants' has no validation images left.*broken\.jpg"):
        last_event(cfg)
