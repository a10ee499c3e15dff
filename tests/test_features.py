"""Feature maps and Grad-CAM on a real ResNet-18 and real photos, without touching the shared model."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import torchvision
from matplotlib.figure import Figure
from PIL import Image

from resnet import BadImage, build_model
from resnet.i18n import t
from resnet.preprocess import transform
from resnet.analysis.features import (ALL_STAGES, feature_maps, grad_cam, model_view, stage_info, strongest_channels,
                                      to_input)
from resnet.ui.figures.features import cam_overlay, feature_grid
from resnet.predict import model_categories, to_batch

pytestmark = pytest.mark.unit

SHAPES_224 = {"conv1": (64, 112, 112), "conv2_x": (64, 56, 56), "conv3_x": (128, 28, 28),
              "conv4_x": (256, 14, 14), "conv5_x": (512, 7, 7)}
SHAPES_160 = {"conv1": (64, 80, 80), "conv2_x": (64, 40, 40), "conv3_x": (128, 20, 20),
              "conv4_x": (256, 10, 10), "conv5_x": (512, 5, 5)}


def shared_like(model):
    """As the app's ModelCache hands it out: eval mode, no parameter asks for gradients."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("resnet18")
    m.load_state_dict(torchvision.models.resnet18().state_dict())
    return shared_like(m)


def test_shapes_at_224_and_160(model, photos):
    maps = feature_maps(model, photos["cheetah"])
    assert {s: tuple(t.shape) for s, t in maps.items()} == SHAPES_224
    maps = feature_maps(model, photos["bus"], image_size=160)
    assert {s: tuple(t.shape) for s, t in maps.items()} == SHAPES_160
    assert [r["shape"] for r in stage_info(model, 224)] == list(SHAPES_224.values())
    assert [r["shape"] for r in stage_info(model, 160)] == list(SHAPES_160.values())


def test_stage_info_for_a_bottleneck_net_and_both_languages():
    info = stage_info(build_model("resnet50"), 224)  # shapes from the weightless twin: no forward pass
    assert [r["stage"] for r in info] == list(ALL_STAGES)
    assert [r["shape"] for r in info] == [(64, 112, 112), (256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]
    assert all(r["meaning"]["en"] and r["meaning"]["zh-CN"] for r in info)
    assert info[-1]["meaning"]["zh-CN"] == t(info[-1]["meaning_key"], "zh-CN") and "Grad-CAM" in info[-1]["meaning"]["en"]


def test_a_subset_of_stages(model, photos):
    maps = feature_maps(model, photos["lion"], stages=("conv4_x", "conv1"))
    assert list(maps) == ["conv4_x", "conv1"]
    with pytest.raises(ValueError, match="unknown stage"):
        feature_maps(model, photos["lion"], stages=("layer9",))


def test_extraction_equals_running_the_stages_by_hand(model, photos):
    x = to_batch(model, photos["grace_hopper"])
    maps = feature_maps(model, x)
    with torch.no_grad():
        c1 = model.relu(model.bn1(model.conv1(x)))
        expected = {"conv1": c1.clone()}
        y = model.maxpool(c1)
        for name, stage in zip(("conv2_x", "conv3_x", "conv4_x", "conv5_x"),
                               (model.layer1, model.layer2, model.layer3, model.layer4)):
            y = stage(y)
            expected[name] = y
    for name in ALL_STAGES:
        torch.testing.assert_close(maps[name], expected[name][0], rtol=0, atol=1e-6)


def test_the_view_is_the_picture_the_network_sees(model, photos):
    """``model_view`` of a photo and of its input tensor agree, and re-normalising the view gives the input."""
    x = to_input(model, photos["bus"])
    direct, from_tensor = model_view(model, photos["bus"]), model_view(model, x)
    assert direct.size == from_tensor.size == (224, 224)
    assert np.abs(np.asarray(direct, int) - np.asarray(from_tensor, int)).max() <= 1
    normalise = transform("eval", 224, decoded=True)  # the view is already 224 × 224: normalising is all that is left
    torch.testing.assert_close(normalise(direct).unsqueeze(0), x, rtol=0, atol=1e-6)


def test_strongest_channels_are_ordered_by_mean_activation(model, photos):
    fmap = torch.zeros(5, 4, 4)
    for c, v in enumerate([0.1, 3.0, -1.0, 2.0, 0.5]):
        fmap[c] = v
    assert strongest_channels(fmap, 3) == [1, 3, 4]
    assert strongest_channels(fmap[None], 99) == [1, 3, 4, 0, 2]
    real = feature_maps(model, photos["tower"], stages=("conv3_x",))["conv3_x"]
    top = strongest_channels(real, 16)
    means = real.mean(dim=(1, 2))
    assert len(top) == 16 and means[top].tolist() == sorted(means[top].tolist(), reverse=True)
    rest = [c for c in range(real.shape[0]) if c not in top]
    assert means[top].min() >= means[rest].max()


def test_grad_cam_range_shape_and_top_class(model, photos):
    heat, idx, name, prob = grad_cam(model, photos["cheetah"])
    assert heat.shape == (224, 224) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    with torch.no_grad():
        probs = model(to_batch(model, photos["cheetah"])).softmax(-1)[0]
    assert idx == int(probs.argmax()) and name == model_categories(model)[idx]
    assert prob == pytest.approx(float(probs[idx]), abs=1e-5)
    heat160, *_ = grad_cam(model, photos["cheetah"], image_size=160)
    assert heat160.shape == (160, 160)


def test_grad_cam_depends_on_the_target_class(model, photos):
    a, ia, na, _ = grad_cam(model, photos["lion"], target="tabby")
    b, ib, nb, _ = grad_cam(model, photos["lion"], target=817)  # sports car
    c, ic, *_ = grad_cam(model, photos["lion"], target="817")
    assert (na, ia) == ("tabby", 281) and (nb, ib) == ("sports car", 817) and ic == 817
    np.testing.assert_array_equal(b, c)
    assert np.abs(a - b).mean() > 0.02
    with pytest.raises(ValueError, match="unknown class"):
        grad_cam(model, photos["lion"], target="unicorn-dragon")
    with pytest.raises(ValueError, match="out of range"):
        grad_cam(model, photos["lion"], target=1000)


def test_grad_cam_with_precomputed_conv5_equals_the_plain_call(model, photos):
    maps = feature_maps(model, photos["bus"], stages=("conv5_x",))
    np.testing.assert_allclose(grad_cam(model, photos["bus"], layer4=maps["conv5_x"])[0],
                               grad_cam(model, photos["bus"])[0], atol=1e-6)


def test_the_shared_model_is_never_mutated(photos):
    torch.manual_seed(1)
    m = shared_like(build_model("resnet18"))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    modes = [mod.training for mod in m.modules()]
    for image in (photos["cheetah"], photos["bus"]):
        feature_maps(m, image)
        grad_cam(m, image)
        grad_cam(m, image, target="tabby")
    stage_info(m, 160)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BN running statistics
    assert all(not p.requires_grad and p.grad is None for p in m.parameters())
    assert [mod.training for mod in m.modules()] == modes
    for mod in m.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks and not mod._backward_hooks
        assert not getattr(mod, "_backward_pre_hooks", None)


def test_feature_maps_while_other_models_run_in_other_threads(model, photos):
    """A server runs other users' forward passes at the same time; extraction must not disturb them
    (FX tracing, which patches nn.Module.__call__ process-wide, did: "module is not installed as a submodule")."""
    import threading
    other = build_model("resnet34").eval()
    stop, errors = threading.Event(), []

    def busy():
        try:
            while not stop.is_set():
                with torch.inference_mode():
                    other(torch.randn(1, 3, 64, 64))
        except Exception as e:  # pragma: no cover - the failure being tested for
            errors.append(e)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        for stage in ALL_STAGES:
            fresh = build_model("resnet18").eval()
            fresh.load_state_dict(model.state_dict())
            assert feature_maps(fresh, photos["lion"], (stage,))[stage].dim() == 3
    finally:
        stop.set()
        worker.join()
    assert not errors


def test_concurrent_users_get_their_own_answers(model, photos):
    jobs = [(photos["lion"], "tabby"), (photos["lion"], 817), (photos["bus"], None), (photos["tower"], "lion")] * 2
    alone = [grad_cam(model, img, target=t)[0] for img, t in jobs[:4]]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda job: grad_cam(model, job[0], target=job[1])[0], jobs))
    for i, heat in enumerate(together):
        np.testing.assert_allclose(heat, alone[i % 4], atol=1e-5)


def test_bad_image_gets_a_sentence(model, tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_text("not a picture at all")
    with pytest.raises(BadImage, match="not an image"):
        feature_maps(model, bad)
    with pytest.raises(BadImage):
        grad_cam(model, bad)


def test_plots(model, photos):
    maps = feature_maps(model, photos["grace_hopper"], stages=("conv2_x",))
    fig = feature_grid(maps["conv2_x"], 16, "conv2_x")
    assert isinstance(fig, Figure)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == [f"#{c}" for c in strongest_channels(maps["conv2_x"], 16)]
    heat, _, name, _ = grad_cam(model, photos["grace_hopper"])
    view = model_view(model, photos["grace_hopper"])
    assert view.size == (224, 224) and to_input(model, view).shape == (1, 3, 224, 224)
    overlay = cam_overlay(view, heat, name)
    assert isinstance(overlay, Image.Image) and overlay.size == view.size and overlay.mode == "RGB"
    # The hottest spot is redder than the coldest after blending with jet.
    a = np.asarray(overlay, dtype=int)
    hot, cold = np.unravel_index(heat.argmax(), heat.shape), np.unravel_index(heat.argmin(), heat.shape)
    assert a[hot][0] - a[hot][2] > a[cold][0] - a[cold][2]
