"""`run`'s built-in losses, models and the tutorial check are users of the Python API's own path
(references/gradients.py): the same steps, the same numbers as check() on the same tensors."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from autograd_check.api.check import check, check_named
from autograd_check.base.spec import LOSS_NAMES, build_spec
from autograd_check.checks import model
from autograd_check.checks.draw import draw
from autograd_check.execute import execute
from autograd_check.losses.resolve import resolve_loss
from autograd_check.references import gradients


@pytest.fixture()
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every pass through the one path, by the name of what was checked."""
    seen: list[str] = []
    real = gradients.autograd_then_manual

    def spy(call: Any, *args: Any, **kwargs: Any) -> gradients.Gradients:
        seen.append(",".join(c.name for c in call.checked))
        return real(call, *args, **kwargs)

    monkeypatch.setattr(gradients, "autograd_then_manual", spy)
    return seen


@pytest.mark.parametrize(
    ("values", "checked"),
    [
        ({}, "predicted"),
        ({"loss": "cross-entropy"}, "predicted"),
        ({"reference": "finite-diff", "shape": "3x4"}, "predicted"),
        ({"repeat": 3}, "predicted"),
        ({"model": "linear", "shape": "3x4"}, "input,linear.weight,linear.bias"),
        ({"model": "mlp", "shape": "3x4", "hidden": 5},
         "input,fc1.weight,fc1.bias,fc2.weight,fc2.bias"),
    ],
)
def test_run_goes_through_the_apis_path(calls: list[str], values: dict[str, Any],
                                        checked: str) -> None:
    result = execute(build_spec(values))
    assert result.passed
    assert calls == [checked]


def test_check_goes_through_it_too(calls: list[str]) -> None:
    x = torch.rand(3, dtype=torch.float64, requires_grad=True)
    check(torch.sin, x, manual=lambda x, grad_output: torch.cos(x) * grad_output)
    assert calls == ["inputs[0]"]  # torch.sin has no signature to name it by


def _numbers(result: Any) -> list[dict[str, Any]]:
    return [vars(c) for c in result.comparisons]


@pytest.mark.parametrize("loss", LOSS_NAMES)
def test_a_built_in_loss_gives_what_check_gives(loss: str) -> None:
    """run's check of a loss and check(loss(., real), predicted, manual=manual_grad) at the same
    tensors: the same comparison, loss value and grad_fn chain."""
    spec = build_spec({"loss": loss, "shape": "4x5", "seed": 3})
    loss_def = resolve_loss(spec)
    real, predicted = draw(spec, torch.device("cpu"), loss_def)
    api = check_named(lambda p: loss_def.forward(p, real), [predicted], ["predicted"],
                      manual=lambda p, grad_output: loss_def.manual_grad(p, real) * grad_output)
    run = execute(spec)
    assert _numbers(run) == _numbers(api)
    assert run.loss_value == api.loss_value
    assert run.grad_fn_chain == api.grad_fn_chain


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_a_model_gives_what_check_gives(kind: str) -> None:
    spec = build_spec({"model": kind, "shape": "3x4", "seed": 2,
                       **({"hidden": 6} if kind == "mlp" else {})})
    loss_def = resolve_loss(spec)
    real, x, layers = model.draw_model(spec, torch.device("cpu"), loss_def)
    names = ["input", *(f"{la.name}.{p}" for la in layers for p in ("weight", "bias"))]

    def net(params: tuple[torch.Tensor, ...]) -> list[model.Layer]:
        return [model.Layer(la.name, params[2 * i], params[2 * i + 1])
                for i, la in enumerate(layers)]

    def fn(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return loss_def.forward(model.forward(net(params), x)[0], real)

    def manual(x: torch.Tensor, *params: torch.Tensor,
               grad_output: torch.Tensor) -> tuple[torch.Tensor, ...]:
        y, activations = model.forward(net(params), x)
        grads = model.manual_backward(net(params), x, activations, loss_def.manual_grad(y, real))
        return tuple(grads[n] * grad_output for n in names)

    inputs = [x.requires_grad_(), *(getattr(la, p).requires_grad_()
                                    for la in layers for p in ("weight", "bias"))]
    api = check_named(fn, inputs, names, manual=manual)
    run = execute(spec)
    by_name = {c["name"]: c for c in _numbers(run)}
    assert [by_name[c["name"]] for c in _numbers(api)] == _numbers(api)
    assert set(by_name) == {"predicted", *names}  # and the output's own gradient beside them
    assert run.loss_value == api.loss_value
    assert run.grad_fn_chain == api.grad_fn_chain


def test_the_phases_are_the_same_for_run_and_check() -> None:
    run = execute(build_spec({}))
    x = torch.rand(3, requires_grad=True)
    api = check(torch.sin, x, manual=lambda x, grad_output: torch.cos(x) * grad_output)
    assert list(run.timings) == ["draw_s", "forward_s", "backward_s", "manual_s", "compare_s",
                                 "total_s"]
    assert list(api.timings) == ["forward_s", "backward_s", "manual_s", "compare_s", "total_s"]


def test_backward_writes_only_the_checked_tensors() -> None:
    """loss.backward() with inputs=: a tensor fn reaches but that is not checked keeps its
    .grad (None here), as torch.autograd.grad would leave it."""
    scale = torch.tensor(2.0, requires_grad=True)
    x = torch.rand(4, requires_grad=True)
    result = check(lambda x: (scale * x).sum(), x,
                   manual=lambda x, grad_output: scale.detach() * torch.ones_like(x))
    assert result.passed
    assert scale.grad is None and x.grad is None


def test_a_target_loss_of_shape_1_is_still_a_scalar_loss(tmp_path: Any) -> None:
    """loss.backward() takes a one-element loss without a gradient; so does the one path (a
    random grad_output there would scale autograd's gradient and not the manual one)."""
    target = tmp_path / "loss1.py"
    target.write_text(
        "def loss(predicted, real):\n"
        "    return (predicted - real).pow(2).sum().reshape(1)\n\n"
        "def manual_grad(predicted, real):\n"
        "    return 2.0 * (predicted - real)\n"
    )
    target.chmod(0o644)
    result = execute(build_spec({"target": str(target)}))  # the module is the target
    assert result.passed and result.bit_exact, result.comparisons
