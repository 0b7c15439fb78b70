"""--model linear|mlp: hand-written backprop against autograd, layer by layer, and the table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from autograd_check.base.budget import PEAK_TENSORS, layer_shapes, needed_bytes
from autograd_check.base.result import CheckResult
from autograd_check.base.spec import DTYPES, build_spec
from autograd_check.base.spec import LOSS_NAMES as LOSSES
from autograd_check.checks import model
from autograd_check.cli import app
from autograd_check.execute import execute, run_check

runner = CliRunner()
CPU = torch.device("cpu")

LINEAR_NAMES = ["predicted", "linear.weight", "linear.bias", "input"]
MLP_NAMES = ["predicted", "fc2.weight", "fc2.bias", "fc1.weight", "fc1.bias", "input"]


def autograd_reference(
    layers: list[model.Layer], x: torch.Tensor, seed: int
) -> dict[str, torch.Tensor]:
    """Gradients of sum(y * w) for a fixed random w, by autograd, for every parameter and x."""
    x = x.clone().requires_grad_()
    params = [t.clone().requires_grad_() for layer in layers for t in (layer.weight, layer.bias)]
    tracked = [
        model.Layer(layer.name, params[2 * i], params[2 * i + 1]) for i, layer in enumerate(layers)
    ]
    y, _ = model.forward(tracked, x)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    (y * w).sum().backward()
    grads = {"input": x.grad, "w": w}
    for layer in tracked:
        grads[f"{layer.name}.weight"] = layer.weight.grad
        grads[f"{layer.name}.bias"] = layer.bias.grad
    return grads


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("shape", [(3, 8), (5,), (2, 3, 4), (2, 1, 2, 3)])
def test_manual_backward_equals_autograd_without_using_it(
    kind: str, shape: tuple[int, ...]
) -> None:
    spec = build_spec({"model": kind, "shape": "x".join(map(str, shape)), "dtype": "float64"})
    gen = torch.Generator().manual_seed(1)
    layers = model.init_layers(spec, gen, torch.float64)
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    expected = autograd_reference(layers, x, seed=2)
    # Nothing here requires grad and no_grad is not even on: autograd cannot be what computes it.
    y, activations = model.forward(layers, x)
    assert not y.requires_grad
    grads = model.manual_backward(layers, x, activations, expected["w"])
    assert set(grads) == {name for name in expected if name != "w"}
    for name, grad in grads.items():
        assert not grad.requires_grad
        torch.testing.assert_close(grad, expected[name], msg=name)


def test_layer_shapes_map_the_last_dimension_and_hidden() -> None:
    assert layer_shapes(build_spec({"model": "linear", "shape": "4x6"})) == [("linear", 6, 6)]
    assert layer_shapes(build_spec({"model": "mlp", "shape": "2x3x5", "hidden": 7})) == [
        ("fc1", 7, 5),
        ("fc2", 5, 7),
    ]
    assert build_spec({"model": "mlp"}).hidden == 16  # the default, recorded in the spec


def test_initialisation_is_torch_linear_default_range_and_seeded() -> None:
    spec = build_spec({"model": "mlp", "shape": "3x9", "hidden": 25})
    a = model.init_layers(spec, torch.Generator().manual_seed(5), torch.float32)
    b = model.init_layers(spec, torch.Generator().manual_seed(5), torch.float32)
    for la, lb in zip(a, b, strict=True):
        assert torch.equal(la.weight, lb.weight) and torch.equal(la.bias, lb.bias)
    assert a[0].weight.abs().max() <= 1 / 3 and a[1].weight.abs().max() <= 1 / 5


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_check_through_the_model_passes_for_every_loss(kind: str, dtype: str) -> None:
    for loss in LOSSES:
        spec = build_spec({"model": kind, "loss": loss, "dtype": dtype, "shape": "3x5", "seed": 3})
        result = run_check(spec, CPU)
        assert result.passed, (loss, [c for c in result.comparisons if not c.passed])
        assert [c.name for c in result.comparisons] == (
            LINEAR_NAMES if kind == "linear" else MLP_NAMES
        )


def test_the_tutorials_loss_through_the_mlp_is_bit_exact() -> None:
    result = run_check(build_spec({"model": "mlp"}), CPU)
    assert result.bit_exact and result.passed
    shapes = {c.name: c.shape for c in result.comparisons}
    assert shapes == {
        "predicted": [3, 8], "fc2.weight": [8, 16], "fc2.bias": [8],
        "fc1.weight": [16, 8], "fc1.bias": [16], "input": [3, 8],
    }
    assert result.grad_fn_chain[-1] == "AccumulateGrad"
    assert "tanh" in result.notes[0] and "AddmmBackward0" in result.grad_fn_chain


def test_the_seed_draws_real_then_the_input_as_the_tutorial_draws_predicted() -> None:
    torch.manual_seed(9)
    real = torch.rand(3, 8)
    second = torch.rand(3, 8)
    result = run_check(build_spec({"model": "linear", "seed": 9}), CPU)
    assert torch.equal(torch.tensor(result.tensors["real"].data), real)
    assert torch.equal(torch.tensor(result.tensors["input"].data), second)


def test_a_planted_bug_in_one_layer_fails_that_layer_and_those_below(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Forget tanh's derivative: fc2 is untouched, fc1 and the input are wrong."""
    monkeypatch.setattr(model, "_through_tanh", lambda grad_a, a: grad_a)
    result = run_check(build_spec({"model": "mlp", "dtype": "float64"}), CPU)
    verdicts = {c.name: c.passed for c in result.comparisons}
    assert verdicts == {
        "predicted": True, "fc2.weight": True, "fc2.bias": True,
        "fc1.weight": False, "fc1.bias": False, "input": False,
    }
    assert not result.passed and result.exit_code == 1
    assert "difference[fc1.weight]" in result.tensors


def test_the_model_result_round_trips_through_json() -> None:
    result = execute(build_spec({"model": "mlp", "hidden": 3, "loss": "huber"}))
    again = CheckResult.from_dict(json.loads(result.to_json()))
    assert again.comparisons == result.comparisons
    assert again.spec["model"] == "mlp" and again.spec["hidden"] == 3


def test_memory_estimate_counts_the_model() -> None:
    plain = build_spec({"shape": "2x1000"})
    linear = build_spec({"shape": "2x1000", "model": "linear"})
    assert needed_bytes(plain) == PEAK_TENSORS * 2000 * 4
    assert needed_bytes(linear) >= needed_bytes(plain) + 3 * 1000 * 1000 * 4


class TestCommandLine:
    def test_mlp_prints_the_per_parameter_table(self) -> None:
        result = runner.invoke(app, ["run", "--model", "mlp", "--hidden", "4", "--shape", "2x3"])
        assert result.exit_code == 0, result.output
        out = result.stdout
        assert "per-parameter comparison" in out
        for column in ("parameter", "shape", "bit-exact", "mismatched", "greatest abs diff",
                       "greatest rel diff", "verdict"):
            assert column in out
        assert "fc1.weight   4×3" in out and "fc2.weight   3×4" in out
        assert "0 of 12" in out and "∂h = ∂a ⊙ (1 − a²)" in out
        assert "mismatched elements     0 of 43" in out  # 6 + 12 + 3 + 12 + 4 + 6
        assert result.stderr == ""

    def test_linear_with_a_loss_json(self) -> None:
        args = ["run", "--model", "linear", "--loss", "cross-entropy", "--shape", "4x3", "--json"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert [s["name"] for s in doc["statistics"]] == LINEAR_NAMES
        assert doc["loss"]["name"] == "cross-entropy"
        assert doc["tensors"]["real"]["dtype"] == "int64"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--model", "cnn"], "model 'cnn' is not known; choose linear, mlp"),
            (["--hidden", "4"], "hidden applies only to model mlp, not 'none'"),
            (["--model", "linear", "--hidden", "4"], "hidden applies only to model mlp"),
            (["--model", "mlp", "--hidden", "0"], "hidden '0' is not allowed"),
            (["--model", "linear", "--shape", "2x400000"], "for the linear model"),
        ],
    )
    def test_bad_model_options_are_one_line_exit_2(self, args: list[str], message: str) -> None:
        result = runner.invoke(app, ["run", *args])
        assert result.exit_code == 2
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1 and message in result.stderr


def test_tolerance_applies_per_parameter() -> None:
    spec = build_spec({"model": "mlp", "loss": "bce-logits", "dtype": "bfloat16", "seed": 1})
    result = run_check(spec, CPU)
    assert result.passed
    for c in result.comparisons:
        assert math.isclose(c.rtol, 1.6e-2) and c.mismatched == 0


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_loss_and_model_through_a_real_slurm_job(tmp_path: Path) -> None:
    """The same check, pickled to a node by submit: the spec's loss, delta, model and hidden
    travel, and the per-parameter result comes back."""
    log_dir = tmp_path / "slurm"
    args = ["submit", "--wait", "--log-dir", str(log_dir), "--cpus", "1", "--mem", "500M",
            "--loss", "huber", "--delta", "0.5", "--model", "mlp", "--hidden", "4",
            "--shape", "2x3", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["spec"]["loss"] == "huber" and doc["spec"]["delta"] == 0.5
    assert doc["spec"]["model"] == "mlp" and doc["spec"]["hidden"] == 4
    assert [s["name"] for s in doc["statistics"]] == MLP_NAMES
    assert doc["environment"]["slurm"]["job_id"]
    local = execute(build_spec({"loss": "huber", "delta": 0.5, "model": "mlp", "hidden": 4,
                                "shape": "2x3"}))
    assert doc["loss"]["value"] == local.loss_value  # same seed, same numbers, on the node


def test_repeat_and_finite_differences_go_through_the_model() -> None:
    spec = build_spec({"model": "mlp", "hidden": 3, "shape": "2x3", "repeat": 3,
                       "reference": "finite-diff"})
    result = run_check(spec, CPU)
    assert result.passed
    assert result.repeat is not None and result.repeat["runs"] == 3
    assert result.repeat["bitwise_identical"] is True
    fd = [c.name for c in result.comparisons if c.name.endswith("vs finite-diff")]
    assert fd == [f"{n}: {w} vs finite-diff" for n in MLP_NAMES for w in ("autograd", "manual")]
    assert result.finite_diff is not None and result.finite_diff["elements"] == 36


def test_finite_differences_catch_a_wrong_manual_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "_through_tanh", lambda grad_a, a: grad_a)
    spec = build_spec({"model": "mlp", "hidden": 3, "shape": "2x3", "dtype": "float64",
                       "reference": "finite-diff"})
    verdicts = {c.name: c.passed for c in run_check(spec, CPU).comparisons}
    assert verdicts["fc1.weight: manual vs finite-diff"] is False
    assert verdicts["fc1.weight: autograd vs finite-diff"] is True
    assert verdicts["fc2.weight: manual vs finite-diff"] is True
