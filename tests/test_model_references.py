"""--model linear|mlp with --reference projection|forward and --order 2: the model check's own
tensors (same seed, same real, x and parameters) through the Python API, fn(x, W, b, ...) =
loss(model(x), real) against the model's hand-written backward, named as the model check names
its statistics (input, linear.weight, ... / fc1.weight, ..., fc2.bias)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from autograd_check.base.spec import LOSS_NAMES as LOSSES
from autograd_check.base.spec import build_spec
from autograd_check.checks import model
from autograd_check.cli import app
from autograd_check.execute import run_check
from autograd_check.losses.resolve import resolve_loss

runner = CliRunner()
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CPU = torch.device("cpu")

NAMES = {
    "linear": ["input", "linear.weight", "linear.bias"],
    "mlp": ["input", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"],
}
REFERENCES: list[dict[str, Any]] = [
    {"reference": "projection"},
    {"reference": "forward"},
    {"order": 2},
]
REFERENCE_ARGS = [["--reference", "projection"], ["--reference", "forward"], ["--order", "2"]]


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out, err = cli("run", "--json", *args)
    assert out, err
    return code, json.loads(out)


def _spec(**fields: Any) -> Any:
    return build_spec({"hidden": 4, **fields} if fields.get("model") == "mlp" else fields)


@pytest.mark.parametrize("model_name", ["linear", "mlp"])
@pytest.mark.parametrize("args", REFERENCE_ARGS, ids=lambda a: "-".join(a).strip("-"))
def test_run_passes(model_name: str, args: list[str]) -> None:
    code, out, err = cli("run", "--model", model_name, *args, "--no-show-tensors")
    assert code == 0, out + err
    assert "PASS" in out and "per-parameter comparison" in out
    for name in NAMES[model_name]:
        assert name in out


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("model_name", ["linear", "mlp"])
@pytest.mark.parametrize("fields", REFERENCES, ids=lambda f: "-".join(map(str, f.values())))
def test_every_builtin_loss_passes(loss: str, model_name: str, fields: dict[str, Any]) -> None:
    result = run_check(_spec(loss=loss, model=model_name, **fields), CPU)
    assert result.passed, [(c.name, c.max_abs_diff) for c in result.comparisons if not c.passed]
    assert result.error is None
    assert result.reference is not None
    assert [c.name for c in result.comparisons[: len(NAMES[model_name])]] == NAMES[model_name]


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_other_dtypes_pass(dtype: str) -> None:
    result = run_check(_spec(model="mlp", dtype=dtype, reference="projection"), CPU)
    assert result.passed, [(c.name, c.max_abs_diff) for c in result.comparisons]


@pytest.mark.parametrize("model_name", ["linear", "mlp"])
def test_the_same_tensors_as_the_model_check(model_name: str) -> None:
    """Same seed: the same real, x and parameters as the plain model check, and the same
    manual-vs-autograd verdict per tensor."""
    plain = run_check(_spec(model=model_name, seed=3), CPU)
    projected = run_check(_spec(model=model_name, seed=3, reference="projection"), CPU)
    for name in ("real", "input"):
        assert projected.tensors[name].data == plain.tensors[name].data
    rows = {c.name: c for c in plain.comparisons}
    for c in projected.comparisons[: len(NAMES[model_name])]:
        assert (c.shape, c.numel, c.mismatched) == (rows[c.name].shape, rows[c.name].numel,
                                                    rows[c.name].mismatched)
    spec = _spec(model=model_name, seed=3)
    _real, _x, layers = model.draw_model(spec, CPU, resolve_loss(spec))
    assert projected.tensors[f"{layers[0].name}.weight"].data == layers[0].weight.tolist()


def _planted(name: str, factor: float = 1.5) -> Callable[..., dict[str, torch.Tensor]]:
    original = model.manual_backward

    def wrong(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        grads = original(*args, **kwargs)
        grads[name] = grads[name] * factor
        return grads

    return wrong


@pytest.mark.parametrize(("model_name", "wrong"), [("linear", "linear.weight"),
                                                    ("mlp", "fc1.bias")])
@pytest.mark.parametrize("reference", ["projection", "forward"])
def test_a_planted_bug_is_caught(monkeypatch: pytest.MonkeyPatch, model_name: str, wrong: str,
                                 reference: str) -> None:
    monkeypatch.setattr(model, "manual_backward", _planted(wrong))
    code, doc = run_json("--model", model_name, "--reference", reference)
    assert code == 1
    verdicts = {s["name"]: s["passed"] for s in doc["statistics"]}
    assert verdicts[wrong] is False
    assert verdicts[f"{wrong}: manual vs {reference}"] is False
    assert verdicts[f"{wrong}: autograd vs {reference}"] is True
    others = [n for n in NAMES[model_name] if n != wrong]
    assert all(verdicts[n] for n in others)


def test_a_planted_bug_is_caught_at_order_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model, "manual_backward", _planted("fc2.weight"))
    code, doc = run_json("--model", "mlp", "--order", "2")
    assert code == 1
    assert {s["name"]: s["passed"] for s in doc["statistics"]}["fc2.weight"] is False


@pytest.mark.parametrize("model_name", ["linear", "mlp"])
@pytest.mark.parametrize("args", REFERENCE_ARGS, ids=lambda a: "-".join(a).strip("-"))
def test_json_statistics_carry_the_parameter_names(model_name: str, args: list[str]) -> None:
    code, doc = run_json("--model", model_name, *args)
    assert code == 0
    names = [s["name"] for s in doc["statistics"]]
    assert names[: len(NAMES[model_name])] == NAMES[model_name]
    assert [c["name"] for c in doc["spec"]["checked"]] == NAMES[model_name]
    assert doc["spec"]["model"] == model_name
    assert doc["reference"]["name"] == ("autograd" if args[0] == "--order" else args[1])
    if args[0] == "--order":
        assert doc["reference"]["order"] == 2
        assert f"{NAMES[model_name][1]}: double backward vs finite-diff" in names
    else:
        assert f"{NAMES[model_name][1]}: manual vs {args[1]}" in names


def test_a_loss_form_target_through_the_model() -> None:
    code, doc = run_json("--model", "mlp", "--target",
                         f"{EXAMPLES / 'correct_target.py'}:log_cosh", "--reference", "forward")
    assert code == 0, doc["statistics"]
    code, doc = run_json("--model", "mlp", "--target",
                         f"{EXAMPLES / 'buggy_target.py'}:smooth_l1", "--reference", "projection")
    assert code == 1


def test_repeat_with_projection_is_still_refused() -> None:
    code, out, err = cli("run", "--model", "linear", "--repeat", "3", "--reference", "projection")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
