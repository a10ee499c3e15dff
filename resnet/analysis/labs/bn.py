"""Lab 3a: BatchNorm step by step on a photo. Algorithm 1 by hand beside ``nn.BatchNorm2d``, training mode versus
eval mode, batch statistics against a pool's, and why a conv before BatchNorm needs no bias."""
from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from ... import budget, config
from ...checks import whole
from ...i18n import Text
from ...keys import file_identity
from ...preprocess import open_image, transform
from ...profile import TRANSIENT, resnet_profile
from ...train.engine import precise_bn
from .job import LabJob

BN_IMAGE_SIZE = 128  # the BN lab's input size: big enough for real feature maps, small enough to be quick


def image_tensor(image, size: int = BN_IMAGE_SIZE) -> torch.Tensor:
    """A path, bytes or PIL image → a normalised 1×3×size×size tensor (the weights' eval transform)."""
    return transform("eval", size)(open_image(image)).unsqueeze(0)


def image_pool(photos, n: int = 64, size: int = BN_IMAGE_SIZE, seed: int = 0) -> torch.Tensor:
    """``n`` augmented views (random resized crop and flip, as fine-tuning trains on) of the given photos: a small
    "training set" whose statistics the batch statistics are compared with. Checked against this server's budget
    first (the BatchNorm lab's biggest part: ``BNPoolJob``)."""
    job = BNPoolJob(tuple(photos), n, size, seed).validated()
    budget.admit(job)
    photos, n = job.photos, job.pool_size
    decode = transform("decode", size)
    squares = [decode(open_image(p)) for p in photos]  # each photo resized once
    augment = transform("train", size, decoded=True, generator=torch.Generator().manual_seed(seed))
    return torch.stack([augment(squares[i % len(squares)]) for i in range(n)])


@dataclass(frozen=True)
class BNPoolJob(LabJob):
    """``image_pool``'s settings. ResNet-18 (a private copy) runs over the pool: no gradients, the whole pool through
    at once to the chosen layer (its features kept), and every photo of the pool decoded at once (each up to the
    pixel limit)."""

    photos: tuple = ()
    pool_size: int = 64
    image_size: int = BN_IMAGE_SIZE
    seed: int = 0

    kind = "bn_lab"
    knob, offer_key = "pool_size", "budget.offer.pool"

    def validated(self) -> "BNPoolJob":
        if not self.photos:
            raise ValueError("the image pool needs at least one photo")
        pool_size = whole(self.pool_size, 1, 256, "pool size")
        image_size = whole(self.image_size, 32, 512, "image size")
        whole(len(self.photos), 1, 64, "number of photos")
        return replace(self, photos=tuple(self.photos), pool_size=pool_size, image_size=image_size)

    def need(self) -> tuple[int, float]:
        p = resnet_profile("resnet18", self.image_size)
        pool = self.pool_size * 3 * self.image_size ** 2 * 4
        passes = self.pool_size * (TRANSIENT + 1) * p.total("widest") * 4
        photos = len(self.photos) * config.get("RESNET_MAX_IMAGE_PIXELS") * 3
        return 8 * p.total("params") + 2 * pool + passes + photos, 4.0 * self.pool_size * p.total("macs")

    def what(self) -> Text:
        return Text("budget.lab.pool", n=self.pool_size, size=self.image_size)

    def otherwise(self) -> Text:
        return Text("budget.offer.smaller_size")

    def settings(self) -> dict:
        """The photos by their bytes' SHA-256 (a file by its content, not its name)."""
        def identity(photo) -> str:
            if isinstance(photo, (str, Path)):
                return file_identity(photo)
            data = photo if isinstance(photo, bytes) else photo.tobytes()
            return "sha256:" + hashlib.sha256(data).hexdigest()
        return {"photos": [identity(p) for p in self.photos], "pool_size": self.pool_size,
                "image_size": self.image_size, "seed": self.seed}

    def run(self, cancel=None):
        yield image_pool(self.photos, self.pool_size, self.image_size, self.seed)


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
