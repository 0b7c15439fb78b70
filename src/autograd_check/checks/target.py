"""Checks that run through the Python API (api/check.py) from a CheckSpec: a --target that gives
its own inputs, and any check with --reference projection|forward or --order 2 (a built-in loss
or a loss-form target, on the same tensors as the plain check draws; with --model, the loss of
the model's output, as a function of the input and every parameter, on the same tensors as the
model check draws).

So the CLI, `submit` (on the node) and sweeps check exactly what `check()` checks from Python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from autograd_check.api.check import check_named
from autograd_check.base.errors import BadInput
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import CheckResult
from autograd_check.base.spec import CheckSpec, nondet_tol
from autograd_check.checks import model
from autograd_check.checks.draw import draw, draw_notes
from autograd_check.kernel.views import tensor_view
from autograd_check.losses.base import Loss
from autograd_check.losses.inputs import InputsTarget
from autograd_check.losses.user import TargetRaised

if TYPE_CHECKING:
    import torch

API_REFERENCES = ("projection", "forward")
"""Spec references only the API computes (manual and finite-diff have the engine's own path)."""


def through_api(spec: CheckSpec) -> bool:
    """Whether a loss check goes through the API: a reference or order only it computes."""
    return spec.reference in API_REFERENCES or spec.order == 2


def api_reference(spec: CheckSpec, has_manual: bool) -> str:
    """The API's name for the spec's reference: manual (the default) is 'autograd' when there
    is a manual gradient, else the API's own default, 'projection'."""
    if spec.reference == "manual":
        return "autograd" if has_manual else "projection"
    return spec.reference


def _given_reference(spec: CheckSpec) -> str | None:
    """What check() is told: None for manual (the default), so that the API's own default
    applies, projection beside manual against autograd for a target's own backward included."""
    return None if spec.reference == "manual" else spec.reference


def _check(spec: CheckSpec, fn: Callable[..., Any], inputs: tuple[Any, ...],
           manual: Callable[..., Any] | None,
           names: list[str] | None = None) -> CheckResult:
    return check_named(fn, inputs, names, manual=manual,
                       reference=_given_reference(spec), rtol=spec.rtol,
                       atol=spec.atol, exact=spec.exact, order=spec.order, seed=spec.seed,
                       max_fd_elements=spec.max_fd_elements, nondet_tol=nondet_tol(spec))


def _as_spec_result(spec: CheckSpec, result: CheckResult) -> CheckResult:
    """The API's result with the CheckSpec as its spec (so records, reports and `result` read it
    as any run's), plus what the API adds: fn, manual and the checked tensors."""
    api_spec = result.spec
    result.spec = {**spec.to_dict(), **{k: api_spec[k] for k in ("fn", "manual", "checked")}}
    return result


def _refuse_repeat(spec: CheckSpec) -> None:
    if spec.repeat > 1:
        raise BadInput("--repeat applies to --reference manual or finite-diff checks of a loss "
                       "or model, not to this check (through the Python API)")


def run_inputs_target(spec: CheckSpec, device: torch.device, target: InputsTarget) -> CheckResult:
    """A target with inputs(generator, dtype, device): check(fn, *inputs, manual=...)."""
    torch = import_torch()
    _refuse_repeat(spec)
    dtype = getattr(torch, spec.dtype)
    if target.kind == "module":  # its floating-point parameters and buffers, as the inputs
        target.fn.to(device=device, dtype=dtype)  # type: ignore[attr-defined]
    try:
        generator = torch.Generator(device=device).manual_seed(spec.seed)
        inputs = target.draw(generator, dtype, device)
        result = target.call_api(lambda: _check(spec, target.fn, inputs, target.manual))
    except TargetRaised as e:
        return _failed(spec, target, e)
    result = _as_spec_result(spec, result)
    result.loss_name = target.short
    if target.manual is None and spec.reference == "manual":
        result.notes.append("the target has no manual(*inputs, grad_output): autograd is "
                            "checked against projection (directional finite differences)")
    return result


def _failed(spec: CheckSpec, target: InputsTarget, error: TargetRaised) -> CheckResult:
    """A failed check whose result carries the user's own error (type, message, line)."""
    return CheckResult.failed(
        {**spec.to_dict(), "fn": target.short}, str(error), loss_name=target.short,
        loss_formula="fn(*inputs)",
        gradient_formula="manual(*inputs, grad_output)" if target.manual else "none given",
        exact=spec.exact,
        reference={"name": api_reference(spec, target.manual is not None),
                   "order": spec.order, "seed": spec.seed})


def run_loss_through_api(spec: CheckSpec, device: torch.device, loss_def: Loss) -> CheckResult:
    """A loss (built-in or a loss-form target) at the tensors the plain check draws, through
    check(lambda predicted: loss(predicted, real), predicted, manual=...); with --model, through
    the model (run_model_through_api)."""
    _refuse_repeat(spec)
    if spec.model is not None:
        return run_model_through_api(spec, device, loss_def)
    real, predicted = draw(spec, device, loss_def)
    evaluate = loss_def.evaluate or loss_def.forward

    # real is an input (not checked) rather than a captured constant: the diagnosis may then
    # split the wrong elements off on d = predicted − real (a loss's branches)
    def loss(predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return evaluate(predicted, real)

    def manual(predicted: torch.Tensor, real: torch.Tensor,
               grad_output: torch.Tensor) -> torch.Tensor:
        return loss_def.manual_grad(predicted, real) * grad_output

    inputs = (predicted.detach().requires_grad_(), real)
    result = _loss_check(spec, loss_def, loss, inputs, manual, None)
    result.spec.update(fn=f"loss(predicted, real) of {loss_def.name}",
                       manual=f"manual_grad(predicted, real) of {loss_def.name}")
    result.loss_formula = loss_def.formula
    result.gradient_formula = loss_def.gradient_formula
    result.tensors = {"real": tensor_view("real", real), **result.tensors}
    result.notes = draw_notes(loss_def) + result.notes
    return result


def run_model_through_api(spec: CheckSpec, device: torch.device,
                          loss_def: Loss) -> CheckResult:
    """--model with --reference projection|forward or --order 2: at the tensors the model check
    draws (checks/model.py: the same seed gives the same real, x and parameters), through
    check(fn, x, W, b, ...) with fn(x, W, b, ...) = loss(model(x), real) and manual the model's
    hand-written backward (model.manual_backward from the loss's manual_grad at the output).

    The checked tensors are named as the model check's statistics are: input, then each layer's
    weight and bias in forward order (linear.weight, ... or fc1.weight, ..., fc2.bias)."""
    _refuse_repeat(spec)
    real, x, layers = model.draw_model(spec, device, loss_def)
    evaluate = loss_def.evaluate or loss_def.forward
    names = ["input", *(f"{la.name}.{p}" for la in layers for p in ("weight", "bias"))]

    def net(params: tuple[torch.Tensor, ...]) -> list[model.Layer]:
        return [model.Layer(la.name, params[2 * i], params[2 * i + 1])
                for i, la in enumerate(layers)]

    def loss(x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return evaluate(model.forward(net(params), x)[0], real)

    def manual(x: torch.Tensor, *params: torch.Tensor,
               grad_output: torch.Tensor) -> tuple[torch.Tensor, ...]:
        layers_now = net(params)
        y, activations = model.forward(layers_now, x)
        grad_y = loss_def.manual_grad(y, real) * grad_output
        grads = model.manual_backward(layers_now, x, activations, grad_y)
        return tuple(grads[name] for name in names)

    inputs = (x.requires_grad_(), *(getattr(la, p).requires_grad_()
                                    for la in layers for p in ("weight", "bias")))
    result = _loss_check(spec, loss_def, loss, inputs, manual, names)
    formula = model.LINEAR_FORMULA if spec.model == "linear" else model.MLP_FORMULA
    result.spec.update(fn=f"loss(model(x), real) of {loss_def.name} through the {spec.model}",
                       manual=f"the {spec.model}'s backward by hand from manual_grad(y, real) "
                       f"of {loss_def.name}")
    result.loss_formula = loss_def.formula
    result.gradient_formula = (f"g = {loss_def.gradient_formula}; then by hand through the "
                               f"{spec.model}: {formula}")
    result.tensors = {"real": tensor_view("real", real), **result.tensors}
    result.notes = [f"model: {model.describe(spec)}", *draw_notes(loss_def), *result.notes]
    return result


def _loss_check(spec: CheckSpec, loss_def: Loss, fn: Callable[..., Any],
                inputs: tuple[Any, ...], manual: Callable[..., Any],
                names: list[str] | None) -> CheckResult:
    """The API's check of a loss (through a model or not), as a CheckSpec's result; a target's
    loss raising inside autograd or a reference's evaluation is the user's error."""
    try:
        result = _as_spec_result(spec, _check(spec, fn, inputs, manual, names))
    except (BadInput, TargetRaised):
        raise
    except (Exception, SystemExit) as e:
        if not loss_def.user_code:
            raise
        # the target's loss raised inside autograd (its backward) or a reference's evaluation
        raise TargetRaised("loss(predicted, real) or its backward", e, None) from None
    result.loss_name = loss_def.name
    return result
