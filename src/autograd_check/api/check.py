"""check() and assert_gradients(): any function of any tensors, against its hand-derived gradient
(manual), or against a reference (api/references.py), as a CheckResult."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from autograd_check._torch import import_torch
from autograd_check.api.call import (
    Arguments,
    Call,
    caller_state_kept,
    check_output,
    cotangent,
    describe_fn,
    parse_arguments,
    prepare,
)
from autograd_check.api.references import (
    Outcome,
    finite_diff,
    forward,
    projection,
    reduce64,
    second_order,
)
from autograd_check.engine.compare import compare
from autograd_check.engine.host import collect_environment
from autograd_check.engine.result import CheckResult, Comparison, TensorView
from autograd_check.engine.tensors import Clock, grad_fn_chain, tensor_view

if TYPE_CHECKING:
    from torch import Tensor


def check(
    fn: Callable[..., Any],
    *inputs: Any,
    manual: Callable[..., Any] | None = None,
    reference: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    exact: bool = False,
    order: int = 1,
    seed: int = 0,
    **options: Any,
) -> CheckResult:
    """Check the gradients of fn(*inputs) for every input with requires_grad=True (and, for an
    nn.Module, every parameter that requires grad): docs/api.md.

    manual(*inputs, grad_output=u) returns the hand-derived gradients, one per checked tensor;
    reference is 'autograd' (manual against autograd; the default with manual), 'projection'
    (the default without), 'forward' or 'finite-diff'; order=2 also checks the double backward.
    options: directions (k = 1), step (h = 1e-6), max_fd_elements (65536).
    """
    args = parse_arguments(manual, reference, rtol, atol, exact, order, seed, options)
    call = prepare(fn, inputs)
    with caller_state_kept(call.caller_tensors):
        return _check(call, manual, args)


def assert_gradients(
    fn: Callable[..., Any],
    *inputs: Any,
    manual: Callable[..., Any] | None = None,
    reference: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    exact: bool = False,
    order: int = 1,
    seed: int = 0,
    **options: Any,
) -> CheckResult:
    """check(), raising AssertionError with the plain-text verdict when it fails."""
    __tracebackhide__ = True  # pytest shows the caller's line, not this one
    result = check(fn, *inputs, manual=manual, reference=reference, rtol=rtol, atol=atol,
                   exact=exact, order=order, seed=seed, **options)
    if not result.passed:
        raise AssertionError(str(result))
    return result


def check_manual(call: Call, given: object) -> list[Tensor]:
    """manual's return: one tensor per checked tensor, each shaped, typed and placed like it."""
    torch = import_torch()
    names = ", ".join(c.name for c in call.checked)
    count = len(call.checked)
    if isinstance(given, torch.Tensor):
        grads: list[object] = [given]
    elif isinstance(given, (tuple, list)):
        grads = list(given)
    else:
        raise TypeError(f"manual returned a {type(given).__name__}, not a tensor or a tuple of "
                        f"tensors (one per checked tensor: {names})")
    if len(grads) != count:
        raise ValueError(
            f"manual returned {len(grads)} gradient(s) for {count} checked tensor(s) ({names}): "
            "one per input with requires_grad=True, in order, then one per parameter"
        )
    out: list[Tensor] = []
    for c, g in zip(call.checked, grads, strict=True):
        if not isinstance(g, torch.Tensor):
            raise TypeError(f"manual's gradient for {c.name} is a {type(g).__name__}, not a "
                            "tensor")
        x = c.value
        if g.shape != x.shape:
            raise ValueError(f"manual's gradient for {c.name} has shape {list(g.shape)}, but "
                             f"{c.name} has shape {list(x.shape)}")
        if g.dtype != x.dtype:
            raise ValueError(f"manual's gradient for {c.name} is {_dtype(g.dtype)}, but {c.name} "
                             f"is {_dtype(x.dtype)}: return it in the tensor's own dtype")
        if g.device != x.device:
            raise ValueError(f"manual's gradient for {c.name} is on {g.device}, but {c.name} is "
                             f"on {x.device}")
        out.append(g.detach())
    return out


def _dtype(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _rounding_scale(out: Tensor, u: Tensor) -> float:
    """The size of L = ⟨u, out⟩ whose rounding the numerical references allow for: Σ|u·out|."""
    torch = import_torch()
    if out.dim() == 0:
        return abs(float(out.detach()))
    return float(torch.dot(out.detach().reshape(-1).to(torch.float64).abs(),
                           u.reshape(-1).to(torch.float64).abs()))


def _check(call: Call, manual: Callable[..., Any] | None, args: Arguments) -> CheckResult:
    torch = import_torch()
    values = call.values
    device = values[0].device
    clock = Clock(device)
    notes: list[str] = []
    with torch.enable_grad():
        out = check_output(call.evaluate(values))
        u = cotangent(out, args.seed)
        if out.requires_grad:
            auto: Sequence[Tensor] = torch.autograd.grad(
                out, values, u, allow_unused=True, materialize_grads=True)
        else:
            auto = [torch.zeros_like(x) for x in values]
            notes.append("fn's output does not depend on any checked tensor (it has no "
                         "grad_fn): autograd's gradients are zero")
    clock.mark("autograd")
    gradients: list[dict[str, Tensor]] = [{"autograd": g.detach()} for g in auto]
    comparisons: list[Comparison] = []
    if manual is not None:
        with torch.no_grad():
            given = manual(*call.inputs, grad_output=u)
        mine = check_manual(call, given)
        clock.mark("manual")
        for c, m, grads in zip(call.checked, mine, gradients, strict=True):
            rtol, atol = args.tolerances(c.value.dtype)
            comparisons.append(compare(c.name, m, grads["autograd"], rtol, atol, args.exact))
            grads["manual"] = m
    block: dict[str, Any] = {"name": args.reference, "order": args.order, "seed": args.seed}
    fd_block = None
    if args.reference != "autograd":
        scale = _rounding_scale(out, u)
        outcome: Outcome
        if args.reference == "projection":
            outcome = projection(call, args, u, gradients, scale)
        elif args.reference == "forward":
            outcome = forward(call, args, u, gradients)
        else:
            outcome = finite_diff(call, args, u, gradients, scale)
            fd_block = outcome.block
        comparisons += outcome.comparisons
        notes += outcome.notes
        block.update(outcome.block)
        clock.mark(args.reference.replace("-", "_"))
    if args.order == 2:
        second = second_order(call, args, u)
        comparisons += second.comparisons
        notes += second.notes
        block["second_order"] = second.block
        clock.mark("second_order")
    manual_rows = comparisons[: len(call.checked)] if manual is not None else []
    return CheckResult(
        spec=_spec(call, args, manual),
        passed=all(c.passed for c in comparisons),
        bit_exact=bool(manual_rows) and all(c.bit_exact for c in manual_rows),
        criterion="exact" if args.exact else "tolerance",
        loss_name=call.name,
        loss_value=float(reduce64(out.detach(), None if u.dim() == 0 else u.to(torch.float64))),
        loss_formula="fn(*inputs)" if out.dim() == 0 else "⟨grad_output, fn(*inputs)⟩",
        gradient_formula=describe_fn(manual) if manual is not None else "none given",
        grad_fn_chain=grad_fn_chain(out),
        comparisons=comparisons,
        tensors=_views(call, out),
        environment=collect_environment(device),
        timings=clock.total(),
        notes=notes,
        finite_diff=fd_block,
        reference=block,
    )


def _views(call: Call, out: Tensor) -> dict[str, TensorView]:
    views = {c.name: tensor_view(c.name, c.value) for c in call.checked}
    views["output"] = tensor_view("output", out)
    return views


def _spec(call: Call, args: Arguments, manual: Callable[..., Any] | None) -> dict[str, Any]:
    """What was checked, as plain data (the API's counterpart of a CheckSpec)."""
    return {
        "fn": call.name,
        "manual": describe_fn(manual) if manual is not None else None,
        "checked": [
            {
                "name": c.name,
                "role": c.role,
                "shape": list(c.value.shape),
                "dtype": _dtype(c.value.dtype),
                "device": str(c.value.device),
            }
            for c in call.checked
        ],
        "reference": args.reference,
        "order": args.order,
        "seed": args.seed,
        "rtol": args.rtol,
        "atol": args.atol,
        "exact": args.exact,
        "directions": args.directions,
        "step": args.step,
        "max_fd_elements": args.max_fd_elements,
    }
