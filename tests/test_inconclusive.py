"""A pass must be one the check could have refused: a gradient with an inf or NaN fails (never
passes, never raises torch's own error), and a check whose tolerance is as wide as the gradient
it checks (atol beside a mean over many elements, fn's rounding beside a -1e9 mask, a forward
that computes in float32 inside) is refused as Inconclusive, exit 2, with what to change; a check
that fails for another reason still fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from autograd_check import check
from autograd_check.base.errors import EXIT_BAD_INPUT, EXIT_MISMATCH, Inconclusive
from autograd_check.cli import app

runner = CliRunner()


class OverflowingExp(torch.autograd.Function):
    """exp in float32 whose backward overflows to inf where exp(x)·exp(x) does (the truth,
    exp(x)·grad_output, is finite)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return g * y * y / y  # y·y overflows to inf before the division


class NaNAtOne(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x.sin()

    @staticmethod
    def jvp(ctx: Any, x_t: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return x_t * x.cos()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        grad = g * x.cos()
        grad.view(-1)[3] = float("nan")
        return grad


class MaskedScores(torch.autograd.Function):
    """Attention scores q·kᵀ with the upper triangle filled with -1e9 (the usual causal mask);
    the backward returns zeros."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scores = q @ k.transpose(-1, -2)
        mask = torch.ones_like(scores, dtype=torch.bool).triu(1)
        return scores.masked_fill(mask, -1e9)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(g.shape[0], g.shape[1], 8), torch.zeros(g.shape[0], g.shape[1], 8)


class MeanSquare(torch.autograd.Function):
    """mean((x − r)²), its backward forgetting the 2: every element of the gradient is about
    1/n, below float32's atol (1e-5) when n = 10⁵."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x - r)
        return ((x - r) ** 2).mean()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        (d,) = ctx.saved_tensors
        return g * d / d.numel(), None


def test_an_inf_in_the_gradient_fails_it() -> None:
    x = torch.full((4, 5), 50.0, requires_grad=True)  # exp(50)² = 2.7e43: past float32's max
    result = check(OverflowingExp.apply, x)
    assert not result.passed and result.exit_code == EXIT_MISMATCH, str(result)


@pytest.mark.parametrize("reference", ["projection", "forward"])
def test_a_nan_in_the_gradient_fails_it_without_an_error(reference: str) -> None:
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    result = check(NaNAtOne.apply, x, reference=reference)
    assert not result.passed and result.exit_code == EXIT_MISMATCH, str(result)


def test_a_nan_in_a_manual_gradient_fails_it_without_an_error() -> None:
    def manual(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output * x.cos()
        grad.view(-1)[3] = float("nan")
        return grad

    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    for reference in ("autograd", "projection", "forward"):
        result = check(torch.sin, x, manual=manual, reference=reference)
        assert not result.passed and result.exit_code == EXIT_MISMATCH, str(result)


def test_a_reference_that_overflows_measures_nothing_and_is_refused() -> None:
    # a correct backward; fn's float64 evaluations overflow, so projection has no number
    q = torch.randn(2, 8, 4, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 8, 4, dtype=torch.float64, requires_grad=True)

    def masked(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        scores = q @ k.transpose(-1, -2)
        mask = torch.ones_like(scores, dtype=torch.bool).triu(1)
        return scores.masked_fill(mask, torch.finfo(torch.float64).min)

    with pytest.raises(Inconclusive, match="cannot measure q's derivative"):
        check(masked, q, k, reference="projection")


def test_a_mask_of_minus_1e9_hides_the_gradient_so_the_check_is_refused() -> None:
    torch.manual_seed(0)
    q = torch.randn(2, 16, 8, requires_grad=True)
    k = torch.randn(2, 16, 8, requires_grad=True)
    with pytest.raises(Inconclusive, match=r"a zero gradient would pass; fn's own rounding"):
        check(MaskedScores.apply, q, k)


def test_a_mean_over_many_float32_elements_is_refused_until_atol_fits_it() -> None:
    torch.manual_seed(0)
    x = torch.rand(1000, 100, requires_grad=True)
    r = torch.rand(1000, 100)
    with pytest.raises(Inconclusive, match=r"atol=1e-05 allows .* give a smaller atol"):
        check(MeanSquare.apply, x, r)
    # with the atol it names, the same check fails the missing 2
    result = check(MeanSquare.apply, x, r, atol=1e-9)
    assert not result.passed and result.exit_code == EXIT_MISMATCH


def test_a_gradient_that_is_zero_beside_the_others_is_checked_not_refused() -> None:
    # fn does not depend on y at all: its gradient is exactly zero, and checked as zero
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert check(lambda x, y: x.sin() + 0 * y, x, y).passed


def test_a_check_that_fails_elsewhere_still_fails() -> None:
    # the mean-square bug, with a grad_output-ignoring contract failure on top: FAIL, not refused
    torch.manual_seed(0)
    x = torch.rand(1000, 100, requires_grad=True)
    r = torch.rand(1000, 100)

    class Ignores(MeanSquare):
        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
            (d,) = ctx.saved_tensors
            return d * 1e3, None

    result = check(Ignores.apply, x, r)
    assert not result.passed and result.exit_code == EXIT_MISMATCH


HALF_GRAD = """
class HalfGrad:
    def loss(self, predicted, real):
        return ((predicted - real) ** 2).mean()

    def manual_grad(self, predicted, real):
        return (predicted - real) / predicted.numel()  # the 2 forgotten


half_grad = HalfGrad()
"""


@pytest.mark.parametrize(("flags", "code"), [
    ([], EXIT_BAD_INPUT),
    (["--atol", "1e-7"], EXIT_MISMATCH),
    (["--dtype", "float64"], EXIT_MISMATCH),
])
def test_run_with_a_mean_loss_over_many_elements(tmp_path: Path, flags: list[str],
                                                 code: int) -> None:
    target = tmp_path / "half.py"
    target.write_text(HALF_GRAD)
    result = runner.invoke(app, ["run", "--target", f"{target}:half_grad", "--shape", "1000x100",
                                 "--no-show-tensors", *flags],
                           env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == code, result.output
    if code == EXIT_BAD_INPUT:
        assert result.stderr.count("\n") == 1 and "give a smaller atol (1e-07 or less)" in (
            result.stderr)
        assert "Traceback" not in result.stderr


def test_a_bit_exact_match_is_not_refused() -> None:
    # the tutorial's own mse-mean formula is bit-exact with autograd's: nothing to resolve
    result = runner.invoke(app, ["run", "--loss", "mse-mean", "--shape", "1000x100",
                                 "--no-show-tensors"], env={"COLUMNS": "100", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
