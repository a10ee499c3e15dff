"""The GPU path: the same model, training and analysis on CUDA as on the CPU. Skipped where there is no CUDA (CI);
run on a GPU machine with ``python -m pytest tests/test_gpu.py``.

What is checked there: logits against torchvision's own model on the GPU and against our CPU run; that training
picks CUDA with bf16 autocast by itself and still learns; that a pretrained backbone made on the GPU loads on the
CPU; that classification, feature maps and Grad-CAM on the GPU agree with the CPU's.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from PIL import Image

from resnet import build_model, classify
from resnet import device as devices
from resnet.analysis.features import feature_maps, grad_cam

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.fixture(autouse=True)
def exact_fp32():
    """Full fp32 matrix products (no TF32), so GPU and CPU logits can be compared closely."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def photo() -> Image.Image:
    from matplotlib import cbook
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return Image.open(f).convert("RGB")


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnext50_32x4d"])
def test_logits_on_cuda_match_torchvision_and_the_cpu(arch):
    torch.manual_seed(0)
    ref = torchvision.models.get_model(arch).eval()
    ours = build_model(arch).eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 224, 224)
    with torch.inference_mode():
        on_cpu = ours(x)
        ref, ours = ref.to(CUDA), ours.to(CUDA)
        theirs_gpu, ours_gpu = ref(x.to(CUDA)).cpu(), ours(x.to(CUDA)).cpu()
    assert torch.allclose(ours_gpu, theirs_gpu, atol=1e-5, rtol=1e-5), (ours_gpu - theirs_gpu).abs().max()
    assert torch.allclose(ours_gpu, on_cpu, atol=1e-3, rtol=1e-3), (ours_gpu - on_cpu).abs().max()


def test_training_picks_cuda_with_bf16_and_learns(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("RESNET_ALLOW_DOWNLOAD", "0")
    from resnet.data import synthetic
    from resnet.train.finetune import FinetuneConfig, run
    assert devices.pick_device().type == "cuda"
    assert devices.amp_dtype(CUDA) is torch.bfloat16 and devices.uses_channels_last(CUDA)
    data = synthetic(160, image_size=64, plain=True, val_per_class=25)
    for ev in run(FinetuneConfig(dataset=data, strategies="scratch", epochs=8, image_size=64, batch_size=16)):
        pass
    s = ev.result.summaries[0]
    device = ev.result.device
    assert "bf16 mixed training" in device and torch.cuda.get_device_name() in device, device
    # Plain shapes from random weights: well above the 25 % of chance, and the loss finite all along.
    losses = torch.tensor(ev.result.history["scratch"]["train_loss"])
    assert s.best_val_acc >= 0.5 and bool(torch.isfinite(losses).all()), (s, losses)


def test_a_backbone_pretrained_on_cuda_loads_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_WEIGHTS_DIR", str(tmp_path))
    from resnet.train.pretrain import pretrain
    from resnet.weights import find_source
    for ev in pretrain("resnet18", image_size=32, epochs=2, per_class=8, num_classes=8, folder=str(tmp_path)):
        pass
    assert ev.kind == "done" and "bf16 mixed training" in ev.result.device
    state = torch.load(ev.result.path, weights_only=True)["state_dict"]
    assert all(v.device == CPU for v in state.values())
    assert find_source("resnet18") == ev.result.path
    net = build_model("resnet18", 8)
    net.load_state_dict(state)


def test_classify_feature_maps_and_grad_cam_agree_with_the_cpu():
    torch.manual_seed(0)
    net = build_model("resnet18").eval()
    img = photo()
    cpu_top = classify(net, img)
    cpu_maps = feature_maps(net, img)
    cpu_cam = grad_cam(net, img)
    net = net.to(CUDA)
    gpu_top = classify(net, img)
    gpu_maps = feature_maps(net, img)
    gpu_cam = grad_cam(net, img)
    assert [n for n, _ in gpu_top] == [n for n, _ in cpu_top]
    assert all(abs(a - b) < 1e-4 for (_, a), (_, b) in zip(gpu_top, cpu_top))
    for stage, fmap in cpu_maps.items():
        assert torch.allclose(gpu_maps[stage].cpu(), fmap, atol=1e-3, rtol=1e-3), stage
    assert gpu_cam[1:3] == cpu_cam[1:3] and abs(gpu_cam[3] - cpu_cam[3]) < 1e-4
    assert abs(gpu_cam[0] - cpu_cam[0]).max() < 1e-3, abs(gpu_cam[0] - cpu_cam[0]).max()
