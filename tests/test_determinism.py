"""No request touches torch's global RNG: seeded work draws from its own generator, so two visitors running the
same seeded job at the same time each get exactly what one run alone gets."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from resnet.analysis import labs
from resnet.data import synthetic
from resnet.train.finetune import FinetuneConfig, run
from resnet.models.resnet import build_model
from resnet.analysis.summary import _measure, layer_table
from resnet.models.transfer import prepare
from resnet.preprocess import transform


# val_fraction: validated on 12 of the 48 images, not on the 400 of the separate series (what is compared is the same).
TINY = dict(arch="resnet18", dataset="synthetic", image_size=32, batch_size=16, epochs=1, synthetic_images=48,
            strategies="all,head,scratch", allow_download=False, seed=3, val_fraction=0.25)


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    """No pretrained weights anywhere: the backbone is the seeded random one (built by the engine itself)."""
    monkeypatch.delenv("RESNET_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))


def history(cfg: FinetuneConfig) -> dict:
    """Every number of the run's curves but the timings."""
    events = list(run(cfg))
    assert events[-1].kind == "done"
    return {name: {k: v for k, v in h.items() if k != "seconds"} for name, h in events[-1].result.history.items()}


def race(steps: int = 6) -> list:
    return [u.losses for u in labs.training_race(steps, batch_size=8, every=2, n_images=64,
                                                 nets=(("cifar20", False), ("cifar20", True)))]


def in_threads(fn, n: int = 2) -> list:
    """``fn()`` in ``n`` threads released together; their results in order (a failure in any is raised)."""
    out, errors, gate = [None] * n, [], threading.Barrier(n)

    def work(i):
        try:
            gate.wait()
            out[i] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    if errors:
        raise errors[0]
    return out


def test_seeded_builds_repeat_and_leave_the_global_rng_alone():
    before = torch.get_rng_state()
    a = build_model("resnet18", 10, generator=torch.Generator().manual_seed(1), zero_init_residual=True)
    b = build_model("resnet18", 10, generator=torch.Generator().manual_seed(1), zero_init_residual=True)
    n1, n2 = prepare("head", "resnet18", 4, generator=torch.Generator().manual_seed(2)), \
        prepare("head", "resnet18", 4, generator=torch.Generator().manual_seed(2))
    img = transform("decode", 48)(synthetic(8, image_size=48).train[0][0])
    views = [transform("train", 32, decoded=True, generator=torch.Generator().manual_seed(4))(img) for _ in range(2)]
    nets = [labs.lab_net("cifar20", r, setting=s, seed=5) for r in (True, False) for s in labs.SETTINGS]
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert torch.equal(n1.head.weight, n2.head.weight) and torch.equal(views[0], views[1])
    assert all(torch.isfinite(p).all() for net in nets for p in net.state_dict().values() if p.is_floating_point())
    # torchvision's init: He normal (fan_out) convs, BatchNorm 1 / 0 with fresh statistics, zero-init residual
    # branches, nn.Linear's own default for the fc.
    w = a.layer1[0].conv1.weight.detach()
    assert abs(float(w.std()) - (2 / (64 * 9)) ** 0.5) < 0.01
    assert torch.equal(a.bn1.weight, torch.ones(64)) and torch.equal(a.bn1.running_var, torch.ones(64))
    assert int(a.bn1.num_batches_tracked) == 0 and not a.bn1.running_mean.any() and not a.layer1[0].bn2.weight.any()
    assert float(a.fc.weight.abs().max()) <= 1 / 512 ** 0.5 and float(a.fc.weight.std()) > 0.01
    with torch.no_grad():  # the same function as a network built the library way and given these weights
        c = build_model("resnet18", 10)
        c.load_state_dict(a.state_dict())
        x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a.eval()(x), c.eval()(x))


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_a_run_and_the_labs_leave_the_global_rng_state_unchanged(no_weights, photos):
    before = torch.get_rng_state()
    history(FinetuneConfig(**dict(TINY, augmented_views=1, strategies="all,last,head,replace,scratch")))
    race(2)
    labs.gradient_flow(("cifar20", "resnet18"), ("none", "bn"), batch_size=4)
    labs.deep_network("cifar20", batch_size=2)
    labs.bias_cancellation()
    labs.block_cost.cache_clear()
    labs.block_cost("resnext50_32x4d")
    labs.conv_costs(64, 64, 8, 16)
    labs.image_pool([photos["lion"]], 8, size=64)
    _measure.cache_clear()
    layer_table("resnet50", 160)
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_two_seeded_fine_tunes_at_once_equal_one_alone(no_weights):
    cfg = FinetuneConfig(**TINY)
    alone = history(cfg)
    together = in_threads(lambda: history(cfg))
    assert together[0] == alone and together[1] == alone
    other = history(FinetuneConfig(**dict(TINY, seed=4)))
    assert other["scratch"]["train_loss"] != alone["scratch"]["train_loss"]  # the seed matters


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_two_training_races_at_once_equal_one_alone():
    alone = race()
    assert in_threads(race) == [alone, alone]


@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_a_stranger_seeding_torch_meanwhile_changes_nothing(no_weights):
    """Another thread reseeding and drawing from the global RNG all the time (as old code or a library might)."""
    cfg = FinetuneConfig(**dict(TINY, strategies="scratch"))
    alone = history(cfg)
    stop = threading.Event()

    def stranger():
        while not stop.is_set():
            torch.manual_seed(123)
            torch.rand(1000)
            nn.Linear(64, 64)

    t = threading.Thread(target=stranger)
    t.start()
    try:
        assert history(cfg) == alone
    finally:
        stop.set()
        t.join()
