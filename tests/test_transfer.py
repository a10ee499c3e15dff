"""The strategies train exactly what they claim; frozen weights and BatchNorm statistics never move."""
from __future__ import annotations

import pytest
import torch
import torchvision

from resnet import build_model
from resnet.train.finetune import FinetuneConfig, run
from resnet.models.transfer import (CACHE_POINTS, STRATEGIES, TransferNet, frozen_features, load_export, prepare,
                                    save_export)
from resnet.weights import read_state_dict

# The fast tier (conftest gives an unmarked test ``unit``), but for the tests marked ``slow`` below.


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


# Worked out by hand from the paper's table for 4 classes (and cross-checked against torchvision below):
# ResNet-18: conv5_x = 8,393,728; fc 512→4 = 2,052; 1000-way fc = 513,000; whole net = 11,689,512.
# ResNet-50: conv5_x = 14,964,736; fc 2048→4 = 8,196; 1000-way fc = 2,049,000; whole net = 25,557,032.
EXPECTED = {
    "resnet18": {"all": (11_178_564, 11_178_564), "last": (8_395_780, 11_178_564), "head": (4_004, 11_693_516),
                 "replace": (2_052, 11_178_564), "scratch": (11_178_564, 11_178_564)},
    "resnet50": {"all": (23_516_228, 23_516_228), "last": (14_972_932, 23_516_228), "head": (4_004, 25_561_036),
                 "replace": (8_196, 23_516_228), "scratch": (23_516_228, 23_516_228)},
}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_trainable_counts_are_exact(arch):
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        tv = torchvision.models.get_model(arch)
    feat = tv.fc.in_features
    base = n_params(tv) - n_params(tv.fc)
    cross_check = {"all": (base + feat * 4 + 4,) * 2, "last": (n_params(tv.layer4) + feat * 4 + 4, base + feat * 4 + 4),
                   "head": (4_004, n_params(tv) + 4_004), "replace": (feat * 4 + 4, base + feat * 4 + 4)}
    cross_check["scratch"] = cross_check["all"]
    for name in STRATEGIES:
        with torch.device("meta"):
            counts = prepare(name, arch, 4).param_counts()
        assert counts == EXPECTED[arch][name] == cross_check[name], name


def test_strategies_are_described_in_both_languages():
    assert list(STRATEGIES) == ["all", "last", "head", "replace", "scratch"]
    for s in STRATEGIES.values():
        for text in (s.title, s.description):  # from resnet/assets/i18n (stages.json)
            assert text("en") and any("\u4e00" <= ch <= "\u9fff" for ch in text("zh-CN"))
        assert s.description().count(". ") == 0 and s.description().endswith(".")
        assert s.to_dict()["title"] == {"en": s.title("en"), "zh-CN": s.title("zh-CN")}
    assert not STRATEGIES["scratch"].pretrained and all(STRATEGIES[n].pretrained for n in ("all", "last", "head"))


def test_split_points_are_the_models_own_points():
    """Each strategy's frozen part ends at a point of the model's walk, named as in the paper's table."""
    assert CACHE_POINTS == ("conv4_x", "avgpool", "fc")
    assert {s.cache_point for s in STRATEGIES.values()} == {None, *CACHE_POINTS}
    assert STRATEGIES["last"].frozen == ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
    assert STRATEGIES["replace"].frozen[-2:] == ("layer4", "avgpool") and STRATEGIES["head"].frozen[-1] == "fc"
    assert STRATEGIES["all"].frozen == STRATEGIES["scratch"].frozen == ()
    with pytest.raises(ValueError, match="cache point"):
        frozen_features(build_model("resnet18"), torch.zeros(1, 3, 32, 32), ("layer4_input",))


def test_frozen_modules_stay_in_eval_mode():
    net = prepare("last", "resnet18", 3).train()
    assert net.backbone.layer4.training and net.backbone.fc.training
    assert not any(m.training for name in ("conv1", "bn1", "layer1", "layer2", "layer3")
                   for m in getattr(net.backbone, name).modules())
    head = prepare("head", "resnet18", 3).train()
    assert head.head.training and not any(m.training for m in head.backbone.modules())
    assert [n for n, p in head.named_parameters() if p.requires_grad] == ["head.weight", "head.bias"]


@pytest.fixture(scope="module")
def checkpoint(weights_dir):
    return next(weights_dir.glob("resnet18-*.pth"))


@pytest.mark.parametrize("cache", [True, False], ids=["cached", "recomputed"])
@pytest.mark.slow  # trains or starts a process for a while: the slow tier
def test_frozen_weights_and_bn_statistics_are_bit_identical_after_training(checkpoint, cache):
    """Train last, head and replace for real (recomputing the frozen part runs it in every step), then compare."""
    cfg = FinetuneConfig(strategies=("last", "head", "replace"), epochs=1, image_size=32, batch_size=16,
                         synthetic_images=48, weights=str(checkpoint), cache_features=cache, allow_download=False)
    result = [ev for ev in run(cfg)][-1].result
    original = read_state_dict(checkpoint)
    for name, frozen in (("last", ("conv1", "bn1", "layer1", "layer2", "layer3")), ("head", None),
                         ("replace", None)):
        net = result.models[name]
        state = net.backbone.state_dict()
        keys = [k for k in state if k.split(".")[0] in (frozen or STRATEGIES[name].frozen)]
        assert any("running_mean" in k for k in keys) and any("num_batches_tracked" in k for k in keys)
        changed = [k for k in keys if not torch.equal(state[k], original[k])]
        assert not changed, f"{name}: {changed[:3]}"
        trained = net.head.weight if name == "head" else net.backbone.fc.weight
        assert trained.shape[0] == 4
    last = result.models["last"].backbone.state_dict()
    assert not torch.equal(last["layer4.0.conv1.weight"], original["layer4.0.conv1.weight"])
    assert not torch.equal(last["layer4.0.bn1.running_mean"], original["layer4.0.bn1.running_mean"])


def test_features_split_the_forward_pass_exactly():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64)
    state = build_model("resnet18").state_dict()
    backbone = build_model("resnet18").eval()
    backbone.load_state_dict(state)
    shared = frozen_features(backbone, x, CACHE_POINTS)
    assert torch.allclose(shared["fc"], backbone(x), atol=1e-5)
    for name in ("last", "head", "replace"):
        net = prepare(name, "resnet18", 5, backbone_state=state).eval()
        f = net.features(x)
        assert torch.allclose(f, shared[STRATEGIES[name].cache_point], atol=1e-6)
        assert torch.allclose(net.trainable(f), net(x), atol=1e-6)


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_export_is_a_plain_resnet_computing_the_same_function(name, tmp_path):
    torch.manual_seed(1)
    net = prepare(name, "resnet18", 3, backbone_state=build_model("resnet18").state_dict())
    if net.head is not None:
        torch.nn.init.normal_(net.head.weight, std=0.1)
    net.eval()
    x = torch.randn(2, 3, 64, 64)
    path = save_export(net, tmp_path / f"{name}.pt", classes=["a", "b", "c"], strategy=name, image_size=64,
                       pretrained=False)
    plain = build_model("resnet18", 3).eval()
    plain.load_state_dict(read_state_dict(path))  # what any script can do with the file
    loaded, meta = load_export(path)
    with torch.no_grad():
        expected = net(x)
        assert torch.allclose(plain(x), expected, atol=1e-4)
        assert torch.allclose(loaded(x), expected, atol=1e-4)
    assert meta["classes"] == ["a", "b", "c"] and meta["strategy"] == name and meta["num_classes"] == 3
    assert loaded.categories == ["a", "b", "c"]
    assert isinstance(net, TransferNet) and type(net.export()).__name__ == "ResNet"
