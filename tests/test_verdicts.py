"""Verdicts on real custom-backward code (issue 16): every trap of examples/traps.py is a failed
check that names itself, the caller's tensors are never written, correct code passes in every
dtype (a seeded sweep), and the API's new arguments (fn's keyword arguments, name=, several
outputs, nondet_tol) do what docs/api.md says."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from autograd_check import check
from autograd_check.cli import app
from autograd_check.references import gradients

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


TRAPS = _load("examples_traps", ROOT / "examples" / "traps.py")


@pytest.mark.parametrize("trap", TRAPS.TRAPS, ids=lambda t: t.__name__)
def test_each_trap_gets_its_verdict(trap: Any) -> None:
    result, caught = TRAPS.verdict(trap)
    assert caught == trap.expected, str(result)
    assert result.exit_code == (0 if trap.expected == "pass" else 1)


@pytest.mark.parametrize("name,kind", [("GradOutputInPlace", "grad-output-mutated"),
                                       ("IgnoresGradOutput", "grad-output-ignored"),
                                       ("TwoOutputs", "undefined-grad-output")])
def test_the_cli_fails_a_trap_by_its_name(name: str, kind: str) -> None:
    got = CliRunner().invoke(app, ["run", "--target", f"{ROOT}/examples/traps.py:{name}",
                                   "--json"])
    assert got.exit_code == 1, got.output
    doc = json.loads(got.stdout)
    assert [c["kind"] for c in doc["contract"] if not c["passed"]] == [kind]


def test_the_cli_runs_projection_beside_manual_for_a_targets_own_backward() -> None:
    got = CliRunner().invoke(app, ["run", "--target",
                                   f"{ROOT}/examples/traps.py:SharedHelper", "--json"])
    assert got.exit_code == 1, got.output
    doc = json.loads(got.stdout)
    assert doc["reference"]["references"] == ["autograd", "projection"]
    rows = {s["name"]: s["passed"] for s in doc["statistics"]}
    assert rows == {"x": True, "x: autograd vs projection": False,
                    "x: manual vs projection": False}


# --- isolation -----------------------------------------------------------------------------


class WritesEverything(torch.autograd.Function):
    """A correct x·y whose forward and backward write into everything they are given."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x.clone(), y.clone())
        out = x * y
        x.data.add_(1.0)  # .data: torch's version counter does not see these
        y.data.mul_(3.0)
        return out

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = ctx.saved_tensors
        gx, gy = grad_output * y, grad_output * x
        grad_output.zero_()
        return gx, gy


def _writing_manual(x: torch.Tensor, y: torch.Tensor,
                    grad_output: torch.Tensor) -> torch.Tensor:
    gx = grad_output * y  # y does not require grad: x's gradient only
    x.fill_(7.0)
    grad_output.fill_(-1.0)
    return gx


def test_the_callers_tensors_are_never_written() -> None:
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 4, dtype=torch.float64)
    before = (x.detach().clone(), y.clone(), x._version, y._version)
    result = check(WritesEverything.apply, x, y, manual=_writing_manual)
    assert torch.equal(x.detach(), before[0]) and torch.equal(y, before[1])
    assert (x._version, y._version) == before[2:]
    assert x.grad is None
    broken = {c.kind: c.text for c in result.contract if not c.passed}
    assert set(broken) == {"input-mutated", "grad-output-mutated"}
    assert "fn wrote into x" in broken["input-mutated"]
    assert "WritesEverything.backward wrote into its grad_output" in broken[
        "grad-output-mutated"]
    assert not result.passed and result.exit_code == 1


def test_a_manual_that_writes_its_input_is_blamed_not_the_references() -> None:
    z = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    kept = z.detach().clone()
    result = check(torch.sigmoid, z, manual=TRAPS.ManualWritesInput.manual,
                   reference="projection")
    assert torch.equal(z.detach(), kept)
    assert all(c.passed for c in result.comparisons), str(result)  # evaluated at z, not σ(z)
    assert [c.kind for c in result.contract if not c.passed] == ["input-mutated"]
    assert "manual wrote into" in str(result)


def test_a_module_writing_its_parameter_is_caught_and_the_module_kept() -> None:
    class Shrinks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = x * self.w
            self.w.data.mul_(0.5)
            return out

    module = Shrinks()
    result = check(module, torch.randn(2, 3, dtype=torch.float64, requires_grad=True))
    assert torch.equal(module.w.detach(), torch.ones(3, dtype=torch.float64))
    assert "Shrinks.w" in next(c.text for c in result.contract if not c.passed)


def test_a_check_with_nothing_written_keeps_every_rule() -> None:
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    result = check(torch.sin, x, manual=lambda x, grad_output: grad_output * torch.cos(x))
    assert [(c.kind, c.passed) for c in result.contract] == [
        ("input-mutated", True), ("grad-output-mutated", True)]
    assert result.passed


# --- the contract of a Function: rows and options --------------------------------------------


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * 2 * x


def test_a_correct_function_keeps_the_whole_contract_and_is_put_back() -> None:
    backward, forward = Square.backward, Square.forward
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    result = check(Square.apply, x, manual=lambda x, grad_output: 2 * x * grad_output)
    assert result.passed, str(result)
    assert {c.kind for c in result.contract} == {
        "grad-output-ignored", "state-outside-ctx", "nondeterministic",
        "non-contiguous-grad-output", "gradient-shape", "gradient-dtype", "grad-output-mutated",
        "input-mutated"}
    assert (Square.backward, Square.forward) == (backward, forward)  # unwrapped after
    assert "contract: 8 of 8 rules kept" in str(result)


def test_a_scalar_output_is_checked_at_a_scaled_grad_output_too() -> None:
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    result, caught = TRAPS.verdict(TRAPS.IgnoresGradOutput)
    assert caught == "grad-output-ignored"
    assert all(c.passed for c in result.comparisons)  # right at grad_output = 1
    fixed = check(lambda x: Square.apply(x).sum(), x)
    assert fixed.passed


def test_nondet_tol_allows_a_known_spread() -> None:
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    strict = check(TRAPS.NoisyBackward.apply, x)
    loose = check(TRAPS.NoisyBackward.apply, x, nondet_tol=1e-9)
    assert [c.kind for c in strict.contract if not c.passed] == ["nondeterministic"]
    assert loose.passed, str(loose)


# --- keyword arguments, name=, several outputs ----------------------------------------------


class Scaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        ctx.alpha = alpha
        return alpha * x

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        return ctx.alpha * grad_output, None


def test_keyword_arguments_go_to_fn_and_manual() -> None:
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    seen: list[float] = []

    def fn(x: torch.Tensor, *, eps: float) -> torch.Tensor:
        return x / (x.abs() + eps)

    def manual(x: torch.Tensor, grad_output: torch.Tensor, *, eps: float) -> torch.Tensor:
        seen.append(eps)
        return grad_output * eps / (x.abs() + eps) ** 2

    result = check(fn, x, manual=manual, eps=0.5, name="soft sign")
    assert result.passed, str(result)
    assert seen == [0.5] and result.loss_name == "soft sign"
    assert str(result).startswith("PASS: soft sign")
    by_keyword = check(Scaled.apply, x, alpha=3.0, manual=lambda x, grad_output, alpha: (
        alpha * grad_output))
    assert by_keyword.passed, str(by_keyword)
    wrong = check(Scaled.apply, x, alpha=3.0, manual=lambda x, grad_output, alpha: grad_output)
    assert not wrong.passed


class SinCos(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x)
        return torch.sin(x), torch.cos(x)

    @staticmethod
    def backward(ctx: Any, gs: torch.Tensor | None, gc: torch.Tensor | None) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        total = torch.zeros_like(x)
        if gs is not None:
            total = total + gs * torch.cos(x)
        if gc is not None:
            total = total - gc * torch.sin(x)
        return total


def test_several_outputs_are_checked_output_by_output() -> None:
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)

    def manual(x: torch.Tensor, grad_output: tuple[torch.Tensor, ...]) -> torch.Tensor:
        gs, gc = grad_output
        return gs * torch.cos(x) - gc * torch.sin(x)

    result = check(SinCos.apply, x, manual=manual)
    assert result.passed, str(result)
    names = [c.name for c in result.comparisons]
    assert names[0] == "output 0: x" and "output 1: x" in names
    assert result.spec["outputs"] == 2
    assert "undefined-grad-output" in {c.kind for c in result.contract}
    bad = check(SinCos.apply, x, manual=lambda x, grad_output: grad_output[0] * torch.cos(x))
    assert [c.name for c in bad.comparisons if not c.passed] == [
        "output 1: x", "output 1: x: manual vs projection",
        "all outputs: x", "all outputs: x: manual vs projection"]


class _SinCosBothWrong(SinCos):
    """Right for each output alone, wrong when both get a gradient (a model using both)."""

    @staticmethod
    def backward(ctx: Any, g_sin: torch.Tensor | None,
                 g_cos: torch.Tensor | None) -> torch.Tensor | None:
        (x,) = ctx.saved_tensors
        if g_sin is not None and g_cos is not None:
            return g_sin * torch.cos(x) + g_cos * torch.sin(x)  # the sign of the second term
        if g_sin is not None:
            return g_sin * torch.cos(x)
        return None if g_cos is None else -g_cos * torch.sin(x)


def test_the_outputs_are_also_checked_together() -> None:
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    result = check(_SinCosBothWrong.apply, x)
    assert [c.name for c in result.comparisons if not c.passed] == [
        "all outputs: x: autograd vs projection"], str(result)
    assert result.exit_code == 1


# --- half precision, and a seeded sweep of correct code --------------------------------------


def rms(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return TRAPS.RMSNorm.fn(x, w)


batch_norm, batch_norm_manual = TRAPS.batch_norm, TRAPS.batch_norm_manual


DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_correct_code_passes_in_every_dtype_and_the_planted_bug_fails(
        dtype: torch.dtype) -> None:
    failures = []
    for seed in range(6):
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(32, 32, generator=gen).to(dtype).requires_grad_()
        w = torch.randn(32, generator=gen).to(dtype).requires_grad_()
        for label, result, want in (
            ("rms", check(rms, x, w, manual=TRAPS.RMSNorm.manual, seed=seed), True),
            ("bn", check(batch_norm, x, manual=batch_norm_manual, seed=seed), True),
            ("bn, mean term dropped", check(batch_norm, x, seed=seed, manual=lambda x,
             grad_output: batch_norm_manual(x, grad_output, drop_mean=True)), False),
        ):
            if result.passed != want:
                failures.append(f"{label} seed {seed}:\n{result}")
    assert not failures, "\n".join(failures)


def test_half_precision_is_judged_against_float64(monkeypatch: pytest.MonkeyPatch) -> None:
    """The criterion is what passes correct bfloat16 code: without it, the same check fails."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 32, generator=gen).to(torch.bfloat16).requires_grad_()
    result = check(batch_norm, x, manual=batch_norm_manual)
    assert result.passed and "judged against the gradient in float64" in str(result)
    monkeypatch.setattr("autograd_check.api.check.against_float64",
                        lambda rows, *_, **__: (rows, []))
    assert not check(batch_norm, x, manual=batch_norm_manual).passed


def test_the_cli_judges_a_half_precision_target_against_float64(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "bn_loss.py"
    target.write_text(
        "import torch\n"
        "def loss(predicted, real):\n"
        "    mu, var = predicted.mean(0), predicted.var(0, unbiased=False)\n"
        "    return (((predicted - mu) / torch.sqrt(var + 1e-5)) * real).sum()\n"
        "def manual_grad(predicted, real):\n"
        "    n = predicted.shape[0]\n"
        "    mu, var = predicted.mean(0), predicted.var(0, unbiased=False)\n"
        "    inv = 1 / torch.sqrt(var + 1e-5)\n"
        "    xh = (predicted - mu) * inv\n"
        "    return inv / n * (n * real - real.sum(0) - xh * (real * xh).sum(0))\n")
    argv = ["run", "--target", str(target), "--shape", "64x32", "--dtype", "bfloat16",
            "--json"]
    got = CliRunner().invoke(app, argv)
    assert got.exit_code == 0, got.output
    assert any("float64" in n for n in json.loads(got.stdout)["notes"])
    monkeypatch.setattr(gradients, "compare_with_truth",
                        lambda name, m, a, t, rtol, atol, *_: gradients.compare(
                            name, m, a, rtol, atol, False))
    again = CliRunner().invoke(app, argv)
    assert again.exit_code == 1, again.output
    assert not json.loads(again.stdout)["verdict"]["passed"]  # the criterion is what passes it


def test_a_spread_between_backwards_is_in_run_s_verdict_only_when_deterministic() -> None:
    target = f"{ROOT}/examples/traps.py:NoisyBackward"
    info = CliRunner().invoke(app, ["run", "--target", target, "--dtype", "float64", "--json"])
    assert info.exit_code == 0, info.output
    row = next(c for c in json.loads(info.stdout)["contract"] if c["kind"] == "nondeterministic")
    assert row["passed"] and "information" in row["text"]
    strict = CliRunner().invoke(app, ["run", "--target", target, "--dtype", "float64",
                                      "--deterministic", "--json"])
    assert strict.exit_code == 1, strict.output
    row = next(c for c in json.loads(strict.stdout)["contract"]
               if c["kind"] == "nondeterministic")
    assert not row["passed"]


def test_a_function_deep_in_a_long_graph_is_found() -> None:
    """The walk keeps every node it met alive: an id() reused by a freed node object cannot
    end it early, whatever torch makes of next_functions."""
    from autograd_check.references.contract import custom_functions

    x = torch.randn(4, dtype=torch.float64, requires_grad=True)
    y = Square.apply(x)
    for _ in range(3000):
        y = y * 1.0 + 0.0
    assert custom_functions(y) == [Square]


# --- found by review: each once a false PASS, a false FAIL or a traceback ---------------------


class CancellingLayerNorm(torch.autograd.Function):
    """layer_norm whose backward recomputes the variance as E[x²] − E[x]²: exact in float64,
    garbage in a half type when the mean is large."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.nn.functional.layer_norm(x, x.shape[-1:])

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        n = x.shape[-1]
        mu = x.mean(-1, keepdim=True)
        var = (x * x).mean(-1, keepdim=True) - mu * mu
        rstd = (var.clamp_min(0) + 1e-5).rsqrt()
        xh = (x - mu) * rstd
        return rstd / n * (n * g - g.sum(-1, keepdim=True) - xh * (g * xh).sum(-1, keepdim=True))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_your_backward_in_a_half_type_is_judged_itself(dtype: torch.dtype) -> None:
    x = (torch.randn(4, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
         + 30).to(dtype).requires_grad_()
    result = check(CancellingLayerNorm.apply, x)
    assert not result.passed
    assert [c.name for c in result.comparisons if not c.passed] == ["x: autograd vs float64"]
    fine = check(CancellingLayerNorm.apply, x.detach().double().requires_grad_())
    assert fine.passed, str(fine)


def test_a_bug_in_the_small_elements_is_not_hidden_in_bfloat16() -> None:
    def zeroed(x: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
        g = 3 * x * x * grad_output
        return torch.where(x.abs() < 0.5, torch.zeros_like(g), g)

    for seed in range(5):
        x = torch.randn(32, 32, generator=torch.Generator().manual_seed(seed)).to(
            torch.bfloat16).requires_grad_()
        assert not check(lambda x: x**3, x, manual=zeroed, seed=seed).passed, seed


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_torch_s_batch_norm_after_your_function_is_not_blamed(dtype: torch.dtype) -> None:
    class Half(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, t: torch.Tensor, c: float) -> torch.Tensor:
            ctx.c = c
            return t * c

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
            return g * ctx.c, None

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.bn = torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn(Half.apply(self.lin(x), 0.5))

    for seed in range(3):
        torch.manual_seed(seed)
        block = Block().to(dtype)
        x = torch.randn(8, 6, dtype=dtype, requires_grad=True)
        result = check(block, x, seed=seed)
        assert [c.kind for c in result.contract if not c.passed] == [], str(result)


def test_a_keyword_reaches_a_classic_forward_while_it_is_watched() -> None:
    class Scale(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor, alpha: float) -> torch.Tensor:
            ctx.alpha = alpha
            return x * alpha

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
            return g * ctx.alpha, None

    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    assert check(Scale.apply, x, alpha=2.0).passed


def test_a_backward_that_cannot_run_twice_is_named() -> None:
    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            x.mul_(x)  # computes in place on what it saved
            return g * 3 * x

    result = check(Cube.apply, torch.randn(5, dtype=torch.float64, requires_grad=True))
    broken = {c.kind: c.text for c in result.contract if not c.passed}
    assert "raised when called a second time" in broken["nondeterministic"]


def test_a_backward_that_takes_the_absolute_grad_output_fails() -> None:
    class SquareLoss(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            ctx.save_for_backward(x)
            return (x * x).sum()

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return g.abs() * 2 * x  # right for a positive loss scale only

    result = check(SquareLoss.apply, torch.randn(5, dtype=torch.float64, requires_grad=True))
    assert [c.kind for c in result.contract if not c.passed] == ["grad-output-ignored"]


def test_an_explicit_reference_autograd_is_not_your_code_alone() -> None:
    result, _ = TRAPS.verdict(TRAPS.SharedHelper)
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    explicit = check(TRAPS.SharedHelper.apply, x, manual=TRAPS.SharedHelper.manual,
                     reference="autograd")
    assert not explicit.passed and explicit.reference["references"] == [  # type: ignore[index]
        "autograd", "projection"]


class _SwishSharedHelper(torch.autograd.Function):
    """jvp and backward call one helper that is wrong (s + x·s for s + x·s·(1 − s))."""

    @staticmethod
    def _d(x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(x)
        return s + x * s

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return grad_output * _SwishSharedHelper._d(x)

    @staticmethod
    def jvp(ctx: Any, x_t: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return x_t * _SwishSharedHelper._d(x)


def test_reference_forward_on_a_function_is_not_its_jvp_against_its_backward_alone() -> None:
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    result = check(_SwishSharedHelper.apply, x, reference="forward")
    rows = {c.name: c.passed for c in result.comparisons}
    assert rows == {"x: autograd vs forward": True, "x: autograd vs projection": False}
    assert not result.passed and result.reference["references"] == ["forward", "projection"]


class _StrideBlindSquare(torch.autograd.Function):
    """x² whose backward reads x's storage row by row, as a kernel that assumes a contiguous
    tensor does: right for a contiguous x, wrong for a slice with a step."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        flat = torch.as_strided(x, (x.numel(),), (1,), x.storage_offset())
        return grad_output * 2 * flat.reshape(x.shape)


def test_the_backward_runs_at_the_callers_strides() -> None:
    base = torch.randn(6, 10, dtype=torch.float64)
    sliced = base[:, ::2].requires_grad_()
    assert not check(_StrideBlindSquare.apply, sliced).passed
    assert check(_StrideBlindSquare.apply, sliced.detach().contiguous().requires_grad_()).passed
    assert check(lambda x: x**2, sliced).passed  # correct code at that layout passes
    assert torch.equal(sliced.detach(), base[:, ::2])  # and the caller's tensor is untouched
