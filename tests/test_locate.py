"""Where: the wrong elements of a gradient that projection or forward failed, located by group
testing (kernel/locate.py): the locator alone against a synthetic oracle, then end to end through
check() and the CLI, whose rows never show a direction's index as an element's."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from autograd_check import check
from autograd_check.base.result import CheckResult
from autograd_check.cli import app
from autograd_check.kernel.diagnose import MAX_ELEMENTS
from autograd_check.kernel.locate import (
    Memo,
    Probe,
    direction,
    finding,
    locate,
    ravel,
    unravel,
)

# --- the locator alone ----------------------------------------------------------------------------


class Exact:
    """An oracle that knows r: ⟨r, v⟩ with a fixed error bound, costing like projection (2
    evaluations of fn for a cheap answer, 4 for a sound one); it counts what it was asked."""

    def __init__(self, r: torch.Tensor, error: float = 1e-9, noise: float = 0.0,
                 seed: int = 0) -> None:
        self.r, self.error, self.noise = r, error, noise
        self.gen = torch.Generator().manual_seed(seed)
        self.asked = 0

    def __call__(self, v: torch.Tensor, sound: bool) -> Probe:
        self.asked += 1
        wobble = self.noise * (2 * float(torch.rand((), generator=self.gen, dtype=torch.float64))
                               - 1)
        return Probe(float(torch.dot(self.r.reshape(-1), v.reshape(-1))) + wobble, self.error,
                     4 if sound else 2)


def rounding(rtol: float = 1e-7, atol: float = 1e-7) -> Callable[[torch.Tensor, torch.Tensor],
                                                                    float]:
    def allowance(mw: torch.Tensor, w: torch.Tensor) -> float:
        return 34.8 * (rtol * float(torch.linalg.vector_norm(mw))
                       + atol * float(torch.linalg.vector_norm(w)))
    return allowance


def planted(shape: tuple[int, ...], wrong: list[int], by: float = 1.0,
            seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, r): r standard normal, m = r except at the flat indices wrong, off by `by`."""
    r = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    m = r.clone()
    m.view(-1)[wrong] += by
    return m, r


@pytest.mark.parametrize("wrong", [[4321], [7, 512, 9998], list(range(0, 10_000, 997))],
                         ids=["one", "three", "eleven"])
def test_finds_exactly_the_wrong_elements_with_their_values(wrong: list[int]) -> None:
    shape = (100, 100)
    m, r = planted(shape, wrong)
    out = locate(m, Exact(r), rounding(), seed=3)
    assert out.exhaustive and out.stopped is None
    assert [e.index for e in out.found] == [unravel(i, list(shape)) for i in wrong]
    for e, i in zip(out.found, wrong, strict=True):
        assert e.gradient == float(m.view(-1)[i])
        assert e.reference == pytest.approx(float(r.view(-1)[i]), rel=1e-9, abs=1e-9)


def test_errors_that_cancel_in_a_block_are_found_by_the_confirming_direction() -> None:
    """Two neighbours whose errors cancel exactly along the search's direction (so in every
    block that holds both, the root included), and a third wrong element: the first search finds
    the third alone and looks exhaustive; the fresh direction, without it, disagrees and its own
    search finds the two, which a third direction confirms."""
    n, seed = 4096, 5
    w = direction(n, seed)
    m, r = planted((n,), [])
    m[1000] += 1.0
    m[1001] -= float(w[1000] / w[1001])
    m[3000] += 0.7
    oracle = Exact(r)
    out = locate(m, oracle, rounding(), seed=seed)
    assert [e.index[0] for e in out.found] == [1000, 1001, 3000]
    assert out.exhaustive and out.stopped is None
    # the same search without its confirming directions claims exhaustive, wrongly
    alone = locate(m, Exact(r), rounding(), seed=seed, limit=None, confirm=0)
    assert [e.index[0] for e in alone.found] == [3000] and alone.exhaustive


def test_many_wrong_elements_all_found_within_the_budget() -> None:
    wrong = sorted(torch.randperm(4096, generator=torch.Generator().manual_seed(1))[:40].tolist())
    m, r = planted((4096,), wrong, by=-0.5)
    out = locate(m, Exact(r), rounding())
    assert out.exhaustive and [e.index[0] for e in out.found] == wrong
    assert out.to_dict()["count"] == 40 and len(out.to_dict()["elements"]) == MAX_ELEMENTS


def test_none_wrong_costs_two_roots_only_and_claims_nothing() -> None:
    """The root, and the root of one fresh direction that confirms it."""
    m, r = planted((50, 40), [])
    oracle = Exact(r)
    out = locate(m, oracle, rounding())
    assert (out.count, out.found, out.exhaustive, oracle.asked, out.evaluations) == (
        0, [], True, 2, 8)
    assert finding("x", m, out, 1e-7, 1e-7).elements == []


def test_differences_within_the_noise_bound_are_not_claimed() -> None:
    """m off r by its own rounding at every element, and an oracle off by up to its bound."""
    gen = torch.Generator().manual_seed(5)
    r = torch.randn(64, 64, dtype=torch.float64, generator=gen)
    m = r * (1 + 1e-7 * (2 * torch.rand(r.shape, dtype=torch.float64, generator=gen) - 1))
    out = locate(m, Exact(r, error=1e-6, noise=1e-6), rounding())
    assert out.found == [] and out.exhaustive


def test_one_wrong_among_a_million_within_60_evaluations() -> None:
    """Issue 19's target, at projection's cost per question (2 evaluations of fn, 4 sound)."""
    m, r = planted((1000, 1000), [765_432])
    out = locate(m, Exact(r), rounding())
    assert [e.index for e in out.found] == [[765, 432]] and out.exhaustive
    assert out.evaluations <= 60


def test_budget_stops_the_search_and_says_so() -> None:
    m, r = planted((1000,), list(range(0, 1000, 5)))
    out = locate(m, Exact(r), rounding(), limit=100)
    assert out.stopped == "budget" and not out.exhaustive
    assert 0 < out.count < 200 and out.evaluations < 100 + 4
    assert all(e.index[0] % 5 == 0 for e in out.found)  # what it claims is wrong is wrong
    assert finding("x", m, out, 1e-7, 1e-7).kind == "unknown"


def test_difference_spread_too_thin_is_not_exhaustive() -> None:
    """Every element off by less than one answer's error (0.05 against 0.1), all with the sign
    of the search's own direction, so that the root is off by 0.05·Σ|wᵢ| ≥ 1.6: nothing to name,
    and the search says the difference is spread."""
    w = direction(64, seed=0)
    m = 0.05 * torch.sign(w)
    out = locate(m, Exact(torch.zeros(64, dtype=torch.float64), error=0.1), rounding(), seed=0,
                 limit=10**6)
    assert (out.found, out.stopped, out.exhaustive) == ([], "spread", False)
    assert finding("x", m, out, 1e-7, 1e-7).kind == "unknown"


def test_not_finite_gradient_is_named_without_a_question() -> None:
    m, r = planted((10, 10), [])
    m[3, 4] = float("nan")
    out = locate(m, Exact(r), rounding())
    assert [e.index for e in out.found] == [[3, 4]] and out.exhaustive


def test_not_finite_answer_stops_the_search() -> None:
    m, r = planted((10, 10), [55])
    out = locate(m, lambda v, sound: Probe(float("nan"), 0.0, 2), rounding())
    assert out.stopped == "reference" and out.found == []


def test_a_second_search_of_the_same_tensor_reuses_the_answers() -> None:
    m, r = planted((300, 30), [123, 4567])
    memo: Memo = {}
    first = locate(m, Exact(r), rounding(), seed=9, memo=memo)
    second = locate(m.clone(), Exact(r), rounding(), seed=9, memo=memo)
    assert second.evaluations == 0 and second.found == first.found


def test_exhaustive_finding_names_a_subset_by_a_condition() -> None:
    """The wrong elements located are exactly where x < -1: diagnose names that condition."""
    x = torch.randn(20, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    r = torch.cos(x)
    m = torch.where(x < -1, -r, r)
    out = locate(m, Exact(r), rounding())
    assert out.exhaustive and out.count == int((x < -1).sum()) > MAX_ELEMENTS
    f = finding("x", m, out, 1e-7, 1e-7, conditions={"x": x})
    assert f.kind == "subset" and f"wrong exactly where x < -1 ({out.count} of 400" in f.text
    assert f.elements == [e.index for e in out.found[:MAX_ELEMENTS]]


def test_flat_and_nested_indices() -> None:
    assert ravel(unravel(12345, [7, 50, 40]), [7, 50, 40]) == 12345


# --- end to end: check() with a backward wrong at one element -------------------------------------

WRONG = (37, 42)
SHAPE = (100, 100)


class OneWrong(torch.autograd.Function):
    """L = Σ x·sin(x) (a scalar: grad_output is 1), with a right jvp; the backward adds
    grad_output at WRONG."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return (x * torch.sin(x)).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        g = grad_output * (torch.sin(x) + x * torch.cos(x))
        g[WRONG] += grad_output  # linear in grad_output: the contract holds
        return g

    @staticmethod
    def jvp(ctx: Any, tangent: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return ((torch.sin(x) + x * torch.cos(x)) * tangent).sum()


def leaf() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(*SHAPE, dtype=torch.float64, generator=gen).requires_grad_()


@pytest.mark.parametrize("reference", ["projection", "forward"])
def test_check_locates_the_wrong_element(reference: str) -> None:
    x = leaf()
    result = check(OneWrong.apply, x, reference=reference)
    assert not result.passed
    # OneWrong is a Function of its own: with forward, projection runs beside it, and both fail
    row = result.comparisons[0]
    assert [c.name for c in result.comparisons] == [f"x: autograd vs {reference}"] + (
        ["x: autograd vs projection"] if reference == "forward" else [])
    assert row.unit == "directions" and row.max_abs_index == [] and row.max_rel_index == []
    located = row.located
    assert located is not None
    assert (located["count"], located["exhaustive"]) == (1, True)
    (element,) = located["elements"]
    xd = x.detach()
    right = float(torch.sin(xd[WRONG]) + xd[WRONG] * torch.cos(xd[WRONG]))
    assert element["index"] == list(WRONG)
    assert element["gradient"] == right + 1.0
    assert element["reference"] == pytest.approx(right, rel=1e-6, abs=1e-6)
    assert located["evaluations"] <= (60 if reference == "projection" else 30)
    (cause,) = result.diagnosis
    assert cause["tensor"] == "x" and cause["elements"] == [list(WRONG)]
    text = str(result)
    assert "located (x: autograd vs " + reference + "): 1 wrong element of 10000, all" in text
    assert "[37, 42]: autograd" in text and " at [" not in text  # no index but elements'


class SmoothL1(torch.autograd.Function):
    """Σ smooth-L1(x) (β = 0.5) whose backward's linear branch is 1, not sign(x): wrong exactly
    where x < −0.5 (examples/buggy_target.py's bug, in a Function of one's own)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x.abs() < 0.5, x * x, x.abs() - 0.25).sum()

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * torch.where(x.abs() < 0.5, 2 * x, torch.ones_like(x))


def test_exhaustive_location_names_the_branch() -> None:
    x = torch.randn(4, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)
    result = check(SmoothL1.apply, x)
    wrong = (x.detach() < -0.5).nonzero().tolist()
    located = result.comparisons[0].located
    assert located is not None and located["exhaustive"] and located["count"] == len(wrong)
    assert all((e["gradient"], e["reference"]) == (1.0, pytest.approx(-1.0, abs=1e-6))
               for e in located["elements"])
    (cause,) = result.diagnosis
    assert cause["kind"] == "subset" and cause["elements"] == wrong[:MAX_ELEMENTS]
    assert f"wrong exactly where x < -0.5 ({len(wrong)} of 24 elements)" in cause["text"]


def test_located_elements_survive_json() -> None:
    """A record read back (a Slurm job's, a sweep's) shows the same elements."""
    result = check(OneWrong.apply, leaf(), reference="forward")
    again = CheckResult.from_dict(json.loads(result.to_json()))
    assert again.comparisons == result.comparisons and str(again) == str(result)


def test_passing_check_locates_nothing() -> None:
    x = leaf()

    def right(x: torch.Tensor) -> torch.Tensor:
        return (x * torch.sin(x)).sum()

    result = check(right, x)
    assert result.passed and result.comparisons[0].located is None and result.diagnosis == []
    assert result.reference is not None and result.reference["evaluations"] == 2 * 3  # 3 directions


# --- the command line -----------------------------------------------------------------------------

TARGET = """
    import torch

    class OneWrong(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x * torch.sin(x)).sum()

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            g = grad_output * (torch.sin(x) + x * torch.cos(x))
            g[37, 42] += grad_output
            return g

        @staticmethod
        def inputs(generator, dtype, device):
            return (torch.randn(100, 100, generator=generator, dtype=dtype, device=device),)
"""


@pytest.fixture
def target(tmp_path: Path) -> str:
    path = tmp_path / "one_wrong.py"
    path.write_text(textwrap.dedent(TARGET))
    return f"{path}:OneWrong"


def test_cli_json_carries_the_located_elements(target: str) -> None:
    result = CliRunner().invoke(app, ["run", "--target", target, "--reference", "projection",
                                      "--dtype", "float64", "--json"])
    assert result.exit_code == 1, result.stderr
    doc = json.loads(result.stdout)
    (row,) = doc["statistics"]
    assert row["unit"] == "directions" and row["max_abs_index"] == []
    located = row["located"]
    assert {k: located[k] for k in ("count", "numel", "exhaustive", "stopped")} == {
        "count": 1, "numel": 10_000, "exhaustive": True, "stopped": None}
    assert [e["index"] for e in located["elements"]] == [[37, 42]]
    assert located["elements"][0]["gradient"] - located["elements"][0]["reference"] == \
        pytest.approx(1.0, rel=1e-5)
    assert doc["diagnosis"][0]["elements"] == [[37, 42]]


def test_cli_view_shows_elements_never_a_direction_index(target: str) -> None:
    result = CliRunner().invoke(app, ["run", "--target", target, "--reference", "projection",
                                      "--dtype", "float64"])
    assert result.exit_code == 1, result.stderr
    out = result.stdout
    assert "where: the wrong elements located (projection)" in out
    assert "[37, 42]" in out and "1 wrong element of 10000, all of them" in out
    assert "at [0]" not in out
