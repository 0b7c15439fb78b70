"""A library of planted gradient bugs, each with the diagnosis a failed check must give it, and
correct implementations that must pass with none (docs/reading-a-failure.md).

Each bug is written as people write them: a custom torch.autograd.Function with a hand-written
backward (checked by finite differences, which give every element's reference, or by the
default projection when the bug breaks a rule of the backward's contract), or a hand-derived
gradient for check(fn, *inputs, manual=...). The bug's line is marked `# the bug:`. Each draws
its shapes and values from the seed, so the same bug is checked at many sizes.

    kind                  bug                            what it gets wrong
    scale                 cross_entropy_forgot_mean      the 1/N of a mean loss forgotten: N x
    scale                 mse_averaged_twice             a mean loss divided by the batch again
    scale                 mse_forgot_two                 d(x²) = x, not 2x
    sign                  exp_decay_sign                 d exp(−x) = +exp(−x)
    transpose             square_linear_weight           x.T @ g for a square layer's weight
    swapped               gate_grads_swapped             (grad_b, grad_a) returned for (a, b)
    zero                  scale_param_forgotten          None returned for a parameter
    subset                smooth_l1_branch               1 for sign(d) in |d| ≥ β (d < −β wrong)
    subset                leaky_relu_slope               the negative slope forgotten (x < 0)
    axis                  softmax_wrong_axis             Σ over dimension 0, not −1
    axis                  softmax_missing_keepdim        Σ without keepdim, broadcast wrongly
    axis                  batch_norm_mean_term           BatchNorm dx with − mean(dx̂) dropped
    axis                  centring_wrong_axis            x − mean: the mean's gradient on dim 0
    slice-scale           sequence_loss_per_row          each row's 1/length forgotten
    precision             sigmoid_reordered              g·s − g·s² (exact: not bit-exact)
    grad-output-mutated   relu_zeroes_grad_output        g[x < 0] = 0 writes into grad_output
    grad-output-ignored   mse_loss_function              a loss's backward without grad_output
    input-mutated         residual_aliased               d = predicted; d -= real
    unknown               swish_missing_factor           a factor lost inside the formula
    unknown               gelu_tanh_gradient             another formula's gradient (tanh GELU)
    unknown               gelu_rounded_constant          1/√(2π) written 0.39894

A bug of kind `unknown` is named right when its check fails and claims nothing (a finding of
kind unknown, or none).

    python examples/planted_bugs.py              # one line per bug and correct case; exits 0
                                                 # when each gets its diagnosis
    python examples/planted_bugs.py NAME [SEED]  # one case's verdict in full
    python examples/planted_bugs.py --causes [SEED]  # each bug's likely-cause lines
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from autograd_check import check
from autograd_check.base.result import CheckResult

F64 = torch.float64
CONFIDENT = ("unknown",)
"""Findings of these kinds claim nothing: `unknown` is never a wrong claim."""


@dataclass
class Planted:
    """One check of a bug at one seed, and what its diagnosis must say."""

    result: CheckResult
    tensor: str | None = None
    """The checked tensor the finding must name (None: any, as a contract finding names all)."""
    factor: float | None = None
    says: tuple[str, ...] = ()
    """Phrases the finding's text must hold (a factor named as a size, a condition)."""


@dataclass
class Bug:
    name: str
    kind: str
    """The diagnosis it must get: kernel/diagnose.py's kinds, or a contract rule's."""
    make: Callable[[int], Planted]
    story: str


@dataclass
class Verdict:
    """How one check of a bug (or of correct code) was diagnosed."""

    named: bool
    """The declared kind, on the declared tensor, with its factor and phrases."""
    wrong: list[str] = field(default_factory=list)
    """Confident findings of another kind: wrong claims."""
    kinds: list[str] = field(default_factory=list)


BUGS: dict[str, Bug] = {}
CORRECT: dict[str, Callable[[int], CheckResult]] = {}


def bug(kind: str) -> Callable[[Callable[[int], Planted]], Callable[[int], Planted]]:
    def register(make: Callable[[int], Planted]) -> Callable[[int], Planted]:
        story = (make.__doc__ or "").strip().splitlines()[0]
        BUGS[make.__name__] = Bug(make.__name__, kind, make, story)
        return make
    return register


def correct(make: Callable[[int], CheckResult]) -> Callable[[int], CheckResult]:
    CORRECT[make.__name__] = make
    return make


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _size(gen: torch.Generator, low: int, high: int) -> int:
    """A whole number in [low, high], drawn from gen."""
    return int(torch.randint(low, high + 1, (), generator=gen))


def _randn(gen: torch.Generator, *shape: int, grad: bool = True) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=F64, requires_grad=grad)


# -- scale ------------------------------------------------------------------------------------
def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, target)


def cross_entropy_grad_no_mean(logits: torch.Tensor, target: torch.Tensor,
                               grad_output: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(-1)
    p[torch.arange(len(target)), target] -= 1
    return grad_output * p  # the bug: the mean's / len(target) forgotten


def cross_entropy_grad(logits: torch.Tensor, target: torch.Tensor,
                       grad_output: torch.Tensor) -> torch.Tensor:
    p = logits.softmax(-1)
    p[torch.arange(len(target)), target] -= 1
    return grad_output * p / len(target)


def _logits(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = _gen(seed)
    n, c = _size(gen, 5, 48), _size(gen, 3, 12)
    return _randn(gen, n, c), torch.randint(0, c, (n,), generator=gen)


@bug("scale")
def cross_entropy_forgot_mean(seed: int) -> Planted:
    """Cross-entropy (mean over the batch) whose gradient forgets the 1/N: N times too large."""
    logits, target = _logits(seed)
    n = logits.shape[0]
    result = check(cross_entropy, logits, target, manual=cross_entropy_grad_no_mean, seed=seed)
    return Planted(result, "logits", float(n), (f"{n} (shape[0] of logits)",))


@correct
def cross_entropy_right(seed: int) -> CheckResult:
    logits, target = _logits(seed)
    return check(cross_entropy, logits, target, manual=cross_entropy_grad, seed=seed)


def mse(predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(predicted, real)


def _regression(seed: int, low: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = _gen(seed)
    n, d = _size(gen, low, 40), _size(gen, 2, 16)
    return _randn(gen, n, d), _randn(gen, n, d, grad=False)


@bug("scale")
def mse_averaged_twice(seed: int) -> Planted:
    """A mean squared error averaged over its elements, then over the batch again: 1/N."""
    predicted, real = _regression(seed)
    n = predicted.shape[0]

    def grad(predicted: torch.Tensor, real: torch.Tensor,
             grad_output: torch.Tensor) -> torch.Tensor:
        g = grad_output * 2 * (predicted - real) / predicted.numel()
        return g / predicted.shape[0]  # the bug: the mean was already taken over every element

    result = check(mse, predicted, real, manual=grad, seed=seed)
    return Planted(result, "predicted", 1 / n, (f"1/{n} (1/shape[0] of predicted)",))


@bug("scale")
def mse_forgot_two(seed: int) -> Planted:
    """A mean squared error whose gradient is d/N, not 2d/N: half the right size."""
    predicted, real = _regression(seed)

    def grad(predicted: torch.Tensor, real: torch.Tensor,
             grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output * (predicted - real) / predicted.numel()  # the bug: 2 * (p − r)

    result = check(mse, predicted, real, manual=grad, seed=seed)
    return Planted(result, "predicted", 0.5, ("is 1/2 times",))


# -- sign -------------------------------------------------------------------------------------
class ExpDecay(torch.autograd.Function):
    """exp(−x), whose backward forgets the chain rule's minus sign."""

    @staticmethod
    def forward(ctx, x):
        y = torch.exp(-x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return grad_output * y  # the bug: d exp(−x)/dx = −exp(−x)


def _matrix(seed: int, low: int = 3, high: int = 12) -> torch.Tensor:
    gen = _gen(seed)
    return _randn(gen, _size(gen, low, high), _size(gen, low, high))


@bug("sign")
def exp_decay_sign(seed: int) -> Planted:
    """exp(−x) as a Function whose backward returns +exp(−x)·g: the sign flipped."""
    x = _matrix(seed)
    return Planted(check(ExpDecay.apply, x, reference="finite-diff", seed=seed), "x", -1.0)


# -- transpose --------------------------------------------------------------------------------
class Linear(torch.autograd.Function):
    """y = x Wᵀ + b, as nn.Linear computes it."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        return grad_output @ weight, grad_output.T @ x, grad_output.sum(0)


class SquareLinear(Linear):
    """Linear whose weight gradient is transposed: shapes agree only for a square layer, so
    nothing breaks until the numbers are checked."""

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        return grad_output @ weight, x.T @ grad_output, grad_output.sum(0)  # the bug: g.T @ x


def _layer(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = _gen(seed)
    n, d = _size(gen, 2, 12), _size(gen, 2, 12)
    return _randn(gen, n, d), _randn(gen, d, d), _randn(gen, d)


@bug("transpose")
def square_linear_weight(seed: int) -> Planted:
    """A square linear layer whose weight gradient is x.T @ g, the transpose of g.T @ x."""
    x, weight, bias = _layer(seed)
    result = check(SquareLinear.apply, x, weight, bias, reference="finite-diff", seed=seed)
    return Planted(result, "weight")


@correct
def linear_right(seed: int) -> CheckResult:
    x, weight, bias = _layer(seed)
    return check(Linear.apply, x, weight, bias, reference="finite-diff", seed=seed)


# -- swapped ----------------------------------------------------------------------------------
def gate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a * torch.sigmoid(b)


@bug("swapped")
def gate_grads_swapped(seed: int) -> Planted:
    """A gate a·σ(b) whose hand-derived gradients come back in the wrong order."""
    gen = _gen(seed)
    shape = (_size(gen, 2, 10), _size(gen, 2, 10))
    a, b = _randn(gen, *shape), _randn(gen, *shape)

    def grads(a: torch.Tensor, b: torch.Tensor,
              grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = torch.sigmoid(b)
        grad_a, grad_b = grad_output * s, grad_output * a * s * (1 - s)
        return grad_b, grad_a  # the bug: (grad_a, grad_b), in the inputs' order

    return Planted(check(gate, a, b, manual=grads, seed=seed), "a")


# -- zero -------------------------------------------------------------------------------------
class Scale(torch.autograd.Function):
    """y = x · scale, a learned per-feature scale, whose backward returns None for it."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.save_for_backward(x, scale)
        return x * scale

    @staticmethod
    def backward(ctx, grad_output):
        x, scale = ctx.saved_tensors
        return grad_output * scale, None  # the bug: (grad_output * x).sum(0) for scale


@bug("zero")
def scale_param_forgotten(seed: int) -> Planted:
    """A per-feature scale whose backward returns None for the scale: its gradient is zero."""
    gen = _gen(seed)
    n, d = _size(gen, 2, 16), _size(gen, 2, 16)
    x, scale = _randn(gen, n, d), _randn(gen, d)
    return Planted(check(Scale.apply, x, scale, reference="finite-diff", seed=seed), "scale")


# -- subset -----------------------------------------------------------------------------------
BETA = 0.25


def smooth_l1(predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    d = predicted - real
    return torch.where(d.abs() < BETA, d.pow(2) / (2 * BETA), d.abs() - BETA / 2).sum()


def smooth_l1_grad_branch(predicted: torch.Tensor, real: torch.Tensor,
                          grad_output: torch.Tensor) -> torch.Tensor:
    d = predicted - real
    return grad_output * torch.where(d.abs() < BETA, d / BETA, torch.ones_like(d))  # the bug


def smooth_l1_grad(predicted: torch.Tensor, real: torch.Tensor,
                   grad_output: torch.Tensor) -> torch.Tensor:
    d = predicted - real
    return grad_output * torch.where(d.abs() < BETA, d / BETA, torch.sign(d))


def _pairs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = _gen(seed)
    n, d = _size(gen, 6, 16), _size(gen, 6, 16)
    return _randn(gen, n, d), _randn(gen, n, d, grad=False)


@bug("subset")
def smooth_l1_branch(seed: int) -> Planted:
    """Smooth L1 whose |d| ≥ β branch is 1, not sign(d): wrong exactly where d < −β."""
    predicted, real = _pairs(seed)
    result = check(smooth_l1, predicted, real, manual=smooth_l1_grad_branch, seed=seed)
    return Planted(result, "predicted", None, ("wrong exactly where predicted − real < -0.",))


@correct
def smooth_l1_right(seed: int) -> CheckResult:
    predicted, real = _pairs(seed)
    return check(smooth_l1, predicted, real, manual=smooth_l1_grad, seed=seed)


class LeakyReLU(torch.autograd.Function):
    """max(x, 0.2·x)."""

    slope = 0.2

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x > 0, x, LeakyReLU.slope * x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return torch.where(x > 0, grad_output, LeakyReLU.slope * grad_output)


class LeakyReLUNoSlope(LeakyReLU):
    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output * (x > 0)  # the bug: ReLU's backward, the 0.2 slope forgotten


@bug("subset")
def leaky_relu_slope(seed: int) -> Planted:
    """A leaky ReLU whose backward is ReLU's: wrong exactly where x < 0."""
    x = _matrix(seed, 6, 14)
    result = check(LeakyReLUNoSlope.apply, x, reference="finite-diff", seed=seed)
    return Planted(result, "x", None, ("wrong exactly where x < ",))


@correct
def leaky_relu_right(seed: int) -> CheckResult:
    return check(LeakyReLU.apply, _matrix(seed, 6, 14), reference="finite-diff", seed=seed)


# -- axis -------------------------------------------------------------------------------------
class Softmax(torch.autograd.Function):
    """softmax over the last dimension: dx = y·(g − Σⱼ g·y)."""

    @staticmethod
    def forward(ctx, x):
        y = x.softmax(-1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return y * (grad_output - (grad_output * y).sum(-1, keepdim=True))


class SoftmaxWrongAxis(Softmax):
    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        return y * (grad_output - (grad_output * y).sum(0, keepdim=True))  # the bug: sum(-1)


class SoftmaxNoKeepdim(Softmax):
    @staticmethod
    def backward(ctx, grad_output):
        (y,) = ctx.saved_tensors
        # the bug: without keepdim=True the row sums broadcast along the rows (square x only)
        return y * (grad_output - (grad_output * y).sum(-1))


@bug("axis")
def softmax_wrong_axis(seed: int) -> Planted:
    """A softmax whose backward sums over dimension 0, not the softmax's own (−1)."""
    x = _matrix(seed)
    return Planted(check(SoftmaxWrongAxis.apply, x, reference="finite-diff", seed=seed), "x")


@bug("axis")
def softmax_missing_keepdim(seed: int) -> Planted:
    """A softmax of a square input whose backward's row sums lack keepdim: broadcast wrongly."""
    gen = _gen(seed)
    n = _size(gen, 3, 12)
    x = _randn(gen, n, n)
    return Planted(check(SoftmaxNoKeepdim.apply, x, reference="finite-diff", seed=seed), "x")


@correct
def softmax_right(seed: int) -> CheckResult:
    return check(Softmax.apply, _matrix(seed), reference="finite-diff", seed=seed)


def batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, None, None, weight, bias, training=True, eps=1e-5)


def _batch_norm_grads(x: torch.Tensor, weight: torch.Tensor, grad_output: torch.Tensor,
                      mean_term: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mean, var = x.mean(0), x.var(0, unbiased=False)
    std = torch.sqrt(var + 1e-5)
    xhat = (x - mean) / std
    dxhat = grad_output * weight
    dx = dxhat - xhat * (dxhat * xhat).mean(0)
    if mean_term:
        dx = dx - dxhat.mean(0)
    return dx / std, (grad_output * xhat).sum(0), grad_output.sum(0)


def batch_norm_grads(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                     grad_output: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return _batch_norm_grads(x, weight, grad_output, mean_term=True)


def batch_norm_grads_no_mean(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                             grad_output: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return _batch_norm_grads(x, weight, grad_output, mean_term=False)  # the bug: − mean(dx̂)


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = _gen(seed)
    n, c = _size(gen, 4, 32), _size(gen, 2, 12)
    return _randn(gen, n, c), _randn(gen, c), _randn(gen, c)


@bug("axis")
def batch_norm_mean_term(seed: int) -> Planted:
    """BatchNorm's dx with the − mean(dx̂) term dropped: wrong by a term constant over the
    batch."""
    x, weight, bias = _batch(seed)
    result = check(batch_norm, x, weight, bias, manual=batch_norm_grads_no_mean, seed=seed)
    return Planted(result, "x", None, ("along dimension 0",))


@correct
def batch_norm_right(seed: int) -> CheckResult:
    x, weight, bias = _batch(seed)
    return check(batch_norm, x, weight, bias, manual=batch_norm_grads, seed=seed)


def centre(x: torch.Tensor) -> torch.Tensor:
    return x - x.mean(-1, keepdim=True)


@bug("axis")
def centring_wrong_axis(seed: int) -> Planted:
    """x − mean over features, whose gradient subtracts the mean over the batch."""
    x = _matrix(seed)

    def grad(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output - grad_output.mean(0, keepdim=True)  # the bug: mean(-1, keepdim)

    return Planted(check(centre, x, manual=grad, seed=seed), "x")


# -- slice-scale ------------------------------------------------------------------------------
def sequence_loss(predicted: torch.Tensor, real: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over each sequence's own tokens, then over the batch."""
    per_token = (predicted - real) ** 2 * mask
    return (per_token.sum(1) / mask.sum(1)).mean()


def _sequences(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = _gen(seed)
    n, t = _size(gen, 3, 12), _size(gen, 3, 16)
    lengths = torch.randint(1, t + 1, (n,), generator=gen)
    if bool((lengths == lengths[0]).all()):  # rows of one length: one constant, a scale
        lengths[0] = lengths[0] % t + 1
    mask = (torch.arange(t)[None, :] < lengths[:, None]).to(F64)
    return _randn(gen, n, t), _randn(gen, n, t, grad=False), mask


def sequence_loss_grad(predicted: torch.Tensor, real: torch.Tensor, mask: torch.Tensor,
                       grad_output: torch.Tensor) -> torch.Tensor:
    g = 2 * (predicted - real) * mask / mask.sum(1, keepdim=True)
    return grad_output * g / predicted.shape[0]


@bug("slice-scale")
def sequence_loss_per_row(seed: int) -> Planted:
    """A per-sequence mean over padded tokens whose gradient forgets each row's 1/length."""
    predicted, real, mask = _sequences(seed)

    def grad(predicted: torch.Tensor, real: torch.Tensor, mask: torch.Tensor,
             grad_output: torch.Tensor) -> torch.Tensor:
        g = 2 * (predicted - real) * mask  # the bug: / mask.sum(1, keepdim=True)
        return grad_output * g / predicted.shape[0]

    result = check(sequence_loss, predicted, real, mask, manual=grad, seed=seed)
    return Planted(result, "predicted", None, ("along dimension 0",))


@correct
def sequence_loss_right(seed: int) -> CheckResult:
    predicted, real, mask = _sequences(seed)
    return check(sequence_loss, predicted, real, mask, manual=sequence_loss_grad, seed=seed)


# -- precision --------------------------------------------------------------------------------
def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


@bug("precision")
def sigmoid_reordered(seed: int) -> Planted:
    """sigmoid's gradient as g·s − g·s² where autograd computes g·(1 − s)·s: right, but not
    bit-exact, which exact=True asks for."""
    gen = _gen(seed)
    x = _randn(gen, _size(gen, 8, 32), _size(gen, 8, 32))

    def grad(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)
        return grad_output * s - grad_output * s * s

    return Planted(check(sigmoid, x, manual=grad, exact=True, seed=seed), "x")


# -- the backward's contract ------------------------------------------------------------------
class ReLUWritesGradOutput(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        grad_output[x < 0] = 0  # the bug: writes into grad_output (clone it first)
        return grad_output


@bug("grad-output-mutated")
def relu_zeroes_grad_output(seed: int) -> Planted:
    """A ReLU whose backward zeroes grad_output in place: right numbers, a broken rule."""
    return Planted(check(ReLUWritesGradOutput.apply, _matrix(seed), seed=seed))


class MSELoss(torch.autograd.Function):
    """mean((predicted − real)²)."""

    @staticmethod
    def forward(ctx, predicted, real):
        d = predicted - real
        ctx.save_for_backward(d)
        return (d * d).mean()

    @staticmethod
    def backward(ctx, grad_output):
        (d,) = ctx.saved_tensors
        return grad_output * 2 * d / d.numel(), None


class MSELossNoGradOutput(MSELoss):
    @staticmethod
    def backward(ctx, grad_output):
        (d,) = ctx.saved_tensors
        return 2 * d / d.numel(), None  # the bug: right at grad_output = 1 only (loss scaling)


@bug("grad-output-ignored")
def mse_loss_function(seed: int) -> Planted:
    """A loss Function whose backward never multiplies by grad_output."""
    predicted, real = _regression(seed, low=2)
    return Planted(check(MSELossNoGradOutput.apply, predicted, real, seed=seed))


@correct
def mse_loss_function_right(seed: int) -> CheckResult:
    predicted, real = _regression(seed, low=2)
    return check(MSELoss.apply, predicted, real, seed=seed)


def squared_error(predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return ((predicted - real) ** 2).sum()


@bug("input-mutated")
def residual_aliased(seed: int) -> Planted:
    """A gradient that names predicted d and subtracts in place: it writes into predicted."""
    predicted, real = _regression(seed, low=2)

    def grad(predicted: torch.Tensor, real: torch.Tensor,
             grad_output: torch.Tensor) -> torch.Tensor:
        d = predicted  # the bug: an alias, not a copy (predicted - real, or .clone())
        d -= real
        return grad_output * 2 * d

    return Planted(check(squared_error, predicted, real, manual=grad, seed=seed))


# -- unknown: no simple explanation, and none claimed ----------------------------------------
class Swish(torch.autograd.Function):
    """x·σ(x), whose backward forgets a factor inside the formula (examples/function_buggy.py)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad_output * (s + x * s)  # the bug: s + x·s·(1 − s)


@bug("unknown")
def swish_missing_factor(seed: int) -> Planted:
    """Swish's backward without its (1 − σ) factor: wrong everywhere, by no simple rule."""
    x = _matrix(seed)
    return Planted(check(Swish.apply, x, reference="finite-diff", seed=seed), "x")


def gelu(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x)


@bug("unknown")
def gelu_tanh_gradient(seed: int) -> Planted:
    """GELU (exact, with erf) checked against the tanh approximation's gradient: off by about
    1e-3, growing and shrinking with x, never one branch or one factor."""
    x = _matrix(seed, 6, 14)

    def grad(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        k = (2 / torch.pi) ** 0.5
        inner = k * (x + 0.044715 * x**3)
        t = torch.tanh(inner)
        dinner = k * (1 + 3 * 0.044715 * x**2)
        return grad_output * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner)  # the bug

    return Planted(check(gelu, x, manual=grad, seed=seed), "x")


@bug("unknown")
def gelu_rounded_constant(seed: int) -> Planted:
    """GELU's exact gradient Φ(x) + x·φ(x) with 1/√(2π) written 0.39894: off by a few parts in a
    million, past float64's tolerance, and smaller than any explanation's own allowance."""
    x = _matrix(seed, 6, 14)

    def grad(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        phi = 0.39894 * torch.exp(-x * x / 2)  # the bug: 1/√(2π) = 0.3989422804...
        return grad_output * (0.5 * (1 + torch.erf(x / 2**0.5)) + x * phi)

    return Planted(check(gelu, x, manual=grad, seed=seed), "x")


# -- judging ----------------------------------------------------------------------------------
def judge(b: Bug, seed: int) -> Verdict:
    """Whether the check of b at seed named it right, and its confident wrong claims."""
    planted = b.make(seed)
    found = planted.result.diagnosis
    wrong = [f"{d['tensor']}: {d['kind']}" for d in found
             if d["kind"] != b.kind and d["kind"] not in CONFIDENT]
    if b.kind == "unknown":
        named = not planted.result.passed and not wrong
    else:
        named = not planted.result.passed and any(_matches(d, b.kind, planted) for d in found)
    return Verdict(named, wrong, [d["kind"] for d in found])


def _matches(d: dict[str, object], kind: str, planted: Planted) -> bool:
    if d["kind"] != kind or (planted.tensor is not None and d["tensor"] != planted.tensor):
        return False
    if planted.factor is not None:
        factor = d["factor"]
        if not isinstance(factor, float) or abs(factor - planted.factor) > 1e-6 * abs(
                planted.factor):
            return False
    return all(phrase in str(d["text"]) for phrase in planted.says)


def false_claims(make: Callable[[int], CheckResult], seed: int) -> list[str]:
    """Correct code: a failed check, or any finding at all, is a false claim."""
    result = make(seed)
    claims = [f"{d['tensor']}: {d['kind']}" for d in result.diagnosis]
    return claims if claims or not result.passed else []


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--causes":  # each bug's likely-cause lines at one seed
        seed = int(argv[1]) if len(argv) > 1 else 0
        for b in BUGS.values():
            result = b.make(seed).result
            lines = [line for line in str(result).splitlines()
                     if line.startswith("likely cause")]
            print(f"{b.name} ({b.kind}):")
            print("\n".join(f"  {line}" for line in lines) or "  (no finding)")
        return 0
    if argv:
        name, seed = argv[0], int(argv[1]) if len(argv) > 1 else 0
        print(BUGS[name].make(seed).result if name in BUGS else CORRECT[name](seed))
        return 0
    ok = True
    for b in BUGS.values():
        v = judge(b, 0)
        ok = ok and v.named and not v.wrong
        print(f"{'named' if v.named else 'MISSED':6}  {b.kind:20}  {b.name:28} "
              f"{', '.join(v.kinds) or '-'}")
    for name, make in CORRECT.items():
        claims = false_claims(make, 0)
        ok = ok and not claims
        print(f"{'pass' if not claims else 'CLAIM':6}  {'correct':20}  {name:28} "
              f"{', '.join(claims) or '-'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
