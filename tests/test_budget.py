"""Every job's memory and work bounded before it starts: estimates checked against real measurements on small
cases, every architecture at its largest settings refused in under a second without allocating anything, the
app's defaults and the labs' page settings admitted."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnet.train.finetune as finetune
import resnet.train.finetune_data as finetune_data
import resnet.train.finetune_run as finetune_run
from resnet import budget, profile
from resnet.analysis import labs
from resnet.analysis.labs import cost as lab_cost
from resnet.budget import admit
from resnet.errors import BudgetExceeded
from resnet.train.finetune import LIMITS, FinetuneConfig
from resnet.preprocess import to_rgb
from resnet.models.resnet import ARCHS, build_model


ROOT = Path(__file__).resolve().parent.parent
LARGEST = dict(image_size=LIMITS["image_size"][1], batch_size=LIMITS["batch_size"][1], allow_download=False)


@pytest.fixture
def space(monkeypatch):
    """A 16 GB CPU Space: the operator's memory budget set, the default work budget."""
    monkeypatch.setenv("RESNET_MEMORY_BUDGET_MB", "16000")
    monkeypatch.delenv("RESNET_WORK_BUDGET_TMACS", raising=False)


def a_sentence(msg: str) -> bool:
    return msg.endswith(".") and "\n" not in msg and "/" not in msg and "Errno" not in msg


# ---------------------------------------------------------------- estimates against measurements

def saved_by_autograd(arch: str, size: int, batch: int) -> int:
    """Bytes of activations autograd really keeps for one training forward pass (parameters left out)."""
    model = build_model(arch, generator=torch.Generator().manual_seed(0)).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(seen.values())


@pytest.mark.parametrize("arch,size,batch", [("resnet18", 64, 4), ("resnet18", 128, 8), ("resnet50", 96, 4)])
def test_activation_estimate_is_within_a_factor_of_two_of_what_autograd_keeps(arch, size, batch):
    estimate = batch * profile.resnet_profile(arch, size).total("saved") * 4  # fp32
    real = saved_by_autograd(arch, size, batch)
    assert 0.5 <= real / estimate <= 1.0, (real / 2**20, estimate / 2**20)  # a slight over-count, never under half


PEAK = r"""
import json, os, sys
from resnet import budget
from resnet.train.finetune import FinetuneConfig, run

def rss(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) * 1024

cfg = FinetuneConfig(**json.loads(sys.argv[1]))
estimate = budget.admit(cfg)
base = rss("VmRSS")
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak, so that it counts this run only
except OSError:
    pass
events = list(run(cfg))
assert events[-1].kind == "done"
print(json.dumps({"estimate": estimate.memory, "peak": rss("VmHWM") - base}))
"""


@pytest.mark.parametrize("settings", [dict(arch="resnet18", image_size=64, batch_size=4, strategies="scratch",
                                           synthetic_images=32),
                                      dict(arch="resnet18", image_size=96, batch_size=32, strategies="all,last,head",
                                           synthetic_images=96)])
@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_a_small_runs_peak_memory_is_within_a_factor_of_two_of_its_estimate(settings, tmp_path):
    cfg = dict(settings, epochs=1, allow_download=False)
    env = {"PYTHONPATH": str(ROOT), "TORCH_HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
           **{k: os.environ[k] for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY") if k in os.environ}}  # conftest's
    out = subprocess.run([sys.executable, "-c", PEAK, json.dumps(cfg)], capture_output=True, text=True, timeout=300,
                         env=env, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.5 <= r["peak"] / r["estimate"] <= 2, {k: v / 2**20 for k, v in r.items()}


def test_work_is_steps_times_multiply_adds_times_three():
    cfg = FinetuneConfig(strategies="scratch", epochs=2, image_size=64, synthetic_images=100).validated()
    e = cfg.cost(torch.device("cpu"))
    macs = profile.resnet_profile("resnet18", 64).total("macs")
    n_train, n_val = 100, 400  # the synthetic set: every image trains, 100 validation images per class beside
    assert e.work == 2 * (n_train * 3 + n_val + 64) * macs  # training, validation, the BatchNorm re-estimate


# ---------------------------------------------------------------- the machine's budget

def test_the_budget_comes_from_the_machine_unless_the_operator_sets_it(monkeypatch):
    monkeypatch.delenv("RESNET_MEMORY_BUDGET_MB", raising=False)
    monkeypatch.delenv("RESNET_WORK_BUDGET_TMACS", raising=False)
    b = budget.machine_budget("cpu")
    assert b.memory == b.host and abs(b.memory - 0.6 * budget.available_ram()) < 0.05 * b.memory + 2**28
    assert b.work == 60e12
    monkeypatch.setenv("RESNET_MEMORY_BUDGET_MB", "1000")
    monkeypatch.setenv("RESNET_WORK_BUDGET_TMACS", "2.5")
    b = budget.machine_budget("cpu")
    assert b.memory == 1000 * 2**20 and b.work == 2.5e12
    monkeypatch.setenv("RESNET_MEMORY_BUDGET_MB", "lots")  # a typo falls back to the machine's figure
    assert budget.machine_budget("cpu").memory > 2**28


# ---------------------------------------------------------------- fine-tuning

def fail_if_called(*a, **k):
    raise AssertionError("loaded data or weights before the budget check")


def take_suggestion(cfg: FinetuneConfig, msg: str) -> FinetuneConfig:
    """The first setting the refusal offers, applied: "batch size 8", "192 px", "3 epochs", "1 epoch at 96 px"."""
    m = re.search(r"; (?:batch size (\d+)|(\d+) px|(\d+) epochs?)(?: at (\d+) px)?", msg)
    assert m, msg
    change = {key: int(g) for key, g in zip(("batch_size", "image_size", "epochs", "image_size"), m.groups()) if g}
    return FinetuneConfig(**{**cfg.to_dict(), "dataset": cfg.dataset, **change})


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("dataset", ["synthetic", "upload"])
def test_every_arch_at_its_largest_settings_is_refused_at_once_before_any_loading(arch, dataset, space, monkeypatch,
                                                                                 tmp_path):
    monkeypatch.setattr(finetune_data, "load_dataset", fail_if_called)
    monkeypatch.setattr(finetune_run, "_backbone_state", fail_if_called)
    profile.resnet_profile.cache_clear()  # cold: the meta pass runs too (its time is bench/budget_bench.py's)
    profile._meta_resnet.cache_clear()
    cfg = FinetuneConfig(arch=arch, dataset="synthetic" if dataset == "synthetic" else str(tmp_path / "x.zip"),
                         strategies="all,last,head,replace,scratch", epochs=LIMITS["epochs"][1], **LARGEST)
    with pytest.raises(BudgetExceeded) as e:  # refused before any loading: both loaders fail if called
        next(finetune.run(cfg))
    msg = str(e.value)
    offers = "fits" in msg or "brings it under this limit" in msg  # the latter: another limit may speak next
    assert a_sentence(msg) and offers and ("GB" in msg or "MB" in msg or "TMACs" in msg), msg
    if dataset == "upload":  # the count is not known yet: the refusal is about one training step
        assert "one training step" in msg and ARCHS[arch].title in msg
    # What the message offers is admitted (for an upload: its per-step part, the rest is checked once listed).
    smaller = take_suggestion(cfg, msg)
    while True:  # a suggestion fixes the limit it names; another limit may then speak, with its own suggestion
        try:
            admit(smaller)
            break
        except BudgetExceeded as again:
            assert str(again) != msg
            msg, smaller = str(again), take_suggestion(smaller, str(again))


def test_resnext101_at_512_px_and_batch_256_never_reaches_the_training_loop(space, monkeypatch):
    monkeypatch.setattr(finetune_run, "_train", fail_if_called)
    cfg = FinetuneConfig(arch="resnext101_32x8d", strategies="all", **LARGEST)
    with pytest.raises(BudgetExceeded, match=r"ResNeXt-101 32×8d at 512 px with batch size 256 would need about "
                                             r"\d+ GB of memory for one training step, over this server's budget"):
        list(finetune.run(cfg))


def test_the_app_defaults_are_admitted(space):
    e = admit(FinetuneConfig(), device="cpu")  # ResNet-18, 128 px, batch 32, all/last/head, 5 epochs
    assert e.memory < 2 * 2**30 and 1e12 < e.work < 15e12
    for arch in ARCHS:  # every depth at the page's default size and batch
        admit(FinetuneConfig(arch=arch), device="cpu")


def test_an_upload_is_checked_again_once_its_size_is_known(space):
    cfg = FinetuneConfig(dataset="/nowhere/upload.zip", image_size=224, batch_size=32)
    assert admit(cfg).data == 0  # the per-step part only
    admit(cfg.with_counts(400, 100))
    with pytest.raises(BudgetExceeded, match="limit of 1,536 MB; .*fits"):
        admit(cfg.with_counts(4000, 1000))  # a zip of many small files at a large size
    with pytest.raises(BudgetExceeded, match=r"TMACs of computation, over this server's budget of 60 TMACs; \d epochs"):
        admit(FinetuneConfig(dataset=cfg.dataset, arch="resnet50", image_size=160, epochs=10,
                             strategies="all").with_counts(2400, 600))


def test_bad_settings_from_the_api_are_refused_with_a_sentence():
    for bad in (dict(batch_size="256"), dict(image_size=10**9), dict(synthetic_images=10**7), dict(epochs=None)):
        with pytest.raises(ValueError) as e:
            admit(FinetuneConfig(**bad))
        assert not isinstance(e.value, BudgetExceeded) and a_sentence(str(e.value))


# ---------------------------------------------------------------- labs

LAB_REFUSALS = {  # the lab at its largest settings; what its refusal offers, and that setting checked
    "gradient flow": (lambda: labs.gradient_flow(list(labs.LAB_NETS), list(labs.SETTINGS), batch_size=256),
                      r"batch size (\d+)", lambda v: labs.GradientFlowJob(labs.LAB_NETS, list(labs.SETTINGS), v)),
    "training race": (lambda: next(labs.training_race(5000, batch_size=256, n_images=4096)),
                      r"(\d+) steps", lambda v: labs.RaceJob(v, 256, n_images=4096)),
    "ResNet-1202": (lambda: labs.deep_network("cifar1202", batch_size=32, image_size=128),
                    r"batch size (\d+)", lambda v: labs.DeepNetworkJob("cifar1202", v, 128, "bn")),
    "BatchNorm pool": (lambda: labs.image_pool(["never opened.jpg"], 256, size=512),
                       r"a pool of (\d+)", lambda v: labs.BNPoolJob(("never opened.jpg",), v, 512)),
}


@pytest.mark.parametrize("lab", list(LAB_REFUSALS))
def test_each_lab_at_its_largest_settings_is_refused_at_once(lab, space):
    lab_cost.lab_profile.cache_clear()
    lab_cost.cifar_profile.cache_clear()
    run_lab, offer, job = LAB_REFUSALS[lab]
    with pytest.raises(BudgetExceeded) as e:
        run_lab()  # refused before it draws, builds or opens anything ("never opened.jpg" does not exist)
    msg = str(e.value)
    assert a_sentence(msg) and "fits" in msg, msg
    budget.admit(job(int(re.search(offer + " fits", msg).group(1))))  # what it offers is admitted


def test_the_labs_page_settings_are_admitted(space):
    """The Labs tab's largest values (resnet/ui/tabs/labs.py), checked without running the labs."""
    flow = labs.GradientFlowJob(["cifar20", "cifar56", "cifar110", "resnet18", "resnet34"], ["none", "bn"], 64)
    budget.admit(flow)
    assert flow.validated().sizes() == {"cifar20": 32, "cifar56": 32, "cifar110": 32, "resnet18": 64, "resnet34": 64}
    budget.admit(labs.RaceJob(600, 64, nets=labs.RACE_NETS, n_images=512, widths=labs.RACE_WIDTHS))
    budget.admit(labs.DeepNetworkJob("cifar1202", 4, 32, "bn"))
    budget.admit(labs.BNPoolJob(("photo",) * 6, 128, 128))
    assert labs.conv_costs(4096, 4096, 4096, 512)[0].macs == 9 * 4096 * 4096 * 512 * 512  # meta: no memory


def race(steps, batch, nets, n_images, widths) -> tuple:
    """The race's settings as ``budget.admit`` checks them: its racers."""
    job = labs.RaceJob(steps, batch, nets=nets, n_images=n_images, widths=widths)
    budget.admit(job)
    return job.validated().nets


def test_lab_lists_from_the_api_are_collapsed_capped_and_checked():
    flow = labs.GradientFlowJob(["cifar20", "cifar20", " cifar56"], "bn,bn,none", 8)
    budget.admit(flow)
    assert flow.validated().nets == ("cifar20", "cifar56") and flow.validated().lab_settings == ("bn", "none")
    bad = [(["cifar20"] * 1000, ["bn"], 8), (["vgg16"], ["bn"], 8), ([], ["bn"], 8), ({"a": 1}, ["bn"], 8),
           (["cifar20"], ["bn"], 1), (["cifar20"], ["bn"], True), (["cifar20"], ["bn"], "8"), ([3], ["bn"], 8)]
    for args in bad:
        with pytest.raises(ValueError) as e:
            budget.admit(labs.GradientFlowJob(*args))
        assert a_sentence(str(e.value)), str(e.value)
    with pytest.raises(ValueError):
        next(labs.training_race(10, nets=[("cifar20", True)] * 9 + [("bogus", True)]))
    assert race(10, 8, [("cifar20", True)] * 20, 64, (8, 16, 32)) == (("cifar20", True),)
    one = [("cifar20", True)]
    for args in ((10, 8, "cifar20", 64, (8, 16, 32)), (10, 8, one, 64, (8, 16)), (10, 8, one, 10**9, (8, 16, 32)),
                 (float("nan"), 8, one, 64, (8, 16, 32))):
        with pytest.raises(ValueError):
            race(*args)
    with pytest.raises(ValueError, match="learning rate"):
        next(labs.training_race(10, lr=float("nan")))
    with pytest.raises(ValueError, match="divide"):
        budget.admit(labs.GroupConvJob(4096, 4096, 3, 512))


# ---------------------------------------------------------------- wide images

@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_wide_images_are_converted_without_a_float64_copy(mode):
    h, w = 1500, 1000
    ramp = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
    a = {"I;16": (ramp * 65535).astype(np.uint16), "I": (ramp * 1e7 - 5).astype(np.int32), "F": ramp * 3 - 1}[mode]
    if mode == "F":
        a[0, :3] = (np.nan, np.inf, -np.inf)
    img = Image.fromarray(a, mode="I;16") if mode == "I;16" else Image.fromarray(a)
    assert img.mode == mode
    tracemalloc.start()  # numpy's arrays are traced (PIL's own image memory is not)
    try:
        rgb = to_rgb(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 6 * h * w, peak / (h * w)  # a float64 copy alone is 8 bytes a pixel (the old way used 10–12)
    out = np.asarray(rgb)
    assert out.shape == (h, w, 3) and out[1:].min() == 0 and out.max() == 255
    assert abs(int(out[h // 2, w // 2, 0]) - 128) <= 1  # the middle of the ramp is mid grey


def test_an_offer_that_meets_only_one_limit_says_so(monkeypatch):
    """Memory and work both over: a batch size fixes the memory, never the work, so it is not called "fits"; an
    offer that is called "fits" is admitted."""
    from resnet.train.finetune import FinetuneConfig
    monkeypatch.setenv("RESNET_MEMORY_BUDGET_MB", "12000")
    monkeypatch.setenv("RESNET_WORK_BUDGET_TMACS", "60")
    five = FinetuneConfig(dataset="synthetic", arch="resnext101_32x8d", strategies=("all", "last", "head", "replace", "scratch"), epochs=100,
                          image_size=512, batch_size=256)
    with pytest.raises(BudgetExceeded, match=r"batch size \d+ .*brings it under this limit\.$"):
        budget.admit(five)
    # Fewer strategies and epochs: an image size alone then fixes both limits (the built-in set validates on 400
    # images every epoch, so 100 epochs stay over the work limit at any size).
    three = dataclasses.replace(five, strategies=("all", "last", "head"), epochs=30)
    with pytest.raises(BudgetExceeded) as e:
        budget.admit(three)
    size = re.search(r"; (\d+) px fits\.$", str(e.value))
    assert size, str(e.value)
    assert budget.admit(dataclasses.replace(three, image_size=int(size.group(1))))
