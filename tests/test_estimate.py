"""resnet.train.estimate: the measured calibration and the arithmetic of a run's expected time (no timings asserted:
only that the figures are measured, positive, cached, and add up as the run's work does)."""
import dataclasses

import pytest

from resnet.train import estimate as est
from resnet.train.finetune import FinetuneConfig

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def cal():
    return est.calibrate("resnet18", 32)


def test_calibration_is_measured_and_cached(cal):
    for f in ("prepare_s", "frozen_eval_s", "rest_eval_s", "full_step_s", "last_step_s", "fc_step_s", "build_s"):
        assert getattr(cal, f) > 0, f
    assert cal.full_eval_s == cal.frozen_eval_s + cal.rest_eval_s
    assert (cal.arch, cal.image_size, cal.device) == ("resnet18", 32, "cpu")
    assert est.calibrate("resnet18", 32) is cal  # once per (arch, size, device)
    assert est.cached_calibration("resnet18", 32) is cal
    assert est.cached_calibration("resnet18", 80) is None  # never measured: the cached look-up does not measure


def test_estimate_counts_what_the_run_does(cal):
    cfg = FinetuneConfig(strategies=("all", "last", "head", "scratch"), epochs=2, image_size=32, batch_size=8,
                         per_class=10)
    e = est.estimate(cfg, cal)
    n_train, n_val, classes = est.dataset_counts(cfg.validated())
    assert (e.n_train, e.n_val, e.classes) == (n_train, n_val, classes) and n_train == 10 * classes
    assert set(e.parts) == {"prepare", "cache", "weights", "all", "last", "head", "scratch"}
    assert all(v > 0 for v in e.parts.values()) and e.seconds == pytest.approx(sum(e.parts.values()))
    # More epochs, more images or more strategies never take less time; the frozen ones are cheaper than `all`.
    assert est.estimate(dataclasses.replace(cfg, epochs=4), cal).seconds > e.seconds
    assert est.estimate(dataclasses.replace(cfg, per_class=25), cal).seconds > e.seconds
    assert e.parts["head"] < e.parts["last"] < e.parts["all"]
    assert e.parts["all"] == pytest.approx(e.parts["scratch"])


def test_counts_follow_the_data_set_and_per_class():
    counts = est.dataset_counts
    assert counts(FinetuneConfig(dataset="hymenoptera").validated())[::2] == (244, 2)
    assert counts(FinetuneConfig(dataset="hymenoptera", per_class=5).validated())[0] == 10
    assert counts(FinetuneConfig(dataset="flowers", per_class=10).validated())[::2] == (50, 5)
    assert counts(FinetuneConfig(dataset="/somewhere/upload.zip").validated()) is None  # not known before it is read
    assert est.estimate(FinetuneConfig(dataset="/somewhere/upload.zip"), measure=False) is None


def test_presets_are_valid_settings():
    assert est.DEFAULT_PRESET == "quick" and set(est.PRESETS) == {"quick", "thorough"}
    for values in est.PRESETS.values():
        FinetuneConfig(**{k: (v or None) if k == "lr" else v for k, v in values.items()}).validated()


def test_a_pretraining_estimate_counts_its_epochs_pictures_and_painting(cal):
    from resnet.train.pretrain import PretrainConfig
    cfg = PretrainConfig(image_size=32, epochs=2, per_class=20, num_classes=8)
    e = est.estimate_pretrain(cfg, cal)
    assert set(e.parts) == {"prepare", "train"} and all(v > 0 for v in e.parts.values())
    assert (e.n_train, e.n_val, e.classes) == (160, 80, 8) and e.seconds == pytest.approx(sum(e.parts.values()))
    longer = est.estimate_pretrain(dataclasses.replace(cfg, epochs=4), cal, paint_s=1e-3)
    assert longer.parts["train"] - cal.build_s == pytest.approx(2 * (e.parts["train"] - cal.build_s))  # per epoch
    # New pictures every epoch are painted every epoch (80 validation + 4 × 160), the same pictures once (80 + 160).
    assert longer.parts["prepare"] == pytest.approx(720e-3)
    same = est.estimate_pretrain(dataclasses.replace(cfg, epochs=4, fresh=False), cal, paint_s=1e-3)
    assert same.parts["prepare"] == pytest.approx(240e-3) and same.parts["train"] == longer.parts["train"]
    assert est.estimate_pretrain(dataclasses.replace(cfg, image_size=80), measure=False) is None  # nothing cached


def test_memory_and_time_follow_the_same_cache_plan():
    """Over ``cache_mb``, ``last`` recomputes its frozen part instead of caching it: the memory (``cost``) then holds
    no cache and does more work, and the time (``estimate``, from given figures: nothing timed) has no cache pass and
    prices ``last`` as a whole-network step, as the run does."""
    import torch
    cal = est.Calibration(arch="resnet18", image_size=64, device="cpu", prepare_s=1e-3, frozen_eval_s=1e-3,
                          frozen_eval_fixed_s=1e-3, rest_eval_s=1e-4, rest_eval_fixed_s=1e-4, full_step_s=1e-2,
                          full_step_fixed_s=1e-3, last_step_s=1e-3, last_step_fixed_s=1e-4, fc_step_s=1e-4,
                          build_s=0.1, seconds=0.0)
    cfg = FinetuneConfig(strategies=("last",), image_size=64, epochs=2, per_class=10, allow_download=False).validated()
    over = dataclasses.replace(cfg, cache_mb=1)  # the conv4_x cache of 440 rows at 64 px is about 7 MB
    cpu = torch.device("cpu")
    cached_cost, fallback_cost = cfg.cost(cpu), over.cost(cpu)
    cached_time, fallback_time = est.estimate(cfg, cal), est.estimate(over, cal)
    assert fallback_cost.data < cached_cost.data and fallback_cost.work > cached_cost.work
    assert "cache" in cached_time.parts and "cache" not in fallback_time.parts
    whole_net = est.estimate(dataclasses.replace(cfg, strategies=("all",)), cal).parts["all"]
    assert cached_time.parts["last"] < fallback_time.parts["last"] == pytest.approx(whole_net)
