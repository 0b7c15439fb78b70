"""The Python API: check() and assert_gradients() on functions, autograd.Functions and modules,
every reference, the caller's state, bad arguments, and the lazy exports of `autograd_check`."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

import autograd_check
from autograd_check import CheckResult, CheckSpec, assert_gradients, check

ROOT = Path(__file__).resolve().parents[1]


def example(name: str) -> ModuleType:
    """A file of examples/, imported as a module (its __main__ block does not run)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", ROOT / "examples" / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CORRECT = example("function_correct.py")
BUGGY = example("function_buggy.py")
MODULE = example("module_manual.py")


def leaf(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=dtype, generator=gen).requires_grad_()


def swish_grad(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    s = torch.sigmoid(x)
    return grad_output * (s + x * s * (1 - s))


def mul(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x @ w)


def mul_grad(x: torch.Tensor, w: torch.Tensor, grad_output: torch.Tensor) -> tuple[
        torch.Tensor, torch.Tensor]:
    gz = grad_output * (1 - torch.tanh(x @ w) ** 2)
    return gz @ w.T, x.T @ gz


class TestExports:
    def test_import_loads_no_torch_and_no_engine(self) -> None:
        code = ("import sys, autograd_check\n"
                "print(sorted(m for m in sys.modules if m == 'torch' or "
                "m.startswith(('torch.', 'autograd_check.'))))\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "['autograd_check._version']"

    def test_names_are_the_api(self) -> None:
        from autograd_check.api import check as api
        from autograd_check.base import result, spec

        assert check is api.check and assert_gradients is api.assert_gradients
        assert CheckSpec is spec.CheckSpec and CheckResult is result.CheckResult
        assert {"check", "assert_gradients", "CheckSpec", "CheckResult"} <= set(dir(autograd_check))

    def test_check_stays_the_function_once_the_engine_is_loaded(self) -> None:
        import autograd_check.execute  # noqa: F401  (sets the package attribute `engine`)

        assert autograd_check.check is check
        assert "autograd_check.check" not in sys.modules  # no module shadows the function

    def test_an_unknown_name_is_an_attribute_error(self) -> None:
        with pytest.raises(AttributeError, match="no attribute 'nope'"):
            autograd_check.nope  # noqa: B018


class TestReferences:
    @pytest.mark.parametrize("reference", ["autograd", "projection", "forward", "finite-diff"])
    def test_a_correct_function_passes(self, reference: str) -> None:
        result = check(CORRECT.LogSumExp.apply, leaf(4, 5), manual=CORRECT.manual,
                       reference=reference)
        assert result.passed, str(result)
        assert result.reference is not None and result.reference["name"] == reference

    @pytest.mark.parametrize("reference", ["projection", "forward", "finite-diff"])
    def test_the_planted_bug_is_caught(self, reference: str) -> None:
        result = check(BUGGY.Swish.apply, leaf(4, 5), reference=reference)
        assert not result.passed
        assert all(not c.passed for c in result.comparisons)

    def test_manual_against_a_buggy_backward(self) -> None:
        """A Function's backward is the user's own code: besides manual against autograd, the
        default runs projection, so neither is only checked against the other."""
        result = check(BUGGY.Swish.apply, leaf(4, 5), manual=swish_grad)
        assert [c.name for c in result.comparisons] == [
            "x", "x: autograd vs projection", "x: manual vs projection"]
        assert [c.passed for c in result.comparisons] == [False, False, True]
        assert result.reference["references"] == ["autograd", "projection"]  # type: ignore[index]
        assert "Swish.backward" in result.reference["why"]  # type: ignore[index]

    def test_defaults(self) -> None:
        assert check(mul, leaf(3, 4), leaf(4, 2, seed=1)).reference["name"] == "projection"  # type: ignore[index]
        with_manual = check(mul, leaf(3, 4), leaf(4, 2, seed=1), manual=mul_grad)
        assert with_manual.reference["name"] == "autograd"  # type: ignore[index]
        assert [c.name for c in with_manual.comparisons] == ["x", "w"]

    def test_with_manual_a_reference_checks_both(self) -> None:
        result = check(mul, leaf(3, 4), leaf(4, 2, seed=1), manual=mul_grad, reference="forward")
        assert [c.name for c in result.comparisons] == [
            "x", "w", "x: autograd vs forward", "x: manual vs forward",
            "w: autograd vs forward", "w: manual vs forward"]
        assert result.passed

    def test_directions(self) -> None:
        result = check(mul, leaf(3, 4), leaf(4, 2, seed=1), directions=3)
        assert [c.numel for c in result.comparisons] == [3, 3]
        assert result.reference["directions"] == 3  # type: ignore[index]
        assert result.reference["evaluations"] == 12  # type: ignore[index]

    def test_float32_inputs_pass_every_reference(self) -> None:
        x, w = leaf(16, 8, dtype=torch.float32), leaf(8, 4, dtype=torch.float32, seed=1)
        for reference in ("projection", "forward", "finite-diff"):
            result = check(mul, x, w, manual=mul_grad, reference=reference)
            assert result.passed, str(result)

    def test_a_function_without_jvp_gets_one_sentence(self) -> None:
        class NoJvp(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
                return x * 2

            @staticmethod
            def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
                return g * 2

        with pytest.raises(ValueError, match=r"reference='forward'.*NoJvp.apply has none") as e:
            check(NoJvp.apply, leaf(3), reference="forward")
        assert e.value.__cause__ is None and e.value.__suppress_context__

    def test_finite_diff_is_bounded(self) -> None:
        with pytest.raises(ValueError, match="max_fd_elements=10"):
            check(mul, leaf(3, 4), leaf(4, 2), reference="finite-diff", max_fd_elements=10)


class TestSecondOrder:
    def test_a_differentiable_backward_passes(self) -> None:
        result = check(CORRECT.LogSumExp.apply, leaf(3, 4), order=2)
        names = [c.name for c in result.comparisons]
        assert names == ["x: autograd vs projection", "x: double backward vs finite-diff"]
        assert result.passed, str(result)

    def test_a_backward_that_is_wrong_when_differentiated_fails(self) -> None:
        class Detached(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
                ctx.save_for_backward(x)
                return x**3

            @staticmethod
            def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
                (x,) = ctx.saved_tensors
                return g * 3 * x.detach() ** 2  # right value, but blind to x when differentiated

        first = check(Detached.apply, leaf(5))
        assert first.passed
        second = check(Detached.apply, leaf(5), order=2)
        assert not second.passed
        assert not second.comparisons[-1].passed

    def test_once_differentiable_is_named(self) -> None:
        from torch.autograd.function import once_differentiable

        class Once(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
                ctx.save_for_backward(x)
                return x**2

            @staticmethod
            @once_differentiable
            def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
                (x,) = ctx.saved_tensors
                return g * 2 * x

        with pytest.raises(ValueError, match="once_differentiable"):
            check(Once.apply, leaf(4), order=2)


    def test_the_graph_walk_survives_reused_ids(self) -> None:
        """Node objects made afresh at each access and freed once dropped (as torch's can be):
        CPython gives a freed object's id to the next one, so a walk keeping only ids would take
        the next node for the last and stop short of the Error node (torch 2.1 and 2.4 did)."""
        from autograd_check.references.independent import _differentiated_once_only

        class Error:
            next_functions = ()

        class Node:
            def __init__(self, depth: int) -> None:
                self.depth = depth

            @property
            def next_functions(self) -> tuple[tuple[object, int], ...]:
                return ((Error() if self.depth == 9 else Node(self.depth + 1), 0),)

        class Root:
            @property
            def grad_fn(self) -> Node:
                return Node(0)

        assert _differentiated_once_only(Root())  # type: ignore[arg-type]

    def test_once_differentiable_deep_in_the_graph_is_named(self) -> None:
        from torch.autograd.function import once_differentiable

        class Once(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
                ctx.save_for_backward(x)
                return x**2

            @staticmethod
            @once_differentiable
            def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
                (x,) = ctx.saved_tensors
                return g * 2 * x

        def deep(x: torch.Tensor) -> torch.Tensor:
            y = Once.apply(x)
            for _ in range(50):
                y = torch.sin(y) + 0.5 * y
            return y

        with pytest.raises(ValueError, match="once_differentiable"):
            check(deep, leaf(4), order=2)


class TestModules:
    def test_parameters_are_checked_by_name(self) -> None:
        x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
        result = check(MODULE.layer, x, manual=MODULE.manual)
        assert [c.name for c in result.comparisons][:3] == ["x", "weight", "bias"]
        assert result.passed, str(result)

    def test_a_frozen_input_checks_the_parameters_only(self) -> None:
        layer = nn.Linear(3, 2).double()
        result = check(layer, torch.randn(4, 3, dtype=torch.float64), reference="finite-diff")
        assert [c.name for c in result.comparisons] == [
            "weight: autograd vs finite-diff", "bias: autograd vs finite-diff"]
        assert result.passed

    def test_buffers_and_grads_are_left_alone(self) -> None:
        net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).double()
        before = {k: v.clone() for k, v in net.state_dict().items()}
        result = check(net, torch.randn(8, 3, dtype=torch.float64), reference="forward")
        assert result.passed, str(result)
        for k, v in net.state_dict().items():
            assert torch.equal(v, before[k]), k
        assert all(p.grad is None for p in net.parameters())


class TestNamesAndCotangent:
    def test_names_come_from_the_signature(self) -> None:
        assert [c.name for c in check(mul, leaf(3, 4), leaf(4, 2)).comparisons] == [
            "x: autograd vs projection", "w: autograd vs projection"]
        result = check(lambda *xs: xs[0] * xs[1], leaf(3), leaf(3))
        assert [c.name.split(":")[0] for c in result.comparisons] == ["xs[0]", "xs[1]"]
        result = check(CORRECT.LogSumExp.apply, leaf(3, 2))  # forward(ctx, x): ctx skipped
        assert result.comparisons[0].name.startswith("x:")

    def test_manual_sees_the_documented_cotangent(self) -> None:
        seen: list[torch.Tensor] = []

        def manual(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
            seen.append(grad_output)
            return 2 * x * grad_output

        check(lambda x: x**2, leaf(3, 2, dtype=torch.float32), manual=manual, seed=7)
        expected = torch.randn(3, 2, generator=torch.Generator().manual_seed(
            7 ^ 0x9E3779B97F4A7C15), dtype=torch.float64).to(torch.float32)
        assert torch.equal(seen[0], expected)
        check(lambda x: (x**2).sum(), leaf(3), manual=manual)
        assert seen[1].shape == () and float(seen[1]) == 1.0
        # One element of shape (1,) is a loss too: loss.backward() takes it without a gradient.
        check(lambda x: (x**2).sum().reshape(1), leaf(3), manual=manual)
        assert seen[2].shape == (1,) and float(seen[2]) == 1.0

    def test_an_output_that_ignores_the_inputs_has_zero_gradients(self) -> None:
        result = check(lambda x: torch.ones(3, dtype=torch.float64), leaf(3))
        assert result.passed
        assert any("does not depend" in n for n in result.notes)


class TestCallerState:
    """Whatever fn does, the caller's state is as it was."""

    def test_global_rngs(self) -> None:
        def noisy(x: torch.Tensor) -> torch.Tensor:
            torch.rand(3)
            random.random()
            return x * 2

        torch.manual_seed(123)
        random.seed(5)
        rng, py = torch.get_rng_state(), random.getstate()
        check(noisy, leaf(3))
        assert torch.equal(torch.get_rng_state(), rng)
        assert random.getstate() == py

    def test_default_dtype_and_threads(self) -> None:
        threads = torch.get_num_threads()

        def meddling(x: torch.Tensor) -> torch.Tensor:
            torch.set_default_dtype(torch.float64)
            torch.set_num_threads(1 if threads > 1 else 2)
            return x * 2

        check(meddling, leaf(3), reference="finite-diff")
        assert torch.get_default_dtype() == torch.float32
        assert torch.get_num_threads() == threads

    @pytest.mark.parametrize("enabled", [True, False])
    def test_grad_mode(self, enabled: bool) -> None:
        with torch.set_grad_enabled(enabled):
            result = check(mul, leaf(3, 4), leaf(4, 2), manual=mul_grad)
            assert torch.is_grad_enabled() is enabled
        assert result.passed

    def test_grads_of_the_callers_tensors(self) -> None:
        x = leaf(3, 4)
        mark = torch.full_like(x, 7.0)
        x.grad = mark
        w = leaf(4, 2)

        def backwards(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            out = mul(x, w)
            return out

        check(backwards, x, w, manual=mul_grad, order=2)
        assert x.grad is mark and torch.equal(mark, torch.full_like(x, 7.0))
        assert w.grad is None


class TestBadArguments:
    @pytest.mark.parametrize(
        ("call", "error", "message"),
        [
            (lambda: check(mul, torch.ones(2, 2), torch.ones(2, 2)), ValueError,
             "no input requires grad"),
            (lambda: check(mul, leaf(2, 2), [1.0]), TypeError, r"inputs\[1\] is a list"),
            (lambda: check(lambda x: float(x.detach().sum()), leaf(2)), TypeError,
             "fn returned a float, not a tensor"),
            (lambda: check(lambda x: ((x > 0).long(),), leaf(2)), ValueError,
             "none of fn's 1 outputs is floating point"),
            (lambda: check(lambda x: (x > 0).long(), leaf(2)), ValueError,
             "fn's output is int64"),
            (lambda: check(lambda x: torch.complex(x, x), leaf(2)), ValueError,
             "fn's output is complex128"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), manual=lambda x, w, grad_output: x),
             ValueError, r"manual returned 1 gradient\(s\) for 2 checked tensor\(s\) \(x, w\)"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2),
                           manual=lambda x, w, grad_output: (x, "w")),
             TypeError, "manual's gradient for w is a str"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2),
                           manual=lambda x, w, grad_output: (x, w.T[:1])),
             ValueError, r"manual's gradient for w has shape \[1, 2\]"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2),
                           manual=lambda x, w, grad_output: (x, w.float())),
             ValueError, "manual's gradient for w is float32, but w is float64"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), manual=lambda x, w, grad_output: 3),
             TypeError, "manual returned a int"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), reference="exact"), ValueError,
             "reference 'exact' is not one of"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), reference="autograd"), ValueError,
             "manual is None"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), order=3), ValueError,
             "order must be 1 or 2"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), rtol=-1), ValueError, "rtol must be"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), seed=1.5), TypeError, "seed must be"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), steps=3), TypeError,
             "unexpected keyword argument 'steps'"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), exact=True), ValueError,
             "exact=True asks manual and autograd to agree bit for bit, and manual is None"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), manual=mul_grad, reference="autograd",
                           directions=3), ValueError, "directions applies to"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), w=leaf(2)), TypeError,
             "keyword argument w is a tensor"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), nondet_tol=-1), ValueError,
             "nondet_tol must be"),
            (lambda: check(mul, leaf(2, 2), leaf(2, 2), name=3), TypeError,
             "name must be a string"),
            (lambda: check(3, leaf(2)), TypeError, "fn must be callable"),
            (lambda: check(lambda x: x, leaf(2, dtype=torch.complex64)), ValueError,
             "complex inputs are not supported"),
        ],
    )
    def test_each_names_the_argument(self, call: Any, error: type, message: str) -> None:
        with pytest.raises(error, match=message):
            call()

    def test_the_users_own_exceptions_propagate_unchanged(self) -> None:
        class Mine(Exception):
            pass

        raised = Mine("from fn")

        def fn(x: torch.Tensor) -> torch.Tensor:
            raise raised

        with pytest.raises(Mine) as e:
            check(fn, leaf(2))
        assert e.value is raised

        def manual(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
            raise Mine("from manual")

        with pytest.raises(Mine, match="from manual"):
            check(lambda x: x * 2, leaf(2), manual=manual)


class TestVerdict:
    def test_assert_gradients_raises_the_plain_text_verdict(self) -> None:
        def wrong(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
            g = swish_grad(x, grad_output).clone()
            g[1, 2] += 1.0
            return g

        with pytest.raises(AssertionError) as e:
            assert_gradients(lambda x: x * torch.sigmoid(x), leaf(4, 5), manual=wrong)
        text = str(e.value)
        assert text.startswith("FAIL: ")
        assert "x (4×5 float64)" in text
        row = next(line for line in text.splitlines() if line.strip().startswith("x "))
        assert "1 of 20" in row and "at [1, 2]" in row and "1e-07" in row and "FAIL" in row
        assert "bit-exact" in text and "greatest abs diff" in text

    def test_assert_gradients_returns_a_passing_result(self) -> None:
        result = assert_gradients(mul, leaf(3, 4), leaf(4, 2), manual=mul_grad)
        assert result.passed and str(result).startswith("PASS: mul")

    def test_exact(self) -> None:
        def close(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
            return (2 * x * grad_output) * (1 + 2**-50)

        assert check(lambda x: x**2, leaf(8), manual=close).passed
        exact = check(lambda x: x**2, leaf(8), manual=close, exact=True)
        assert not exact.passed and exact.criterion == "exact"
        assert "bit-exact equality" in str(exact)

    def test_the_result_round_trips_through_json(self) -> None:
        result = check(mul, leaf(3, 4), leaf(4, 2), manual=mul_grad, reference="projection")
        again = CheckResult.from_dict(result.to_dict())
        assert str(again) == str(result)
        assert again.reference == result.reference
        assert result.spec["checked"][1] == {
            "name": "w", "role": "input", "shape": [4, 2], "dtype": "float64", "device": "cpu"}


# --- half precision: the references check the backward at float64 copies ------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reference", ["projection", "forward"])
def test_half_precision_catches_the_planted_bug_every_time(
    dtype: torch.dtype, reference: str
) -> None:
    buggy = example("function_buggy.py")
    for seed in range(20):
        x = leaf(4, 5, seed=seed).detach().to(dtype).requires_grad_()
        result = check(buggy.Swish.apply, x, reference=reference, seed=seed)
        assert not result.passed, (seed, result)
        assert any("float64 copies" in note for note in result.notes)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_passes_correct_code(dtype: torch.dtype) -> None:
    correct = example("function_correct.py")
    for seed in range(5):
        x = leaf(4, 5, seed=seed).detach().to(dtype).requires_grad_()
        for reference in ("projection", "forward"):
            result = check(correct.LogSumExp.apply, x, reference=reference, seed=seed, order=2)
            assert result.passed, result
            # the reference's rows are the float64 backward's, at float64's tolerances
            rows = [c for c in result.comparisons if c.name.endswith(f"vs {reference}")]
            assert rows and rows[0].rtol == (1e-7 if reference == "forward" else 0.0)
            # and the Function's own backward, run in the half type, against float64's
            assert [c.name for c in result.comparisons if c.name.endswith("vs float64")] == [
                "x: autograd vs float64"]


def test_half_precision_leaves_the_callers_tensor_alone() -> None:
    x = leaf(3, 4).detach().to(torch.bfloat16).requires_grad_()
    before = x.detach().clone()
    check(torch.tanh, x, manual=lambda x, grad_output: grad_output * (1 - torch.tanh(x) ** 2),
          reference="projection")
    assert x.dtype == torch.bfloat16 and x.grad is None and torch.equal(x.detach(), before)


def test_repr_is_the_verdict_line() -> None:
    result = check(torch.sin, leaf(3))
    assert repr(result) == f"<CheckResult {str(result).splitlines()[0]}>"
    assert "\n" not in repr(result) and "comparisons=" not in repr(result)


class TestHowManualIsCalled:
    """manual(*inputs, grad_output): grad_output by keyword where manual names it so, else as its
    last positional argument, whatever its name."""

    @pytest.mark.parametrize("manual", [
        lambda x, grad_output: grad_output * torch.cos(x),
        lambda x, *, grad_output: grad_output * torch.cos(x),
        lambda x, go: go * torch.cos(x),
        lambda *args: args[1] * torch.cos(args[0]),
        lambda x, **kw: kw["grad_output"] * torch.cos(x),
    ])
    def test_any_name_for_grad_output(self, manual: Any) -> None:
        assert check(torch.sin, leaf(3, 2), manual=manual).passed

    @pytest.mark.parametrize("manual", [lambda x: torch.cos(x), lambda x, y, go: torch.cos(x)])
    def test_a_manual_that_cannot_take_them_is_a_type_error(self, manual: Any) -> None:
        with pytest.raises(TypeError, match=r"cannot be called as manual\(\*inputs, "
                           r"grad_output\) with 1 input\(s\)"):
            check(torch.sin, leaf(3), manual=manual)


@pytest.mark.parametrize(("x", "message"), [
    (torch.zeros(0, 3, requires_grad=True), r"inputs\[0\] has no elements \(shape \[0, 3\]\)"),
    (torch.tensor([1.0, float("nan")], requires_grad=True), r"inputs\[0\] holds 1 NaN"),
    (torch.tensor([1.0, float("inf")], requires_grad=True), r"inputs\[0\] holds 1 NaN or inf"),
])
def test_an_input_with_no_gradient_to_check_is_named(x: torch.Tensor, message: str) -> None:
    """Issue 17, item 6: not a RuntimeError from the tool's own code, nor 'atol nan'."""
    with pytest.raises(ValueError, match=message):
        check(torch.sin, x)
    with pytest.raises(ValueError, match=message):
        check(torch.sin, x, reference="projection")


def test_a_mask_of_minus_inf_that_is_not_checked_is_fine() -> None:
    mask = torch.tensor([0.0, float("-inf"), 0.0], dtype=torch.float64)
    x = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert check(lambda x, mask: (x + mask).softmax(-1), x, mask).passed


def test_a_target_whose_inputs_hold_nan_is_bad_input(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from autograd_check.cli import app

    target = tmp_path / "nan_target.py"
    target.write_text("import torch\n"
                      "def fn(x):\n    return torch.sin(x)\n"
                      "def inputs(generator, dtype, device):\n"
                      "    return (torch.tensor([1.0, float('nan')], dtype=dtype, device=device)"
                      ".requires_grad_(),)\n")
    got = CliRunner().invoke(app, ["run", "--target", str(target)])
    assert got.exit_code == 2, got.output
    assert "holds 1 NaN or infinite value(s)" in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1
