"""The engine against the tutorial's own code, across dtypes and ranks, and its statistics."""

from __future__ import annotations

import math

import pytest
import torch

from autograd_check.base.spec import DTYPES, build_spec
from autograd_check.execute import execute
from autograd_check.kernel.compare import compare, unravel
from autograd_check.losses import builtin as losses


def tutorial(seed: int) -> dict[str, torch.Tensor]:
    """The practice page's example, verbatim but for the seed."""
    torch.manual_seed(seed)
    real = torch.rand(3, 8)
    predicted = torch.rand(3, 8, requires_grad=True)
    loss = (predicted - real).pow(2).sum()
    with torch.no_grad():
        manual_gradient_predicted = 2.0 * (predicted - real)
    loss.backward()
    auto_gradient_predicted = predicted.grad
    assert auto_gradient_predicted is not None
    return {
        "real": real,
        "predicted": predicted.detach(),
        "manual": manual_gradient_predicted,
        "auto": auto_gradient_predicted,
        "loss": loss.detach(),
        "eq": manual_gradient_predicted.eq(auto_gradient_predicted).all(),
    }


@pytest.mark.parametrize("seed", [0, 1, 42, 2**31 + 5])
def test_same_tensors_as_the_tutorial(seed: int) -> None:
    expected = tutorial(seed)
    result = execute(build_spec({"seed": seed}))
    t = result.tensors
    assert torch.equal(torch.tensor(t["real"].data), expected["real"])
    assert torch.equal(torch.tensor(t["predicted"].data), expected["predicted"])
    assert torch.equal(torch.tensor(t["manual_grad"].data), expected["manual"])
    assert torch.equal(torch.tensor(t["autograd_grad"].data), expected["auto"])
    assert result.loss_value == float(expected["loss"])
    assert result.bit_exact is bool(expected["eq"]) is True
    assert result.passed


def test_does_not_touch_the_global_rng() -> None:
    torch.manual_seed(123)
    before = torch.rand(4)
    torch.manual_seed(123)
    execute(build_spec({"seed": 5}))
    assert torch.equal(torch.rand(4), before)


def test_grad_fn_chain_walks_down_to_accumulate_grad() -> None:
    result = execute(build_spec({}))
    chain = ["SumBackward0", "PowBackward0", "SubBackward0", "AccumulateGrad"]
    assert result.grad_fn_chain == chain


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", ["5", "3x8", "2x3x4", "2x1x3x1x2", "1x2x1x2x1x2x1x2"])
def test_every_dtype_and_rank_passes(dtype: str, shape: str) -> None:
    result = execute(build_spec({"dtype": dtype, "shape": shape}))
    assert result.passed and result.bit_exact
    c = result.comparisons[0]
    assert c.numel == math.prod(int(d) for d in shape.split("x"))
    assert c.mismatched == 0
    assert result.tensors["autograd_grad"].dtype == dtype
    assert (c.rtol, c.atol) == build_spec({"dtype": dtype}).tolerances()


def test_large_tensors_are_summarised_not_carried() -> None:
    result = execute(build_spec({"shape": "65x64"}))  # 4160 elements > 4096
    view = result.tensors["real"]
    assert view.data is None and view.numel == 4160 and len(view.head) == 6
    assert 0 <= view.min <= view.mean <= view.max < 1
    small = execute(build_spec({"shape": "64x64"})).tensors["real"]
    assert small.data is not None and len(small.data) == 64


@pytest.fixture
def no_half_aminmax(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.aminmax as on torch 2.1's CPU, which has none for float16 and bfloat16."""
    aminmax = torch.aminmax

    def older(t: torch.Tensor, *args: object, **kwargs: object) -> object:
        if t.dtype in (torch.float16, torch.bfloat16):
            raise RuntimeError(f'"aminmax_cpu" not implemented for {t.dtype}')
        return aminmax(t, *args, **kwargs)

    monkeypatch.setattr(torch, "aminmax", older)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.usefixtures("no_half_aminmax")
def test_half_statistics_are_taken_in_float32(dtype: torch.dtype) -> None:
    from autograd_check.kernel.views import tensor_view

    t = torch.tensor([[0.5, -3.0], [2.25, 1.0]], dtype=dtype)
    view = tensor_view("t", t)
    assert (view.min, view.max, view.mean, view.dtype) == (-3.0, 2.25, 0.1875, str(dtype)[6:])
    # through a whole check, as `run --dtype float16` and check() on half tensors take it
    result = execute(build_spec({"dtype": str(dtype)[6:]}))
    assert result.passed and result.tensors["predicted"].dtype == str(dtype)[6:]
    from autograd_check import check

    x = torch.linspace(-1, 1, 6, dtype=dtype).requires_grad_()
    assert check(torch.tanh, x).passed


def test_unravel() -> None:
    assert unravel(0, [3, 8]) == [0, 0]
    assert unravel(13, [3, 8]) == [1, 5]
    assert unravel(23, [2, 3, 4]) == [1, 2, 3]


class TestPlantedMismatch:
    """compare() on a gradient with k planted errors reports exactly those."""

    def test_statistics(self) -> None:
        auto = torch.linspace(1, 2, 24).reshape(3, 8)
        manual = auto.clone()
        manual[1, 5] += 0.5  # the greatest absolute difference
        manual[2, 7] += 0.25
        manual[0, 0] += 1e-7  # within tolerance: not a mismatch
        c = compare("predicted", manual, auto, rtol=1.3e-6, atol=1e-5, exact=False)
        assert not c.bit_exact and not c.passed
        assert c.mismatched == 2
        assert c.max_abs_index == [1, 5]
        assert c.max_abs_diff == pytest.approx(0.5)
        assert c.max_rel_index == [1, 5]
        assert c.max_rel_diff == pytest.approx(0.5 / float(auto[1, 5]))

    def test_within_tolerance_passes_but_is_not_bit_exact(self) -> None:
        auto = torch.ones(10)
        manual = auto + 1e-7
        assert compare("p", manual, auto, 1.3e-6, 1e-5, exact=False).passed
        exact = compare("p", manual, auto, 1.3e-6, 1e-5, exact=True)
        assert not exact.passed and exact.mismatched == 10

    def test_nan_is_never_close(self) -> None:
        auto = torch.zeros(4)
        manual = auto.clone()
        manual[2] = float("nan")
        c = compare("p", manual, auto, 1.0, 1.0, exact=False)
        assert c.mismatched == 1 and c.max_abs_index == [2] and math.isnan(c.max_abs_diff)

    def test_equal_infinities_are_close_and_zero_over_zero_is_zero(self) -> None:
        auto = torch.tensor([float("inf"), 0.0, 1.0])
        manual = torch.tensor([float("inf"), 0.0, 1.5])
        c = compare("p", manual, auto, 0.0, 0.0, exact=False)
        assert c.mismatched == 1 and c.max_rel_index == [2] and c.max_rel_diff == 0.5

    @pytest.mark.parametrize(
        ("manual", "auto"),
        [(-math.inf, math.inf), (1.0, math.inf), (math.inf, 1.0), (-math.inf, -1e30)],
    )
    def test_an_infinity_is_close_only_to_the_same_infinity(
        self, manual: float, auto: float
    ) -> None:
        m = torch.tensor([manual, 2.0, 3.0])
        a = torch.tensor([auto, 2.0, 3.0])
        c = compare("p", m, a, 1.3e-6, 1e-5, exact=False)
        assert c.mismatched == 1 and not c.passed and c.max_abs_index == [0]
        assert c.max_abs_diff == math.inf

    def test_exact_counts_every_unequal_element(self) -> None:
        auto = torch.ones(8)
        manual = auto.clone()
        manual[[1, 5]] += 1e-7  # within tolerance, but not equal
        c = compare("p", manual, auto, 1.3e-6, 1e-5, exact=True)
        assert (c.mismatched, c.passed, c.bit_exact) == (2, False, False)

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_half_types_are_compared_in_float32(self, dtype: torch.dtype) -> None:
        auto = torch.full((4,), 1.0, dtype=dtype)
        manual = auto.clone()
        manual[3] = 1.5
        c = compare("p", manual, auto, 0.0, 0.0, exact=False)
        assert c.mismatched == 1 and c.max_abs_diff == 0.5


SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-5, 1.0 + 1e-6, 1e-40, 3.4e38, -3.4e38, 1e308, math.inf,
           -math.inf, math.nan]
"""Zeros of both signs, values just inside and outside the tolerances, a subnormal (float32),
float32's extremes, one past them (inf in float32), both infinities and NaN."""


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("rtol", "atol"), [(1.3e-6, 1e-5), (0.0, 0.0), (10.0, 1.0)])
def test_every_pair_of_special_values_is_judged_as_torch_isclose_judges_it(
    dtype: torch.dtype, rtol: float, atol: float
) -> None:
    """The verdict is torch.isclose's, element by element, at the work precision."""
    pairs = [(m, a) for m in SPECIAL for a in SPECIAL]
    manual = torch.tensor([m for m, _ in pairs], dtype=dtype)
    auto = torch.tensor([a for _, a in pairs], dtype=dtype)
    c = compare("p", manual, auto, rtol, atol, exact=False)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    close = torch.isclose(manual.to(work), auto.to(work), rtol=rtol, atol=atol, equal_nan=False)
    assert c.mismatched == int((~close).sum()) > 0 and not c.passed
    for i in range(len(pairs)):  # one pair at a time: the same verdict
        one = compare("p", manual[i : i + 1], auto[i : i + 1], rtol, atol, exact=False)
        assert one.passed == bool(close[i]), (pairs[i], manual[i], auto[i])


def test_statistics_are_those_of_the_difference() -> None:
    """The greatest absolute and relative differences, NaN counted as the greatest, equal
    elements (infinities included) as 0."""
    auto = torch.tensor([math.inf, 0.0, 2.0, -4.0, 1.0], dtype=torch.float64)
    manual = torch.tensor([math.inf, 0.0, 2.5, -5.0, 1.0], dtype=torch.float64)
    c = compare("p", manual, auto, 0.0, 0.0, exact=False)
    assert (c.max_abs_diff, c.max_abs_index, c.max_rel_diff, c.max_rel_index) == (
        1.0, [3], 0.25, [2])  # 0.5 / 2 at [2] ties 1.0 / 4 at [3]: the first is reported
    manual[1] = math.nan
    c = compare("p", manual, auto, 0.0, 0.0, exact=False)
    assert c.max_abs_index == c.max_rel_index == [1] and math.isnan(c.max_rel_diff)


def test_a_wrong_manual_gradient_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    mse = losses.LOSSES["mse-sum"]
    buggy = type(mse)(**{**vars(mse), "manual_grad": lambda p, r: 2.0 * (p - r) + (p > 0.9)})
    monkeypatch.setitem(losses.LOSSES, "mse-sum", buggy)
    result = execute(build_spec({"shape": "16x16"}))
    assert not result.passed and not result.bit_exact
    c = result.comparisons[0]
    expected = int((torch.tensor(result.tensors["predicted"].data) > 0.9).sum())
    assert c.mismatched == expected > 0
    assert c.max_abs_diff == pytest.approx(1.0)
    assert "difference" in result.tensors
