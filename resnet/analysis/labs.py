"""The note's four highlights as experiments a student can run: residual vs plain gradient flow and a
training race, a 1202-layer ResNet, BatchNorm step by step, and the cost of group convolution.

Everything here is plain PyTorch (no Gradio); each lab returns numbers and the UI draws them.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterator

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode

from .. import budget
from ..errors import BadSetting
from ..i18n import error
from ..data import SHAPES, paint
from ..preprocess import open_image, transform
from ..models.resnet import ARCHS, BasicBlock, StageWalk, build_model, conv1x1, init_weights
from ..train.engine import Trainer, precise_bn
from .summary import layer_table, run_counting_macs, totals

# --------------------------------------------------------------------------------------------------
# The built-in shapes set: every shape ``resnet.data``'s painter draws, one class each, drawn from a seed.
# --------------------------------------------------------------------------------------------------

# White upright shapes on black: learnable within a hundred steps, so the race's curves separate in a lesson.
LAB_STYLE = {"plain": True, "upright": True}


@lru_cache(maxsize=8)
def shapes_dataset(n: int = 512, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` normalised images (N×3×size×size) and their labels (index into ``SHAPES``).

    Place, size and proportions are random, so the class is the outline alone: easy for a convolutional net
    to learn, hard enough that the training curves separate within a hundred or so steps. Drawn rather than
    downloaded (``resnet.data.paint``, the synthetic set's painter), so every lab runs offline and gives the
    same numbers each time.
    """
    images, labels = paint(n, size, SHAPES, seed=seed, **LAB_STYLE)
    to_tensor = transform("eval", size, decoded=True)  # the pictures are already size × size: normalise only
    return torch.stack([to_tensor(img) for img in images]), torch.tensor(labels)


def real_batch(batch_size: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the built-in shapes (same seed → same batch), balanced across classes."""
    x, y = shapes_dataset(max(batch_size, len(SHAPES)), size, seed)
    return x[:batch_size], y[:batch_size]


# --------------------------------------------------------------------------------------------------
# Networks: ImageNet-style ResNet-18/34 and the paper's CIFAR nets (6n + 2 layers), with or without shortcuts.
# --------------------------------------------------------------------------------------------------

CIFAR_WIDTHS = (16, 32, 64)


class CifarResNet(StageWalk):
    """The ResNet paper's CIFAR-10 net: a 3×3 stem, three stages of ``n`` basic blocks (16/32/64 channels,
    32×32 → 16×16 → 8×8), global average pool, fc: 6n + 2 weighted layers.

    ``residual=False`` is the matching plain net: the very same layers with no shortcut (and so no
    projection convs). Projection shortcuts (1×1 conv + BN) are used where the shape changes.
    """

    # The same walk and point names as the ImageNet ResNet (``resnet.models.resnet.StageWalk``): a 3×3 stem, no max
    # pool.
    points = {"conv1": ("conv1", "bn1", "relu"), "conv2_x": ("layer1",), "conv3_x": ("layer2",),
              "conv4_x": ("layer3",), "avgpool": ("avgpool", "flatten"), "fc": ("fc",)}

    def __init__(self, n: int, residual: bool = True, num_classes: int = 10, widths=CIFAR_WIDTHS):
        super().__init__()
        self.depth = 6 * n + 2
        self.residual = residual
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                down = None
                if residual and (stride != 1 or cin != w):
                    down = nn.Sequential(conv1x1(cin, w, stride), nn.BatchNorm2d(w))
                blocks.append(BasicBlock(cin, w, stride, down, residual=residual))
                cin = w
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


# name → (title, builder(residual, num_classes), default input size)
CIFAR_NETS = {f"cifar{6 * n + 2}": n for n in (3, 5, 9, 18, 200)}  # 20, 32, 56, 110, 1202
IMAGENET_NETS = ("resnet18", "resnet34")
LAB_NETS = (*IMAGENET_NETS, *CIFAR_NETS)


def net_depth(name: str) -> int:
    return 6 * CIFAR_NETS[name] + 2 if name in CIFAR_NETS else int(name.removeprefix("resnet"))


def net_title(name: str, residual: bool) -> str:
    """``ResNet-56`` / ``plain-56``; ImageNet-style nets are marked as such."""
    kind = "ResNet" if residual else "plain"
    return f"{kind}-{net_depth(name)}" + ("" if name in CIFAR_NETS else " (ImageNet)")


def default_size(name: str) -> int:
    """CIFAR nets at their 32 px; ImageNet-style ones at 64 px (enough for five stride-2 steps, and fast)."""
    return 32 if name in CIFAR_NETS else 64


@dataclass(frozen=True)
class Setting:
    """How the nets are normalised and initialised for the gradient-flow lab."""

    batchnorm: bool
    init: str  # "he" (kaiming, fan_out, the paper's) or "xavier" (Glorot, the standard before 2015)


SETTINGS = {
    "bn": Setting(batchnorm=True, init="he"),       # the paper's nets
    "none": Setting(batchnorm=False, init="xavier"),  # a pre-BatchNorm deep net
}


def _strip_batchnorm(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.Identity())
        else:
            _strip_batchnorm(child)


def lab_net(name: str, residual: bool = True, *, setting: str = "bn", num_classes: int = 10,
            seed: int = 0, widths=CIFAR_WIDTHS, device=None) -> nn.Module:
    """``name`` in ``LAB_NETS``, with or without shortcuts, seeded so plain and residual start alike.

    Built on the meta device, then materialised on the CPU and initialised from a ``torch.Generator`` seeded
    with ``seed``: never from torch's global RNG, which concurrent requests share. ``device="meta"``: a
    weightless net for counting (``resnet.budget``)."""
    if name not in LAB_NETS:
        raise ValueError(f"unknown lab network {name!r}; choose one of: {', '.join(LAB_NETS)}")
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of: {', '.join(SETTINGS)}")
    with torch.device("meta"):
        if name in CIFAR_NETS:
            net = CifarResNet(CIFAR_NETS[name], residual, num_classes, tuple(widths))
        else:
            net = build_model(name, num_classes, residual=residual)
    s = SETTINGS[setting]
    if not s.batchnorm:
        _strip_batchnorm(net)
    if device is not None and torch.device(device).type == "meta":
        return net
    gen = torch.Generator().manual_seed(int(seed))
    init_weights(net.to_empty(device="cpu"), gen, defaults=True)  # He normal convs, BN 1/0, fc torch's default
    if s.init == "xavier":
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight, generator=gen)
    return net


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def main_path_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The weighted layers a plain net has too (convs of the stem and blocks, then fc), in forward order;
    projection shortcuts are left out so that plain and residual share one x-axis."""
    return [(name, m) for name, m in net.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name]


# --------------------------------------------------------------------------------------------------
# Lab 1: gradient flow at initialisation, and a live training race.
# --------------------------------------------------------------------------------------------------

@dataclass
class GradientProfile:
    """‖∂loss/∂W‖ of every main-path layer, from the input side (index 0) to the classifier."""

    net: str
    residual: bool
    setting: str
    layers: list[str]
    norms: list[float]
    loss: float
    params: int
    seconds: float

    @property
    def title(self) -> str:
        return net_title(self.net, self.residual)

    @property
    def first(self) -> float:
        return self.norms[0]

    @property
    def last(self) -> float:
        return self.norms[-2] if len(self.norms) > 1 else self.norms[-1]  # the last conv, not the fc


def layer_gradients(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, name: str = "", setting: str = "bn",
                    residual: bool = True) -> GradientProfile:
    """One forward and backward pass in training mode (as in the first step of training); the norms of
    the weight gradients tell how much learning signal reaches each layer."""
    layers = main_path_layers(net)
    net.train()
    net.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    seconds = time.perf_counter() - start
    norms = [float(m.weight.grad.norm()) if m.weight.grad is not None else 0.0 for _, m in layers]
    return GradientProfile(name, residual, setting, [n for n, _ in layers], norms, float(loss.detach()),
                           count_params(net), seconds)


def gradient_flow(nets=("cifar20", "cifar56"), settings=("none", "bn"), *, batch_size: int = 32,
                  image_size: int | None = None, seed: int = 0) -> list[GradientProfile]:
    """Per-layer gradient norms at initialisation for each net in ``nets``, plain and residual, under each
    setting, on the same batch of real images and the same seed. Settings are checked first (lists from the
    API deduplicated, and the job refused if it is over this server's budget: ``resnet.budget``)."""
    nets, settings, batch_size, sizes = budget.check_gradient_flow(nets, settings, batch_size, image_size)
    out = []
    for setting in settings:
        for name in nets:
            size = sizes[name]
            x, y = real_batch(batch_size, size, seed)
            for residual in (True, False):
                net = lab_net(name, residual, setting=setting, seed=seed)
                out.append(layer_gradients(net, x, y, name=name, setting=setting, residual=residual))
    return out


def gradient_ratio(profiles: list[GradientProfile], net: str, setting: str) -> float:
    """First-layer gradient of the residual net over the plain net's (inf when the plain one is 0)."""
    by = {(p.residual): p for p in profiles if p.net == net and p.setting == setting}
    res, plain = by[True].first, by[False].first
    return math.inf if plain == 0 else res / plain


# The race: plain and residual, shallow and deep, trained side by side on the same batches.
RACE_NETS = (("cifar20", False), ("cifar56", False), ("cifar20", True), ("cifar56", True))
RACE_WIDTHS = (8, 16, 32)  # half the paper's widths: the same depths, a quarter of the work, so it runs live
RACE_IMAGES = 512  # built-in shapes the race trains on


@dataclass
class RaceUpdate:
    step: int
    steps: int
    seconds: float
    losses: dict[str, list[float]]  # title → smoothed training loss at each recorded step
    recorded_steps: list[int]
    done: bool = False

    def final(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.losses.items() if v}


def training_race(steps: int = 120, *, batch_size: int = 16, lr: float = 0.05, nets=RACE_NETS, every: int = 10,
                  seed: int = 0, n_images: int = RACE_IMAGES, widths=RACE_WIDTHS, cancel=None) -> Iterator[RaceUpdate]:
    """Train each net in ``nets`` for ``steps`` SGD steps on the built-in shapes, all on the same
    mini-batches, and yield the loss curves every ``every`` steps (so the UI can redraw while it runs).

    Training loss, not test accuracy: the degradation problem is that the deeper plain net fits its own
    training data *worse*, which overfitting cannot explain.
    """
    steps, batch_size, nets, n_images, widths = budget.check_training_race(steps, batch_size, nets, n_images, widths)
    every = budget.whole(every, 1, 5000, "recording interval")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (0 < lr <= 1):  # NaN fails too
        raise error(BadSetting, "engine.race_lr")
    x, y = shapes_dataset(n_images, 32, seed)
    runners = {}  # title → the engine's Trainer: plain SGD with momentum, a constant learning rate
    for name, residual in nets:
        net = lab_net(name, residual, seed=seed, widths=widths).train()
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, foreach=True)
        runners[net_title(name, residual)] = Trainer(net, opt, size=x.shape[-1])
    losses = {title: [] for title in runners}
    ema = dict.fromkeys(runners)
    recorded: list[int] = []
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=gen)
    pos, start = 0, time.perf_counter()
    for step in range(1, steps + 1):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        xb, yb = x[idx], y[idx]
        if torch.rand(1, generator=gen).item() < 0.5:  # a flip: the same for every net
            xb = xb.flip(3)
        for title, trainer in runners.items():
            v = float(trainer.step(xb, yb)[0])
            v = v if math.isfinite(v) else float("nan")
            ema[title] = v if ema[title] is None else 0.9 * ema[title] + 0.1 * v
        if step % every == 0 or step == steps:
            recorded.append(step)
            for title in losses:
                losses[title].append(ema[title])
            yield RaceUpdate(step, steps, time.perf_counter() - start, {k: list(v) for k, v in losses.items()},
                             list(recorded), done=step == steps)
        if cancel is not None and cancel():
            return


# --------------------------------------------------------------------------------------------------
# Lab 2: over 1000 layers.
# --------------------------------------------------------------------------------------------------

@dataclass
class DeepResult:
    """ResNet-1202 beside the plain net of the same depth: size, time, and how much gradient arrives."""

    depth: int
    residual: GradientProfile
    plain: GradientProfile | None  # None while the plain net is still being measured (``deep_network_steps``)
    batch_size: int
    image_size: int


def first_finite_fraction(p: GradientProfile) -> float:
    """Share of layers whose gradient is a finite, non-zero number (the rest vanished or overflowed)."""
    ok = [math.isfinite(v) and v > 0 for v in p.norms]
    return sum(ok) / len(ok)


def deep_network(name: str = "cifar1202", *, batch_size: int = 2, image_size: int = 32, setting: str = "bn",
                 seed: int = 0) -> DeepResult:
    """Build the net (ResNet-1202: n = 200, 19.4 M parameters) with and without shortcuts and run one
    forward and backward pass on a small batch of real images, timing it."""
    *_, result = deep_network_steps(name, batch_size=batch_size, image_size=image_size, setting=setting, seed=seed)
    return result


def deep_network_steps(name: str = "cifar1202", *, batch_size: int = 2, image_size: int = 32, setting: str = "bn",
                       seed: int = 0) -> Iterator[DeepResult]:
    """``deep_network`` as it goes: the result once the residual net is measured (``plain`` None), then with both
    nets, so that a page shows the first curve while the plain net (as slow again) is built and measured."""
    batch_size, image_size = budget.check_deep_network(name, batch_size, image_size, setting)  # BN needs 2 or more
    x, y = real_batch(batch_size, image_size, seed)
    profiles = {}
    for residual in (True, False):
        net = lab_net(name, residual, setting=setting, seed=seed)
        profiles[residual] = layer_gradients(net, x, y, name=name, setting=setting, residual=residual)
        del net
        yield DeepResult(net_depth(name), profiles[True], profiles.get(False), batch_size, image_size)


# --------------------------------------------------------------------------------------------------
# Lab 3: BatchNorm.
# --------------------------------------------------------------------------------------------------

BN_IMAGE_SIZE = 128  # the BN lab's input size: big enough for real feature maps, small enough to be quick


def image_tensor(image, size: int = BN_IMAGE_SIZE) -> torch.Tensor:
    """A path, bytes or PIL image → a normalised 1×3×size×size tensor (the weights' eval transform)."""
    return transform("eval", size)(open_image(image)).unsqueeze(0)


def image_pool(photos, n: int = 64, size: int = BN_IMAGE_SIZE, seed: int = 0) -> torch.Tensor:
    """``n`` augmented views (random resized crop and flip, as fine-tuning trains on) of the given photos: a small
    "training set" whose statistics the batch statistics are compared with. Checked against this server's budget
    first (the BatchNorm lab's biggest part: ``resnet.budget.check_bn_lab``)."""
    photos = list(photos)
    if not photos:
        raise ValueError("the image pool needs at least one photo")
    n = budget.check_bn_lab(n, size, len(photos))
    decode = transform("decode", size)
    squares = [decode(open_image(p)) for p in photos]  # each photo resized once
    augment = transform("train", size, decoded=True, generator=torch.Generator().manual_seed(seed))
    return torch.stack([augment(squares[i % len(squares)]) for i in range(n)])


@dataclass
class BNSteps:
    """Algorithm 1 on one BatchNorm layer's input, done by hand, for every channel; with the numbers of
    one channel and the comparison with ``nn.BatchNorm2d``."""

    channel: int
    count: int            # m: values per channel in the batch (N·H·W)
    mean: float           # μ_B of the channel
    var: float            # σ²_B (biased, 1/m, as in the algorithm)
    eps: float
    gamma: float
    beta: float
    x: torch.Tensor       # the channel's input map (N×H×W)
    x_hat: torch.Tensor   # normalised
    y: torch.Tensor       # γ·x̂ + β
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (x, x̂, y) at a few positions
    max_abs_diff: float = 0.0  # our y (all channels) vs nn.BatchNorm2d in training mode


def bn_by_hand(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5):
    """Algorithm 1 for a conv feature map (N×C×H×W): every position of every image is a sample of its channel."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)                       # μ_B = 1/m Σ x_i
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)        # σ²_B = 1/m Σ (x_i − μ_B)²
    x_hat = (x - mean) / torch.sqrt(var + eps)                       # x̂_i = (x_i − μ_B) / √(σ²_B + ε)
    y = gamma.view(1, -1, 1, 1) * x_hat + beta.view(1, -1, 1, 1)     # y_i = γ x̂_i + β
    return mean.flatten(), var.flatten(), x_hat, y


def bn_steps(features: torch.Tensor, bn: nn.BatchNorm2d, channel: int = 0, n_samples: int = 4) -> BNSteps:
    """Run Algorithm 1 by hand on ``features`` (the input of ``bn``) and check it against ``bn`` itself."""
    c = features.shape[1]
    if not 0 <= channel < c:
        raise ValueError(f"the channel must be between 0 and {c - 1}")
    with torch.no_grad():
        gamma, beta = bn.weight.detach().float(), bn.bias.detach().float()
        mean, var, x_hat, y = bn_by_hand(features, gamma, beta, bn.eps)
        reference = copy.deepcopy(bn).train()(features)  # a copy: the caller's running statistics stay put
    m = features.numel() // c
    flat_x = features[:, channel].flatten()
    # A few evenly spaced positions, so the table shows ordinary values rather than only the corner.
    picks = torch.linspace(0, m - 1, n_samples).round().long()
    xs, xh, ys = flat_x[picks], x_hat[:, channel].flatten()[picks], y[:, channel].flatten()[picks]
    return BNSteps(channel, m, float(mean[channel]), float(var[channel]), bn.eps, float(gamma[channel]),
                   float(beta[channel]), features[:, channel].clone(), x_hat[:, channel].clone(),
                   y[:, channel].clone(), [(float(a), float(b), float(d)) for a, b, d in zip(xs, xh, ys)],
                   float((y - reference).abs().max()))


class _Captured(Exception):
    """Raised by a hook to stop a forward pass once the tensor it wanted has been seen."""


def bn_input(model: nn.Module, x: torch.Tensor, module_name: str = "bn1") -> tuple[torch.Tensor, nn.BatchNorm2d]:
    """The tensor that reaches the BatchNorm layer ``module_name`` of ``model`` (eval mode, no grad); the
    forward pass stops there, so asking for an early layer costs little."""
    bn = dict(model.named_modules()).get(module_name)
    if not isinstance(bn, nn.BatchNorm2d):
        raise ValueError(f"{module_name!r} is not a BatchNorm layer of this model")
    seen = {}

    def hook(module, inputs):
        seen["x"] = inputs[0].detach().clone()
        raise _Captured

    handle = bn.register_forward_pre_hook(hook)
    was = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(x)
    except _Captured:
        pass
    finally:
        handle.remove()
        model.train(was)
    return seen["x"], bn


def lab_copy(model: nn.Module) -> nn.Module:
    """A private CPU copy of a (possibly shared) model, safe to switch to training mode."""
    m = copy.deepcopy(model).cpu().float()
    for p in m.parameters():
        p.requires_grad_(False)
    return m


def stats_untouched(model: nn.Module) -> bool:
    """True when no BatchNorm layer has ever seen data (running mean 0, variance 1: a fresh init)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return all(int(m.num_batches_tracked) == 0 and not m.running_mean.any() and bool((m.running_var == 1).all())
               for m in bns)


def gather_statistics(model: nn.Module, images: torch.Tensor, batch_size: int = 16) -> None:
    """Fill the running statistics from ``images`` (a plain average), as training would have done: the training
    engine's precise BatchNorm; the model is left in eval mode."""
    precise_bn(model, images, batch=batch_size)
    model.eval()


def ensure_statistics(model: nn.Module, images: torch.Tensor) -> bool:
    """Gather running statistics from ``images`` if the model has none yet (random weights); True if it did.
    Without them eval mode would normalise with mean 0 and variance 1, which is no normalisation at all."""
    if not stats_untouched(model):
        return False
    gather_statistics(model, images)
    return True


def illustrate_affine(model: nn.Module, seed: int = 0) -> bool:
    """Give a freshly initialised model's BatchNorm layers visible γ and β (γ = 1, β = 0 would make the
    scale-and-shift step invisible); True if it did. Trained models are left alone."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not all(bool((m.weight == 1).all()) and not m.bias.any() for m in bns):
        return False
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in bns:
            m.weight.copy_(torch.empty_like(m.weight).uniform_(0.5, 1.5, generator=gen))
            m.bias.copy_(torch.empty_like(m.bias).uniform_(-0.5, 0.5, generator=gen))
    return True


@dataclass
class TrainEval:
    """One image's predictions under the three ways BatchNorm can be run."""

    labels: list[str]                  # top classes in eval mode
    probs: dict[str, list[float]]      # mode → probabilities of ``labels``
    top1: dict[str, str]               # mode → its own top class
    distance: dict[str, float]         # mode → total-variation distance from eval mode (0 same … 1 disjoint)
    logit_change: dict[str, float]     # mode → ‖z − z_eval‖ / ‖z_eval‖ (readable even when probabilities are flat)


MODES = ("eval", "train_1", "train_batch")


def train_vs_eval(model: nn.Module, x: torch.Tensor, companions: torch.Tensor, categories: list[str],
                  top_k: int = 5) -> TrainEval:
    """``x`` (1 image) in eval mode, in training mode alone (batch of 1), and in training mode inside a
    batch with ``companions``: in training mode the answer depends on the batch, in eval mode it cannot."""
    model = lab_copy(model)
    logits = {}
    with torch.no_grad():
        model.eval()
        logits["eval"] = model(x)[0]
        model.train()  # the copy's running statistics change here; nobody else sees them
        logits["train_1"] = model(x)[0]
        logits["train_batch"] = model(torch.cat([x, companions[:7]]))[0]
    out = {k: z.softmax(-1) for k, z in logits.items()}
    scale = float(logits["eval"].norm()) or 1.0
    idx = out["eval"].topk(min(top_k, out["eval"].numel())).indices
    name = lambda i: categories[i] if i < len(categories) else f"class {i}"  # noqa: E731
    return TrainEval([name(int(i)) for i in idx],
                     {k: [float(v[i]) for i in idx] for k, v in out.items()},
                     {k: name(int(v.argmax())) for k, v in out.items()},
                     {k: float(0.5 * (v - out["eval"]).abs().sum()) for k, v in out.items()},
                     {k: float((z - logits["eval"]).norm()) / scale for k, z in logits.items()})


BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class BatchStats:
    """How far one batch's per-channel mean and standard deviation fall from the whole set's, by batch size."""

    sizes: list[int]
    mean_error: list[float]  # average |μ_B − μ| / σ over channels and draws
    std_error: list[float]   # average |σ_B / σ − 1|
    set_size: int


def batch_statistics(features: torch.Tensor, sizes=BATCH_SIZES, draws: int = 32, seed: int = 0) -> BatchStats:
    """Draw ``draws`` random batches of each size from ``features`` (N×C×H×W, the whole set) and compare
    their BatchNorm statistics with the set's. Errors fall roughly as 1/√batch."""
    n = features.shape[0]
    sizes = [int(s) for s in sizes if 1 <= int(s) <= n]  # a batch as large as the set is the set itself
    if not sizes:
        raise ValueError(f"the set has {n} images; choose batch sizes up to {n}")
    with torch.no_grad():
        mu = features.mean(dim=(0, 2, 3))
        sd = features.var(dim=(0, 2, 3), unbiased=False).sqrt().clamp_min(1e-8)
        per_image_mean = features.mean(dim=(2, 3))            # N×C
        per_image_sq = (features ** 2).mean(dim=(2, 3))       # N×C
        gen = torch.Generator().manual_seed(seed)
        mean_err, std_err = [], []
        for b in sizes:
            # With replacement: the set stands for the whole population the batches are drawn from.
            idx = torch.randint(n, (draws, b), generator=gen)
            m_b = per_image_mean[idx].mean(1)                   # draws×C
            v_b = (per_image_sq[idx].mean(1) - m_b ** 2).clamp_min(0)
            mean_err.append(float(((m_b - mu).abs() / sd).mean()))
            std_err.append(float((v_b.sqrt() / sd - 1).abs().mean()))
    return BatchStats(sizes, mean_err, std_err, n)


@dataclass
class BiasCheck:
    """A conv with a bias before BatchNorm versus the same conv without one."""

    max_abs_diff: float       # between the two BatchNorm outputs (training mode)
    bias_norm: float          # how big the bias was
    bias_grad_norm: float     # its gradient: nothing to learn
    weight_grad_norm: float   # the conv weights' gradient, for scale
    running_mean_shift: float  # the bias only moves BN's running mean (max |difference − momentum·bias|)


def bias_cancellation(cin: int = 3, cout: int = 16, size: int = 32, batch_size: int = 8, seed: int = 0,
                      x: torch.Tensor | None = None) -> BiasCheck:
    """BN subtracts the batch mean per channel, and a conv bias adds a constant per channel: it is
    removed again, so it changes nothing and receives no gradient."""
    gen = torch.Generator().manual_seed(seed)  # not torch's global RNG: other requests share that one
    with_bias = nn.Conv2d(cin, cout, 3, padding=1, bias=True, device="meta").to_empty(device="cpu")
    nn.init.kaiming_uniform_(with_bias.weight, a=math.sqrt(5), generator=gen)  # nn.Conv2d's default init
    nn.init.normal_(with_bias.bias, 0.0, 1.0, generator=gen)  # a large bias: cancelling it is no rounding accident
    without = nn.Conv2d(cin, cout, 3, padding=1, bias=False, device="meta").to_empty(device="cpu")
    with torch.no_grad():
        without.weight.copy_(with_bias.weight)
    bn_a, bn_b = nn.BatchNorm2d(cout), nn.BatchNorm2d(cout)
    if x is None:
        x = torch.randn(batch_size, cin, size, size, generator=gen)
    ya, yb = bn_a(with_bias(x)), bn_b(without(x))
    # Any loss will do; a fixed, uneven weighting of the outputs gives every parameter a real gradient.
    target = torch.sin(torch.arange(ya.numel(), dtype=torch.float32)).view_as(ya)
    (ya * target).sum().backward()
    shift = (bn_a.running_mean - bn_b.running_mean - bn_a.momentum * with_bias.bias.detach()).abs().max()
    ya, yb = ya.detach(), yb.detach()
    return BiasCheck(float((ya - yb).abs().max()), float(with_bias.bias.detach().norm()),
                     float(with_bias.bias.grad.norm()), float(with_bias.weight.grad.norm()), float(shift))


# The batch-size rule in training: BatchNorm's statistics from 2 images or from 32, everything else the same.

class GroupBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose training-mode mean and variance come from groups of ``group`` images of the batch, each
    group normalised with its own statistics: as if the batch size were ``group``, while the gradient step still
    averages over the whole batch. With ``group`` ≥ the batch it is ``nn.BatchNorm2d`` exactly. The running
    averages take one update a step (the groups' mean statistics), like the ordinary layer's."""

    group: int = 0  # 0: the whole batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.group
        if not self.training or not g or g >= n or n % g:
            return super().forward(x)
        xs = x.view(n // g, g, c, h, w)
        mean = xs.mean(dim=(1, 3, 4), keepdim=True)
        var = xs.var(dim=(1, 3, 4), unbiased=False, keepdim=True)
        y = ((xs - mean) / torch.sqrt(var + self.eps)).view(n, c, h, w)
        y = y * self.weight.view(1, c, 1, 1) + self.bias.view(1, c, 1, 1)
        with torch.no_grad():
            m = g * h * w
            momentum = self.momentum if self.momentum is not None else 1.0 / (int(self.num_batches_tracked) + 1)
            self.running_mean.lerp_(mean.mean(0).flatten(), momentum)
            self.running_var.lerp_(var.mean(0).flatten() * m / max(m - 1, 1), momentum)
            self.num_batches_tracked += 1
        return y


def group_batchnorm(net: nn.Module, group: int) -> nn.Module:
    """Turn every ``nn.BatchNorm2d`` of ``net`` into a ``GroupBatchNorm`` computing its statistics over ``group``
    images (in place: the same parameters and buffers)."""
    for m in net.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GroupBatchNorm
            m.group = int(group)
    return net


BN_RUN_GROUPS = (2, 32)  # images BatchNorm's mean and variance come from
BN_RUN_BATCH = 32        # images in each training step (the gradient's batch), for both nets
BN_RUN_IMAGES = 512      # built-in shapes trained on
BN_RUN_VAL = 256         # held-out shapes for validation accuracy


@dataclass
class BNRunUpdate:
    """The batch-size race so far: per BN batch size, the smoothed training loss and the validation accuracy
    in eval mode at each recorded step."""

    step: int
    steps: int
    seconds: float
    recorded_steps: list[int]
    loss: dict[int, list[float]]
    val_acc: dict[int, list[float]]
    val_count: int
    chance: float
    done: bool = False


def _settle_statistics(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """A copy of ``net`` whose running statistics are the whole training set's, from the weights as they are now
    (the statistics a BatchNorm layer would see with a batch as large as the set): eval mode then judges the
    weights, not how far the running averages trail them."""
    twin = copy.deepcopy(net)
    for m in twin.modules():
        if isinstance(m, GroupBatchNorm):
            m.group = 0
    precise_bn(twin, x, batch=len(x))
    return twin.eval()


def bn_batch_run(steps: int = 80, *, groups=BN_RUN_GROUPS, batch_size: int = BN_RUN_BATCH, lr: float = 0.05,
                 every: int = 8, seed: int = 0, n_images: int = BN_RUN_IMAGES, widths=RACE_WIDTHS,
                 cancel=None) -> Iterator[BNRunUpdate]:
    """The note's batch-size rule, trained: the same ResNet-20 (same seed) learns the built-in shapes on the very
    same batches of ``batch_size`` images with the same SGD steps; only the number of images each BatchNorm layer
    takes its mean and variance from differs (``groups``: 2 as with a batch size of 2, 32 as with 32). Every
    ``every`` steps each net is evaluated in eval mode on held-out shapes, its running statistics first
    re-estimated over the training set. Checked first against this server's budget."""
    steps, batch_size, groups, n_images = budget.check_bn_batch_run(steps, batch_size, groups, n_images, widths)
    every = budget.whole(every, 1, 5000, "recording interval")
    x, y = shapes_dataset(n_images, 32, seed)
    xv, yv = shapes_dataset(BN_RUN_VAL, 32, seed + 1000)  # other pictures of the same classes
    runners = {}
    for g in groups:
        net = group_batchnorm(lab_net("cifar20", True, seed=seed, widths=widths), g).train()
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4, foreach=True)
        runners[g] = Trainer(net, opt, size=32)
    loss = {g: [] for g in groups}
    acc = {g: [] for g in groups}
    ema = dict.fromkeys(groups)
    recorded: list[int] = []
    gen = torch.Generator().manual_seed(seed)
    order, pos, start = torch.randperm(len(x), generator=gen), 0, time.perf_counter()
    for step in range(1, steps + 1):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(x), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        for g, trainer in runners.items():
            trainer.model.train()
            v = float(trainer.step(x[idx], y[idx])[0])
            v = v if math.isfinite(v) else float("nan")
            ema[g] = v if ema[g] is None else 0.8 * ema[g] + 0.2 * v
        if step % every == 0 or step == steps:
            recorded.append(step)
            for g, trainer in runners.items():
                loss[g].append(ema[g])
                with torch.no_grad():
                    pred = _settle_statistics(trainer.model, x[:BN_RUN_VAL])(xv).argmax(1)
                acc[g].append(float((pred == yv).float().mean()))
            yield BNRunUpdate(step, steps, time.perf_counter() - start, list(recorded),
                              {g: list(v) for g, v in loss.items()}, {g: list(v) for g, v in acc.items()},
                              len(yv), 1 / len(SHAPES), done=step == steps)
        if cancel is not None and cancel():
            return


# --------------------------------------------------------------------------------------------------
# Lab 4: group convolution.
# --------------------------------------------------------------------------------------------------

@dataclass
class ConvCost:
    kind: str          # "normal", "grouped" or "depthwise"
    cin: int
    cout: int
    groups: int
    kernel: int
    size: int          # input height = width (stride 1, same padding: output too)
    params: int        # counted on the real layer
    flops: int         # measured by PyTorch's FLOP counter (``torch.utils.flop_counter.FlopCounterMode``)
    formula_params: int
    formula_macs: int

    @property
    def macs(self) -> int:
        """Multiply-adds: PyTorch's counter counts 2 FLOPs (a multiply and an add) for each."""
        return self.flops // 2

    @property
    def params_match(self) -> bool:
        return self.params == self.formula_params

    @property
    def macs_match(self) -> bool:
        return self.flops == 2 * self.formula_macs

    @property
    def matches(self) -> bool:
        return self.params_match and self.macs_match


def conv_formula(cin: int, cout: int, groups: int, kernel: int, size: int) -> tuple[int, int]:
    """Each output channel sees only cin/groups inputs: params = k²·(cin/g)·cout, MACs = params·H·W."""
    params = kernel * kernel * (cin // groups) * cout
    return params, params * size * size


def count_flops(module: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``module(x)`` by PyTorch's own counter, ``torch.utils.flop_counter.FlopCounterMode`` (2 per
    multiply-add), independent of this project's counter (``summary.run_counting_macs``).

    Safe in a server: the dispatch mode that counts is per thread, so only this call's operations are counted; the
    counter's module tracker hooks every module's forward while it is open, so it is opened only around this one
    conv on the meta device (microseconds), and only the total is read."""
    with _FLOP_LOCK, FlopCounterMode(display=False) as counter, torch.no_grad():
        module(x)
    return int(counter.get_total_flops())


_FLOP_LOCK = threading.Lock()


def measure_conv(cin: int, cout: int, groups: int, kernel: int = 3, size: int = 56, kind: str = "") -> ConvCost:
    """Build the conv, count its parameters, and let PyTorch's FLOP counter measure it on a real run."""
    if cin % groups or cout % groups:
        raise ValueError(f"the groups ({groups}) must divide both channel counts ({cin} in, {cout} out)")
    # On the meta device: a real layer and a real shape-checked run, but no memory and no arithmetic,
    # so even 4096 channels at 512 px answer at once.
    conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False, device="meta")
    flops = count_flops(conv, torch.zeros(1, cin, size, size, device="meta"))
    params = count_params(conv)
    fp, fm = conv_formula(cin, cout, groups, kernel, size)
    return ConvCost(kind or ("normal" if groups == 1 else "depthwise" if groups == cin else "grouped"),
                    cin, cout, groups, kernel, size, params, flops, fp, fm)


def conv_costs(cin: int = 128, cout: int = 128, groups: int = 32, size: int = 28, kernel: int = 3) -> list[ConvCost]:
    """A normal, a grouped and a depthwise conv with the same input and output shapes (depthwise: one
    group per input channel; it needs cout to be a multiple of cin, else it keeps cin outputs). Everything runs
    on the meta device, so the largest settings cost no memory; ``resnet.budget.check_group_conv`` checks them."""
    cin, cout, groups, size = budget.check_group_conv(cin, cout, groups, size)
    dw_out = cout if cout % cin == 0 else cin
    return [measure_conv(cin, cout, 1, kernel, size, "normal"),
            measure_conv(cin, cout, groups, kernel, size, "grouped"),
            measure_conv(cin, dw_out, cin, kernel, size, "depthwise")]


BLOCK_PAIR = ("resnet50", "resnext50_32x4d")


@dataclass
class BlockCost:
    arch: str
    title: str
    layers: list[tuple[str, int, int]]  # (layer text, params, MACs) of one conv2_x block's residual branch
    block_params: int
    block_macs: int
    model_params: int
    model_macs: int


@lru_cache(maxsize=4)
def block_cost(arch: str, image_size: int = 224) -> BlockCost:
    """The second block of conv2_x (256 → 256 channels at 56×56, no projection) measured layer by layer,
    and the whole model's totals from the layer table."""
    spec = ARCHS[arch]
    block = build_model(arch, device="meta").layer1[1]  # conv2_x's; weightless: shapes and counts only, no memory
    size = image_size // 4
    x = torch.zeros(1, block.conv1.in_channels, size, size, device="meta")
    layers = []
    with torch.no_grad():
        for conv, bn, relu in ((block.conv1, block.bn1, True), (block.conv2, block.bn2, True), (block.conv3, None, False)):
            x, macs = run_counting_macs([conv], x)
            k = conv.kernel_size[0]
            g = f", {conv.groups} groups" if conv.groups > 1 else ""
            layers.append((f"{k}×{k}, {conv.in_channels}→{conv.out_channels}{g}", count_params(conv),
                           macs))
            if bn is not None:
                x = torch.relu(bn(x))
    tot = totals(layer_table(arch, image_size))
    return BlockCost(arch, spec.title, layers, sum(p for _, p, _ in layers), sum(m for _, _, m in layers),
                     tot["params"], tot["macs"])
