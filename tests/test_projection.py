"""reference='projection': directions that weigh every element, a tolerance from the error of
the difference quotient itself (two steps, and the fourth difference at kinks) and from a correct
gradient's own rounding, so that one wrong element is caught and correct code is not failed."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from autograd_check import check
from autograd_check.references.independent import FALSE_FAIL, ROUNDING_SPREAD, Directions

SEEDS = range(20)


def leaf(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0,
         mean: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = mean + torch.randn(*shape, dtype=torch.float64, generator=gen)
    return x.to(dtype).requires_grad_()


class OneWrong(torch.autograd.Function):
    """y = x·sin(x), whose backward is right except at one element: the one whose |gradient| is
    closest to the gradient's root mean square (a typical element), off by the factor 1 + ERROR."""

    ERROR = 0.0

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * torch.sin(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        g = (grad_output * (torch.sin(x) + x * torch.cos(x))).contiguous()  # for .view
        flat = g.view(-1)
        i = int((flat.abs() - flat.pow(2).mean().sqrt()).abs().argmin())
        flat[i] *= 1 + OneWrong.ERROR
        return g


class LayerNorm(torch.autograd.Function):
    """A hand-written LayerNorm over the last dimension (no affine): x − mean cancels when the
    mean is large against the spread, so its float32 gradient carries that rounding."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        rstd = torch.rsqrt(((x - mean) ** 2).mean(-1, keepdim=True) + 1e-5)
        y = (x - mean) * rstd
        ctx.save_for_backward(y, rstd)
        return y

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        y, rstd = ctx.saved_tensors
        g = grad_output
        return rstd * (g - g.mean(-1, keepdim=True) - y * (g * y).mean(-1, keepdim=True))


@pytest.fixture
def error() -> Any:
    yield OneWrong
    OneWrong.ERROR = 0.0


def test_every_element_weighs_at_least_a_half_with_a_sign_of_its_own() -> None:
    x = torch.zeros(64, 80, dtype=torch.float64)
    directions = Directions(x, seed=3)
    drawn = []
    for j in range(3):
        directions.draw(j)
        drawn.append(directions.tensor(x))
    for v in drawn:
        assert v.abs().min() >= 0.5 and v.abs().max() < 1
        assert (v > 0).any() and (v < 0).any()
    # independent elements: no row or column shares a factor (v = a ⊗ b had rank 1), and the
    # directions differ from one another
    assert torch.linalg.matrix_rank(drawn[0]) > 1
    assert not torch.equal(drawn[0], drawn[1]) and not torch.equal(drawn[1], drawn[2])
    signs = torch.stack(drawn).sign()
    assert 0.45 < float((signs[0] == signs[1]).double().mean()) < 0.55


def test_the_constant_gives_the_stated_false_fail_probability() -> None:
    # Hoeffding: P(|Σ δᵢvᵢ| > c·‖δ‖₂) ≤ 2·exp(−c²/2) for independent signs and |vᵢ| ≤ 1
    assert ROUNDING_SPREAD == pytest.approx(5.387, abs=0.001)
    assert 2 * math.exp(-ROUNDING_SPREAD**2 / 2) == pytest.approx(FALSE_FAIL)


def test_the_bound_holds_for_a_correct_gradients_worst_rounding() -> None:
    """Errors all of one sign and of the largest size allowed (rtol·|gᵢ| + atol) are the rounding
    the bound must hold for: along 2000 directions none passes c·‖δ‖₂ (a Gaussian's tail past
    c/E|vᵢ|² is far below 1/2000)."""
    x = torch.zeros(4096, dtype=torch.float64)
    delta = torch.full((4096,), 1e-7, dtype=torch.float64)
    directions = Directions(x, seed=11)
    worst = 0.0
    for j in range(2000):
        directions.draw(j)
        worst = max(worst, abs(float(directions.along(delta))))
    bound = ROUNDING_SPREAD * float(torch.linalg.vector_norm(delta))
    assert worst < bound / 1.5


@pytest.mark.parametrize("wrong", [0.5, 0.1])
def test_one_wrong_element_among_65536_is_caught_every_time(error: Any, wrong: float) -> None:
    error.ERROR = wrong
    for seed in SEEDS:
        result = check(OneWrong.apply, leaf(256, 256, seed=seed), seed=seed)
        assert not result.passed, (seed, str(result))


def test_in_float32_a_wrong_element_is_caught_when_it_passes_float32s_rounding(
    error: Any
) -> None:
    error.ERROR = 1.0  # float32's atol = 1e-5 per element makes E_g ≈ 0.1 here
    for seed in SEEDS:
        x = leaf(256, 256, dtype=torch.float32, seed=seed)
        assert not check(OneWrong.apply, x, seed=seed).passed, seed


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_correct_code_passes_every_time(dtype: torch.dtype) -> None:
    for seed in SEEDS:
        result = check(OneWrong.apply, leaf(256, 256, dtype=dtype, seed=seed), seed=seed)
        assert result.passed, (seed, str(result))
        # x − mean cancels: 1000 ± 1 loses 10 bits, in float32 and in the float64 evaluations
        x = leaf(64, 256, dtype=dtype, seed=seed, mean=1000.0)
        result = check(LayerNorm.apply, x, seed=seed, directions=2)
        assert result.passed, (seed, str(result))


def test_rounding_within_the_dtype_is_allowed_for() -> None:
    """A manual gradient off by (almost) the most the dtype's tolerances allow in every element,
    with signs of its own, passes against projection (the errors add up like ‖δ‖₂)."""
    rtol = atol = 1e-7
    for seed in SEEDS:
        x = leaf(128, 128, seed=seed)
        gen = torch.Generator().manual_seed(1000 + seed)

        def manual(x: torch.Tensor, grad_output: torch.Tensor,
                   gen: torch.Generator = gen) -> torch.Tensor:
            g = (grad_output * (torch.sin(x) + x * torch.cos(x))).contiguous()  # for .view
            signs = torch.randint(0, 2, g.shape, generator=gen, dtype=torch.float64) * 2 - 1
            return g + 0.9 * signs * (rtol * g.abs() + atol)

        result = check(OneWrong.apply, x, manual=manual, reference="projection", seed=seed)
        assert result.passed, (seed, str(result))


def test_truncation_is_estimated_not_assumed() -> None:
    """A large step makes the central difference's truncation error far larger than float64's
    rounding: Richardson's estimate widens the tolerance by as much, and no more."""
    for seed in range(5):
        x = leaf(32, 32, seed=seed)
        result = check(lambda x: torch.sin(4 * x), x, seed=seed, step=1e-2)
        assert result.passed, (seed, str(result))
        assert result.comparisons[0].atol > 1e-3  # h² = 1e-4 times sin's third derivative


def test_kinks_crossed_by_the_step_do_not_fail_correct_code() -> None:
    """relu and abs with a step 10× the default, which crosses about one kink in each of the
    directions (0.4·2h·0.75·n ≈ 0.4 at n = 65536): the fourth difference sees them where the two
    steps agree while d(h) is off. (With tens of kinks crossed in one direction, step 1e-3, the
    estimate can fall short: docs/api.md gives the measured rate, false fails only.)"""
    for seed in SEEDS:
        x = leaf(256, 256, seed=seed)
        result = check(lambda x: 2 * torch.relu(x) + x.abs(), x, seed=seed, step=1e-5)
        assert result.passed, (seed, str(result))


@pytest.mark.parametrize("gap", [0.0, 1e-9, 3e-7, -5e-7])
def test_an_element_nearer_a_kink_than_the_step_does_not_fail_correct_code(gap: float) -> None:
    """One element of x at `gap` from abs's kink (h·|v| ≥ 2.5e-7 away from it, below 1e-6):
    d(h) and d(2h) are both off by about the same (Richardson sees nothing), the fourth difference
    sees the kink. (At gap 0, torch's gradient is 0, the central difference's too.)"""
    for seed in SEEDS:
        x = leaf(16, 16, seed=seed).detach()
        x[3, 5] = gap
        x.requires_grad_()
        result = check(lambda x: x.abs().sum() + (x**2).sum(), x, seed=seed)
        assert result.passed, (seed, str(result))


def test_the_block_says_what_was_used(error: Any) -> None:
    result = check(OneWrong.apply, leaf(4, 5), directions=3)
    block = result.reference
    assert block is not None
    assert block["evaluations"] == 2 * 3  # d(h) settles each direction: no d(2h), no L(x)
    assert "d(2h)" in block["criterion"] and "δ⁴L" in block["criterion"]
    assert "5.4·(rtol·‖g‖₂ + atol·√n)" in block["criterion"]
    assert result.comparisons[0].rtol == 0.0
    error.ERROR = 0.5
    failed = check(OneWrong.apply, leaf(4, 5), directions=3)
    assert not failed.passed and failed.reference is not None
    assert failed.reference["evaluations"] == 4 * 3 + 1
    assert failed.comparisons[0].atol > result.comparisons[0].atol


def test_a_passing_direction_needs_no_second_step() -> None:
    """The tolerance only widens with d(2h) and L(x): where d(h) is within the narrowest one
    (float64's rounding of L and the gradient's own), they are not evaluated."""
    calls = []

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.dtype)
        return torch.sin(x)

    check(counted, leaf(8, 8))
    # autograd's pass, then L(x + h·v) and L(x − h·v) along each of the 3 default directions
    assert calls == [torch.float64] * (1 + 2 * 3)


class TwoWrong(torch.autograd.Function):
    """L = Σ x·sin(x), whose backward adds ERRORS·grad_output at the flat indices AT."""

    AT: list[int] = []
    ERRORS: list[float] = []

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return (x * torch.sin(x)).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        g = (grad_output * (torch.sin(x) + x * torch.cos(x))).contiguous()  # for .view
        for i, e in zip(TwoWrong.AT, TwoWrong.ERRORS, strict=True):
            g.view(-1)[i] += e * grad_output
        return g


def test_errors_that_cancel_along_one_direction_are_caught_by_the_next() -> None:
    """Two wrong elements whose errors cancel exactly along the first direction (the false PASS
    one direction leaves): the default k = 3 fails the check, and the wrong elements are located
    along the direction that disagreed, not the first (which agrees)."""
    x = leaf(64, 64, seed=0)
    first = Directions(x.detach(), seed=0 + 1)  # check(seed=0), the first checked tensor
    first.draw(0)
    assert first.v is not None
    at = [100, 2000]
    TwoWrong.AT = at
    TwoWrong.ERRORS = [0.5, -0.5 * float(first.v[at[0]] / first.v[at[1]])]
    try:
        assert check(TwoWrong.apply, x, seed=0, directions=1).passed  # what k = 1 misses
        result = check(TwoWrong.apply, x, seed=0)
    finally:
        TwoWrong.AT, TwoWrong.ERRORS = [], []
    assert not result.passed, str(result)
    located = result.comparisons[0].located
    assert located is not None and located["exhaustive"]
    found = [e["index"] for e in located["elements"]]
    assert found == [list(divmod(i, 64)) for i in at]
