"""Losses: each one's forward written with torch ops, and its gradient derived by hand.

Every loss takes `predicted` and `real` and returns a scalar; its `manual_grad` is ∂loss/∂predicted,
written out from the derivation in its docstring and called under torch.no_grad() (no autograd).

Conventions the derivations share:

- N is the number of terms the loss averages over: every element, except for cross-entropy where
  it is the number of samples (all elements but the last dimension, which holds the classes).
- Kinks use the subgradient torch's own autograd uses, so that a tie is not reported as a
  mismatch: l1 at predicted == real gives sign(0) = 0 (torch's `abs` backward is `sgn`).
  Huber has no kink in its gradient: at |d| = δ both branches give d = ±δ, which is also what
  torch's `huber_loss` backward gives there.
- The tutorial's loss (mse-sum) runs in the tensors' own dtype, exactly as the tutorial writes
  it. The other losses compute in float32 when given float16/bfloat16, as torch's own loss
  kernels accumulate in float32, and round to the input dtype once at the end: otherwise the
  manual and the autograd path round their (equally valid) intermediate steps differently and
  a correct gradient can differ by several half-precision ulps after cancellation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from autograd_check.base.errors import BadInput
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.spec import DEFAULT_DELTA, LOSS_NAMES
from autograd_check.losses.base import Loss, draw_classes, draw_randn

if TYPE_CHECKING:
    from torch import Tensor


def _wide(t: Tensor) -> Tensor:
    """float16/bfloat16 → float32 (see the module docstring); other dtypes unchanged."""
    return t.float() if t.is_floating_point() and t.element_size() == 2 else t


# --- mse-sum: the tutorial's ---------------------------------------------------------------------


def _mse_sum(predicted: Tensor, real: Tensor) -> Tensor:
    # The tutorial's loss, written exactly as the tutorial writes it.
    return (predicted - real).pow(2).sum()


def _mse_sum_grad(predicted: Tensor, real: Tensor) -> Tensor:
    # d/dp sum((p - r)^2) = 2 (p - r): the tutorial's manual gradient, exactly as it writes it.
    return 2.0 * (predicted - real)


# --- mse-mean ------------------------------------------------------------------------------------


def mse_mean(predicted: Tensor, real: Tensor) -> Tensor:
    """loss = (1/N) Σᵢ (pᵢ − rᵢ)²  (torch.nn.functional.mse_loss, reduction="mean")."""
    d = _wide(predicted) - _wide(real)
    return d.pow(2).mean().to(predicted.dtype)


def mse_mean_grad(predicted: Tensor, real: Tensor) -> Tensor:
    """∂loss/∂pᵢ = (1/N) · 2 (pᵢ − rᵢ): each term depends on its own pᵢ only."""
    d = _wide(predicted) - _wide(real)
    # 2/N as one factor: the same rounding as autograd's (1/N) · 2d, so float32 stays bit-exact.
    return (d * (2.0 / d.numel())).to(predicted.dtype)


# --- l1 ------------------------------------------------------------------------------------------


def l1(predicted: Tensor, real: Tensor) -> Tensor:
    """loss = (1/N) Σᵢ |pᵢ − rᵢ|  (torch.nn.functional.l1_loss, reduction="mean")."""
    d = _wide(predicted) - _wide(real)
    return d.abs().mean().to(predicted.dtype)


def l1_grad(predicted: Tensor, real: Tensor) -> Tensor:
    """∂loss/∂pᵢ = sign(pᵢ − rᵢ) / N, since d|d|/dd = sign(d) for d ≠ 0.

    At the kink d = 0 any value in [−1, 1] is a subgradient; torch's autograd takes sign(0) = 0
    (abs backward is grad · sgn(d)), and so does this.
    """
    d = _wide(predicted) - _wide(real)
    return (d.sign() * (1.0 / d.numel())).to(predicted.dtype)


# --- huber ---------------------------------------------------------------------------------------


LossFn = Callable[["Tensor", "Tensor"], "Tensor"]


def huber(delta: float) -> tuple[LossFn, LossFn]:
    """Huber with threshold δ: (forward, manual gradient)."""

    def forward(predicted: Tensor, real: Tensor) -> Tensor:
        """loss = (1/N) Σᵢ h(pᵢ − rᵢ), h(d) = ½d² if |d| < δ else δ(|d| − ½δ)
        (torch.nn.functional.huber_loss, reduction="mean")."""
        torch = import_torch()
        d = _wide(predicted) - _wide(real)
        a = d.abs()
        terms: Tensor = torch.where(a < delta, 0.5 * d.pow(2), delta * (a - 0.5 * delta))
        return terms.mean().to(predicted.dtype)

    def manual_grad(predicted: Tensor, real: Tensor) -> Tensor:
        """∂loss/∂pᵢ = h'(dᵢ) / N with h'(d) = d if |d| < δ, else δ · sign(d): clamp(d, −δ, δ).

        At |d| = δ both branches give ±δ (h is continuously differentiable), which is also what
        torch's huber_loss backward gives; the planted-tie tests check it.
        """
        d = _wide(predicted) - _wide(real)
        return (d.clamp(-delta, delta) * (1.0 / d.numel())).to(predicted.dtype)

    return forward, manual_grad


# --- bce-logits ----------------------------------------------------------------------------------


def bce_logits(predicted: Tensor, real: Tensor) -> Tensor:
    """loss = (1/N) Σᵢ [(1 − rᵢ) xᵢ − log σ(xᵢ)] with logits x = predicted, targets r in [0, 1].

    This is −[r log σ(x) + (1 − r) log(1 − σ(x))] rewritten with log(1 − σ(x)) = log σ(x) − x,
    the overflow-free form torch.nn.functional.binary_cross_entropy_with_logits uses.
    """
    torch = import_torch()
    x, r = _wide(predicted), _wide(real)
    log_sigmoid: Tensor = torch.nn.functional.logsigmoid(x)
    return ((1 - r) * x - log_sigmoid).mean().to(predicted.dtype)


def bce_logits_grad(predicted: Tensor, real: Tensor) -> Tensor:
    """∂loss/∂xᵢ = (σ(xᵢ) − rᵢ) / N.

    d/dx log σ(x) = σ'(x)/σ(x) = σ(x)(1 − σ(x))/σ(x) = 1 − σ(x), so the term's derivative is
    (1 − r) − (1 − σ(x)) = σ(x) − r. Smooth everywhere: no kink to choose a convention for.
    """
    x, r = _wide(predicted), _wide(real)
    return ((x.sigmoid() - r) * (1.0 / x.numel())).to(predicted.dtype)


# --- cross-entropy -------------------------------------------------------------------------------


def cross_entropy(predicted: Tensor, real: Tensor) -> Tensor:
    """loss = (1/N) Σₙ [logsumexp(xₙ) − xₙ[rₙ]]: logits x = predicted over the last dimension
    (C classes), real = class indices of shape predicted.shape[:-1], N = numel / C samples.

    This is −(1/N) Σₙ log softmax(xₙ)[rₙ]: torch.nn.functional.cross_entropy on the logits
    flattened to (N, C) (its class dimension is dim 1; ours is the last).
    """
    x = _wide(predicted)
    picked = x.gather(-1, real.unsqueeze(-1)).squeeze(-1)
    return (x.logsumexp(dim=-1) - picked).mean().to(predicted.dtype)


def cross_entropy_grad(predicted: Tensor, real: Tensor) -> Tensor:
    """∂loss/∂xₙⱼ = (softmax(xₙ)ⱼ − [j = rₙ]) / N.

    ∂ logsumexp(xₙ)/∂xₙⱼ = exp(xₙⱼ) / Σₖ exp(xₙₖ) = softmax(xₙ)ⱼ, and ∂xₙ[rₙ]/∂xₙⱼ is 1 for the
    target class j = rₙ and 0 otherwise (the one-hot of rₙ).
    """
    x = _wide(predicted)
    grad = x.softmax(dim=-1)
    index = real.unsqueeze(-1)
    grad.scatter_add_(-1, index, grad.new_full(index.shape, -1.0))  # − one-hot, in place
    samples = x.numel() // x.shape[-1]
    return (grad * (1.0 / samples)).to(predicted.dtype)


_RANDN_DRAWS = "real = torch.rand(shape), then predicted = torch.randn(shape)"


def huber_loss(delta: float = DEFAULT_DELTA) -> Loss:
    forward, manual_grad = huber(delta)
    return Loss(
        name="huber",
        formula=f"with h(d) = ½d² if |d| < δ else δ(|d| − ½δ), δ = {delta:g}:  "
        "loss = (1/N) Σ h(predicted − real)",
        gradient_formula="∂loss/∂predicted = clamp(predicted − real, −δ, δ) / N",
        forward=forward,
        manual_grad=manual_grad,
        draw_predicted=draw_randn,
        # Normal draws make |predicted − real| cross δ = 1 for about a third of the elements, so
        # both branches are checked at the default δ (uniform draws never would).
        draws=_RANDN_DRAWS,
    )


# --- the registry --------------------------------------------------------------------------------

LOSSES: dict[str, Loss] = {
    "mse-sum": Loss(
        name="mse-sum",
        formula="loss = Σ (predicted − real)²",
        gradient_formula="∂loss/∂predicted = 2 (predicted − real)",
        forward=_mse_sum,
        manual_grad=_mse_sum_grad,
        reduction="sum",
    ),
    "mse-mean": Loss(
        name="mse-mean",
        formula="loss = (1/N) Σ (predicted − real)²",
        gradient_formula="∂loss/∂predicted = 2 (predicted − real) / N",
        forward=mse_mean,
        manual_grad=mse_mean_grad,
    ),
    "l1": Loss(
        name="l1",
        formula="loss = (1/N) Σ |predicted − real|",
        gradient_formula="∂loss/∂predicted = sign(predicted − real) / N  (sign(0) = 0, as torch)",
        forward=l1,
        manual_grad=l1_grad,
    ),
    "huber": huber_loss(DEFAULT_DELTA),
    "bce-logits": Loss(
        name="bce-logits",
        formula="loss = (1/N) Σ [(1 − real)·predicted − log σ(predicted)]",
        gradient_formula="∂loss/∂predicted = (σ(predicted) − real) / N",
        forward=bce_logits,
        manual_grad=bce_logits_grad,
        draw_predicted=draw_randn,
        draws=_RANDN_DRAWS + " (logits; targets real in [0, 1])",
    ),
    "cross-entropy": Loss(
        name="cross-entropy",
        formula="loss = (1/N) Σₙ [logsumexp(predictedₙ) − predictedₙ[realₙ]]",
        gradient_formula="∂loss/∂predicted = (softmax(predicted) − one_hot(real)) / N",
        forward=cross_entropy,
        manual_grad=cross_entropy_grad,
        draw_real=draw_classes,
        draw_predicted=draw_randn,
        draws="real = torch.randint(C, shape[:-1]) (class indices, C = shape[-1]), then "
        "predicted = torch.randn(shape) (logits over the last dimension; N = numel / C samples)",
    ),
}
if tuple(LOSSES) != LOSS_NAMES:  # the spec names the losses (no torch); each name needs its loss
    raise ImportError(f"built-in losses {tuple(LOSSES)} differ from the spec's {LOSS_NAMES}")


def get_loss(name: str, delta: float | None = None) -> Loss:
    """A built-in loss by name; `delta` is Huber's δ (default 1.0)."""
    if name == "huber" and delta is not None:
        return huber_loss(delta)
    try:
        return LOSSES[name]
    except KeyError:
        known = ", ".join(LOSS_NAMES)
        raise BadInput(f"loss {name!r} is not known; choose one of {known}") from None
