"""Why a gradient is wrong (kernel/diagnose.py): each kind on a planted bug over seeds, never a
claim on a passed check, and the finding in the result, its JSON, str(result) and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from autograd_check import check
from autograd_check.cli import app
from autograd_check.kernel.diagnose import diagnose, name_factor

ROOT = Path(__file__).resolve().parents[1]
F64 = torch.float64


def _x(seed: int, *shape: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64, requires_grad=True)


def _softmax_manual(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    s = x.softmax(-1)
    return s * (grad_output - (grad_output * s).sum(-1, keepdim=True))


def _cross_entropy(target: torch.Tensor) -> tuple[Callable[..., Any], Callable[..., Any]]:
    def fn(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(x, target)

    def forgot_n(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        p = x.softmax(-1)
        p[torch.arange(len(target)), target] -= 1
        return grad_output * p  # the planted bug: / len(target) forgotten

    return fn, forgot_n


def _case(kind: str, seed: int) -> Any:
    """check() of a bug planted to be explained as kind."""
    x = _x(seed, 4, 5)
    if kind == "scale":
        target = torch.randint(0, 8, (32,), generator=torch.Generator().manual_seed(seed))
        fn, manual = _cross_entropy(target)
        return check(fn, _x(seed, 32, 8), manual=manual, seed=seed)
    if kind == "sign":
        return check(torch.sin, x, manual=lambda x, grad_output: -grad_output * torch.cos(x),
                     seed=seed)
    if kind == "transpose":
        w = _x(seed + 1, 5, 5)
        return check(lambda x, w: x @ w.T, x, w, seed=seed,
                     manual=lambda x, w, grad_output: (grad_output @ w, x.T @ grad_output))
    if kind == "swapped":
        y = _x(seed + 1, 4, 5)
        return check(lambda a, b: 2 * a + 3 * b, x, y, seed=seed,
                     manual=lambda a, b, grad_output: (3 * grad_output, 2 * grad_output))
    if kind == "zero":
        y = _x(seed + 1, 4, 5)
        return check(lambda a, b: a * b, x, y, seed=seed,
                     manual=lambda a, b, grad_output: (grad_output * b, torch.zeros_like(b)))
    if kind == "slice-scale":
        rows = torch.arange(1, 5, dtype=F64)[:, None]
        return check(lambda x: x * x, x, seed=seed,
                     manual=lambda x, grad_output: 2 * x * grad_output * rows)
    if kind == "axis":  # a sum over dimension 0 that should not be there, broadcast back
        c = _x(seed + 1, 4, 5).detach()
        return check(lambda x: x * c, x, seed=seed, manual=lambda x, grad_output: (
            grad_output * c).sum(0, keepdim=True).expand(4, 5))
    if kind == "subset":  # relu's gradient, with the wrong branch where x < 0
        return check(torch.relu, x, seed=seed,
                     manual=lambda x, grad_output: grad_output * torch.ones_like(x))
    raise AssertionError(kind)


KINDS = ["scale", "sign", "transpose", "swapped", "zero", "slice-scale", "axis", "subset"]


@pytest.mark.parametrize("kind", KINDS)
def test_each_planted_bug_is_named_over_seeds(kind: str) -> None:
    for seed in range(10):
        result = _case(kind, seed)
        assert not result.passed
        assert result.diagnosis, str(result)
        assert {d["kind"] for d in result.diagnosis} == {kind}, (seed, result.diagnosis)


def test_a_scale_is_named_as_the_batch_size() -> None:
    (finding,) = _case("scale", 0).diagnosis
    assert finding["factor"] == pytest.approx(32.0)
    assert "32 (shape[0] of x)" in finding["text"]
    assert name_factor(1 / 32, {"predicted": [32, 8]}) == "1/32 (1/shape[0] of predicted)"
    assert name_factor(0.5, {}) == "1/2" and name_factor(0.731, {}) == "0.731"


def test_no_claim_on_correct_code() -> None:
    for seed in range(20):
        x = _x(seed, 6, 7)
        result = check(lambda x: x.softmax(-1), x, manual=_softmax_manual, seed=seed)
        assert result.passed and result.diagnosis == [] and "likely cause" not in str(result)


def test_an_unexplained_difference_is_unknown_not_a_guess() -> None:
    gen = torch.Generator().manual_seed(0)
    m, r = torch.randn(6, 6, generator=gen, dtype=F64), torch.randn(6, 6, generator=gen,
                                                                     dtype=F64)
    finding = diagnose("x", m, r, 1e-7, 1e-7)
    assert finding.kind == "unknown" and "36 of 36" in finding.text


def test_the_smooth_l1_branch_is_located_exactly() -> None:
    """examples/buggy_target.py: wrong exactly where d = predicted − real < −β, 7 of 24."""
    got = CliRunner().invoke(app, ["run", "--target",
                                   f"{ROOT}/examples/buggy_target.py:smooth_l1", "--json"])
    assert got.exit_code == 1, got.output
    doc = json.loads(got.stdout)
    (finding,) = doc["diagnosis"]
    assert finding["kind"] == "subset" and finding["tensor"] == "predicted"
    assert "d = predicted − real < -0.2" in finding["text"] and "7 of 24" in finding["text"]
    predicted = torch.tensor(doc["tensors"]["predicted"]["data"])
    real = torch.tensor(doc["tensors"]["real"]["data"])
    wrong = torch.nonzero(predicted - real < -0.25).tolist()
    assert finding["elements"] == wrong[:5]
    human = CliRunner().invoke(app, ["run", "--target",
                                     f"{ROOT}/examples/buggy_target.py:smooth_l1"])
    assert "likely cause" in human.stdout and "[subset]" in human.stdout


def test_a_broken_rule_is_a_finding_of_its_kind() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("traps_d", ROOT / "examples" / "traps.py")
    assert spec is not None and spec.loader is not None
    traps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(traps)
    result, _ = traps.verdict(traps.IgnoresGradOutput)
    assert [d["kind"] for d in result.diagnosis] == ["grad-output-ignored"]
    again = type(result).from_dict(json.loads(result.to_json()))
    assert again.diagnosis == result.diagnosis
    assert "likely cause (x): [grad-output-ignored]" in str(result)


def test_grad_output_is_never_the_input_a_test_draws_with_the_same_seed() -> None:
    """x drawn as torch.randn(..., generator=Generator().manual_seed(0)): were grad_output drawn
    so too, u = x and the transposed weight gradient x.T @ u = (u.T @ x).T would pass."""
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=F64,
                    requires_grad=True)
    w = _x(1, 5, 5)
    result = check(lambda x, w: x @ w.T, x, w, seed=0,
                   manual=lambda x, w, grad_output: (grad_output @ w, x.T @ grad_output))
    assert not result.passed
    assert [d["kind"] for d in result.diagnosis] == ["transpose"]


def test_a_split_that_chance_explains_is_unknown() -> None:
    """One wrong element of 24 always sits at some input's extreme: no subset claim."""
    gen = torch.Generator().manual_seed(3)
    x, r = torch.randn(4, 6, generator=gen, dtype=F64), torch.randn(4, 6, generator=gen,
                                                                     dtype=F64)
    m = r.clone()
    m.view(-1)[int(x.argmax())] += 1.0
    assert diagnose("x", m, r, 1e-7, 1e-7, conditions={"x": x}).kind == "unknown"
    many = r + (x > 0.3) * 1.0  # the same input's branch, on enough elements: named
    assert diagnose("x", many, r, 1e-7, 1e-7, conditions={"x": x}).kind == "subset"


def test_a_continuous_error_past_a_threshold_is_not_a_branch() -> None:
    """m = r·(1 + 1e-7·eˣ) crosses rtol only where x is large: not one wrong branch."""
    gen = torch.Generator().manual_seed(0)
    x, r = torch.randn(8, 8, generator=gen, dtype=F64), torch.randn(8, 8, generator=gen,
                                                                     dtype=F64)
    m = r * (1 + 1e-7 * torch.exp(x))
    assert diagnose("x", m, r, 1e-7, 0.0, conditions={"x": x}).kind == "unknown"


def test_a_sum_over_the_wrong_axis_times_the_output_is_axis() -> None:
    """A softmax backward summed over dimension 0: the difference is y·(A_i − B_j); a random
    difference of the same size is not."""
    gen = torch.Generator().manual_seed(0)
    x, g = torch.randn(5, 7, generator=gen, dtype=F64), torch.randn(5, 7, generator=gen,
                                                                     dtype=F64)
    y = x.softmax(-1)
    r = y * (g - (g * y).sum(-1, keepdim=True))
    m = y * (g - (g * y).sum(0, keepdim=True))
    finding = diagnose("x", m, r, 1e-7, 1e-7, output=y)
    assert finding.kind == "axis" and "fn's output times" in finding.text
    assert diagnose("x", m, r, 1e-7, 1e-7).kind == "unknown"  # without the output: no guess
    noise = r + 1e-3 * torch.randn(5, 7, generator=gen, dtype=F64)
    assert diagnose("x", noise, r, 1e-7, 1e-7, output=y).kind == "unknown"


def test_many_wrong_elements_of_a_large_tensor_are_diagnosed() -> None:
    """C(65536, k) is far past a float's range: the chance of a split is weighed in logs."""
    gen = torch.Generator().manual_seed(0)
    x, r = torch.randn(256, 256, generator=gen, dtype=F64), torch.randn(256, 256, generator=gen,
                                                                         dtype=F64)
    m = r + (x > 0.1) * 1.0
    finding = diagnose("x", m, r, 1e-7, 1e-7, conditions={"x": x})
    assert finding.kind == "subset" and "x > 0.1 (" in finding.text
    noisy = r + 1e-3 * torch.randn(256, 256, generator=gen, dtype=F64)
    assert diagnose("x", noisy, r, 1e-7, 1e-7, conditions={"x": x}).kind == "unknown"
