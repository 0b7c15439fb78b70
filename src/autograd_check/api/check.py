"""check() and assert_gradients(): any function of any tensors, against its hand-derived gradient
(manual), or against a reference (references/independent.py), as a CheckResult."""

from __future__ import annotations

import functools
import inspect
import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ParamSpec

from autograd_check.base.clock import Clock
from autograd_check.base.environment import collect_environment
from autograd_check.base.errors import Inconclusive
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import CheckResult, Comparison, ContractCheck, TensorView
from autograd_check.kernel.compare import to64
from autograd_check.kernel.locate import finding
from autograd_check.kernel.views import tensor_view
from autograd_check.references import gradients as one_path
from autograd_check.references.arguments import (
    Arguments,
    Call,
    SeveralOutputs,
    caller_state_kept,
    check_output,
    cotangent,
    describe_fn,
    input_names,
    parse_arguments,
    prepare,
)
from autograd_check.references.contract import backward_contract, custom_functions, merge, rule
from autograd_check.references.gradients import (
    against_float64,
    autograd_against_float64,
    call_manual,
    check_manual,
    contract_findings,
    diagnose_rows,
    dtype_name,
    manual_vs_autograd,
)
from autograd_check.references.independent import (
    Outcome,
    Where,
    finite_diff,
    forward,
    projection,
    reduce64,
    second_order,
)
from autograd_check.references.outputs import by_output

if TYPE_CHECKING:
    from torch import Tensor

P = ParamSpec("P")


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
    name: str | None = None,
    **options: Any,
) -> CheckResult:
    """Check the gradients of fn(*inputs) for every input with requires_grad=True (and, for an
    nn.Module, every parameter that requires grad): docs/api.md.

    manual(*inputs, grad_output=u) returns the hand-derived gradients, one per checked tensor;
    reference is 'autograd' (manual against autograd; the default with manual), 'projection'
    (the default without), 'forward' or 'finite-diff'; order=2 also checks the double backward.
    options: directions (k = 3), step (h = 1e-6), max_fd_elements (65536), nondet_tol (0);
    any other keyword argument is passed to fn (and to manual) as it is; name labels the report.
    """
    args = parse_arguments(manual, reference, rtol, atol, exact, order, seed, options, name)
    return _named(fn, inputs, None, manual, args)


_SIGNATURE = inspect.signature(check)


def check_named(fn: Callable[..., Any], inputs: Sequence[Any], names: Sequence[str] | None,
                **keywords: Any) -> CheckResult:
    """check(fn, *inputs, **keywords) with the inputs named by names (one per input) rather than
    by fn's signature; names=None is check() itself. For names that are not Python identifiers,
    as the CLI's model check gives (fc1.weight, ...: checks/target.py). The keywords are
    check()'s own, bound by its signature (written once, there)."""
    given = _SIGNATURE.bind(fn, **keywords)
    given.apply_defaults()
    a = given.arguments
    args = parse_arguments(a["manual"], a["reference"], a["rtol"], a["atol"], a["exact"],
                           a["order"], a["seed"], a["options"], a["name"])
    return _named(fn, inputs, names, a["manual"], args)


def _named(fn: Callable[..., Any], inputs: Sequence[Any], names: Sequence[str] | None,
           manual: Callable[..., Any] | None, args: Arguments) -> CheckResult:
    call = prepare(fn, inputs, names, kwargs=args.kwargs)
    with caller_state_kept(call.caller_tensors):
        try:
            result = _check(call, manual, args)
        except SeveralOutputs as several:
            result = by_output(call, manual, args, several.count, _check)
    if args.name is not None:
        result.loss_name = args.name
        result.spec["name"] = args.name
    return result


def _asserting(checking: Callable[P, CheckResult]) -> Callable[P, CheckResult]:
    """check() with its own signature, raising AssertionError with the plain-text verdict
    when the check fails."""

    @functools.wraps(checking)
    def asserted(*args: P.args, **kwargs: P.kwargs) -> CheckResult:
        __tracebackhide__ = True  # pytest shows the caller's line, not this one
        result = checking(*args, **kwargs)
        if not result.passed:
            raise AssertionError(str(result))
        return result

    asserted.__name__ = asserted.__qualname__ = "assert_gradients"
    asserted.__doc__ = "check(), raising AssertionError with the plain-text verdict when it fails."
    return asserted


assert_gradients = _asserting(check)


def _rounding_scale(out: Tensor, u: Tensor) -> float:
    """The size of L = ⟨u, out⟩ whose rounding the numerical references allow for: Σ|u·out|."""
    torch = import_torch()
    if out.dim() == 0:
        return abs(float(out.detach()))
    return float(torch.dot(out.detach().reshape(-1).to(torch.float64).abs(),
                           u.reshape(-1).to(torch.float64).abs()))


def _check(call: Call, manual: Callable[..., Any] | None, args: Arguments) -> CheckResult:
    torch = import_torch()
    clock = Clock(call.values[0].device)
    try:
        got = one_path.autograd_then_manual(call, manual, args.seed, clock)
    except Exception:
        undefined = _undefined_raised(call, args)
        if undefined is None:
            raise
        return _contract_only(call, args, manual, undefined, clock)
    out, u, notes = got.out, got.grad_output, list(got.notes)
    names = [c.name for c in call.checked]
    contract: list[ContractCheck] = []
    writes: list[str] = []
    if got.functions:  # its findings first: they name the Function, isolation's do not
        contract += backward_contract(
            got.functions, lambda other: _fresh_forward(call, other), names, u, args.tolerances,
            args.nondet_tol, call.output is not None)
        writes += call.writes("fn")
        clock.mark("contract")
    gradients: list[dict[str, Tensor]] = [{"autograd": g} for g in got.auto]
    comparisons: list[Comparison] = []
    findings: list[dict[str, Any]] = []
    references = [] if args.reference == "autograd" else [args.reference]
    why = None
    if got.functions and args.reference == "autograd":  # never the user's code against itself
        own = ", ".join(f"{f.__qualname__}.backward" for f in got.functions)
        references.append("projection")
        why = (f"autograd runs your own backward ({own}), so manual against autograd alone "
               "would compare your code with itself: projection checks both")
    elif got.functions and args.reference == "forward":
        # forward mode runs the Function's own jvp: two of the user's formulas, which can share
        # a wrong helper; projection differentiates fn's forward itself
        own = ", ".join(f"{f.__qualname__}.jvp and .backward" for f in got.functions)
        references.append("projection")
        why = (f"forward mode compares your own {own}, which can share a mistake: projection "
               "checks the backward against fn's forward as well")
    unresolved: list[str] = []  # why a pass would prove nothing (refused below; a fail stands)
    twin = half_precision_twin(call) if manual is not None or got.functions or any(
        r in ("projection", "forward") for r in references) or args.order == 2 else None
    ref_out: Tensor = out
    ref_gradients: list[dict[str, Tensor]] = gradients
    if twin is not None:
        ref_out, ref_gradients = _gradients64(twin, manual, u.to(torch.float64))
    if twin is not None and got.functions:  # your backward in half precision, judged too
        comparisons += autograd_against_float64(
            names, got.auto, [g["autograd"] for g in ref_gradients], args.tolerances)
    if got.manual is not None:
        rows = manual_vs_autograd(names, got.manual, got.auto, args.tolerances, args.exact,
                                  unresolved=unresolved)
        if twin is not None and not args.exact and args.rtol is None and args.atol is None:
            # tolerances given are the caller's criterion: then manual against autograd at them
            rows, judged = against_float64(rows, got.manual, got.auto,
                                           [g["autograd"] for g in ref_gradients],
                                           args.tolerances, trust_auto=not got.functions)
            notes += judged
        comparisons += rows
        findings += diagnose_rows(rows, got.manual, got.auto, args.tolerances, args.exact,
                                  *_clues(call), output=out)
        clock.mark("compare")
        for m, grads in zip(got.manual, gradients, strict=True):
            grads["manual"] = m
    block: dict[str, Any] = {"name": args.reference, "order": args.order, "seed": args.seed}
    if why is not None:
        block.update(references=["autograd", *references] if args.reference == "autograd"
                     else references, why=why)
    fd_block = None
    for reference in references:
        # float16/bfloat16: projection, forward and order=2 check the backward at float64 copies
        # of the tensors (half_precision_twin); finite-diff compares element by element, where
        # the half type's own tolerances are the right ones.
        use_twin = twin is not None and reference != "finite-diff"
        ref_call, ref_u = (twin, u.to(torch.float64)) if use_twin and twin is not None else (
            call, u)
        grads_here = ref_gradients if use_twin else gradients
        if use_twin:
            notes.append(half_precision_note(call, reference))
        scale = _rounding_scale(ref_out if use_twin else out, ref_u)
        outcome: Outcome
        if reference == "projection":
            outcome = projection(ref_call, args, ref_u, grads_here, scale)
        elif reference == "forward":
            outcome = forward(ref_call, args, ref_u, grads_here)
        else:
            outcome = finite_diff(call, args, u, gradients, scale)
            fd_block = outcome.block
        comparisons += outcome.comparisons
        notes += outcome.notes
        unresolved += outcome.unresolved
        findings += _located_findings(outcome.located, findings, *_clues(call))
        block.update(outcome.block)
        if outcome.estimates and manual is None:  # with manual, manual vs autograd's says why
            findings += _diagnose_estimates(call, outcome, got.auto, out)
        writes += call.writes(f"fn (evaluated by {reference})")
        clock.mark(reference.replace("-", "_"))
    if args.order == 2:
        second = second_order(call if twin is None else twin, args,
                              u if twin is None else u.to(torch.float64))
        if twin is not None:
            notes.append(half_precision_note(call, "order=2"))
        comparisons += second.comparisons
        notes += second.notes
        block["second_order"] = second.block
        writes += call.writes("fn (evaluated by order=2)")
        clock.mark("second_order")
    contract = merge([*contract, *got.contract, rule("input-mutated", writes)])
    manual_rows = [c for c in comparisons if " vs " not in c.name] if manual is not None else []
    passed = all(c.passed for c in comparisons) and all(c.passed for c in contract)
    if passed and unresolved:
        more = f" (and {len(unresolved) - 1} more)" if len(unresolved) > 1 else ""
        raise Inconclusive(f"the check cannot tell these gradients from wrong ones: "
                           f"{unresolved[0]}{more}")
    return CheckResult(
        spec=_spec(call, args, manual),
        passed=passed,
        bit_exact=bool(manual_rows) and all(c.bit_exact for c in manual_rows),
        criterion="exact" if args.exact else "tolerance",
        loss_name=call.name,
        loss_value=float(reduce64(out.detach(), None if u.dim() == 0 else u.to(torch.float64))),
        loss_formula="fn(*inputs)" if out.dim() == 0 else "⟨grad_output, fn(*inputs)⟩",
        gradient_formula=describe_fn(manual) if manual is not None else "none given",
        grad_fn_chain=got.chain,
        comparisons=comparisons,
        tensors=_views(call, out),
        environment=collect_environment(call.values[0].device),
        timings=clock.total(),
        notes=list(dict.fromkeys(notes)),
        finite_diff=fd_block,
        reference=block,
        contract=contract,
        diagnosis=[*contract_findings(contract, names), *findings],
    )


def _undefined_raised(call: Call, args: Arguments) -> ContractCheck | None:
    """For one output of several: the failed undefined-grad-output rule when the backward
    raised because an unused output's gradient was None, else None."""
    if call.output is None:
        return None
    torch = import_torch()
    try:
        with torch.enable_grad():
            out, _ = _fresh_forward(call)
            classes = custom_functions(out)
            u = cotangent(out, args.seed)
        if not classes:
            return None
        checks = backward_contract(classes, lambda other: _fresh_forward(call, other),
                                   [c.name for c in call.checked], u, args.tolerances,
                                   args.nondet_tol, True)
    except Exception:
        return None
    return next((c for c in checks if c.kind == "undefined-grad-output" and not c.passed), None)


def _contract_only(call: Call, args: Arguments, manual: Callable[..., Any] | None,
                   broken: ContractCheck, clock: Clock) -> CheckResult:
    """A failed check that could not compare gradients: the backward broke a rule first."""
    return CheckResult(
        spec=_spec(call, args, manual),
        passed=False,
        bit_exact=False,
        criterion="exact" if args.exact else "tolerance",
        loss_name=call.name,
        loss_value=float("nan"),
        loss_formula="fn(*inputs)",
        gradient_formula=describe_fn(manual) if manual is not None else "none given",
        grad_fn_chain=[],
        comparisons=[],
        tensors={},
        environment=collect_environment(call.values[0].device),
        timings=clock.total(),
        reference={"name": args.reference, "order": args.order, "seed": args.seed},
        contract=[broken],
    )


def _clues(call: Call) -> tuple[dict[str, list[int]], dict[str, Tensor]]:
    """What a diagnosis may name: each input's and checked tensor's shape (a factor that is a
    size), and their values (a condition that splits the wrong elements off)."""
    torch = import_torch()
    sizes = {c.name: list(c.value.shape) for c in call.checked}
    values: dict[str, Tensor] = {}
    # an unchecked input (real) by fn's own name for it where it has one, not inputs[1]
    own = input_names(torch, call.fn, call.module, len(call.inputs))
    names = [o if n.startswith("inputs[") and o not in call.input_names else n
             for n, o in zip(call.input_names, own, strict=True)]
    for name, t in zip(names, call.inputs, strict=True):
        sizes.setdefault(name, list(t.shape))
        if t.is_floating_point():
            values[name] = t.detach()
    # a loss of predicted and real branches on their difference (smooth L1's |d| < β)
    for (a, x), (b, y) in itertools.combinations(list(values.items()), 2):
        if x.shape == y.shape and x.dtype == y.dtype:
            values[f"{a} − {b}"] = x - y
    return sizes, values


def _diagnose_estimates(call: Call, outcome: Outcome, auto: Sequence[Tensor],
                        out: Tensor) -> list[dict[str, Any]]:
    """Why autograd's gradients (your backward's) differ from finite differences' estimates,
    judged at the finite-diff rows' own tolerances, each finding named by its tensor."""
    rows = [replace(row, name=c.name) for c, row in zip(call.checked, (
        r for r in outcome.comparisons if r.name.endswith(": autograd vs finite-diff")),
        strict=True)]
    tolerances = {m.dtype: (row.rtol, row.atol) for m, row in zip(auto, rows, strict=True)}
    return diagnose_rows(rows, auto, outcome.estimates, lambda dtype: tolerances[dtype], False,
                         *_clues(call), output=out)


def _located_findings(located: list[Where], have: list[dict[str, Any]],
                      sizes: dict[str, list[int]], values: dict[str, Tensor]) -> list[
        dict[str, Any]]:
    """One finding per tensor whose reference row failed (its elements located), unless the
    tensor has one already (manual against autograd's, element by element, says more)."""
    named = {f["tensor"] for f in have}
    out = []
    for where in located:
        if where.tensor in named:
            continue
        named.add(where.tensor)
        conditions = {k: v for k, v in values.items() if v.shape == where.gradient.shape}
        out.append(finding(where.tensor, where.gradient, where.located, where.rtol, where.atol,
                           sizes=sizes, conditions=conditions).to_dict())
    return out


def _fresh_forward(call: Call, other: bool = False) -> tuple[Tensor, list[Tensor]]:
    """fn at new leaves (copies of the caller's values, or other ones: Call.fresh_leaves), with
    its graph: for the contract."""
    torch = import_torch()
    leaves = call.fresh_leaves(other)
    with torch.enable_grad():
        out = check_output(call.evaluate(leaves))
    return out, leaves


def half_precision_twin(call: Call) -> Call | None:
    """For a check of float16/bfloat16 tensors, the same call at float64 copies of every
    checked tensor, input, parameter and buffer, else None.

    A directional derivative ⟨g, v⟩ of a half-precision gradient carries that type's rounding
    in every element: an allowance of rtol·‖g‖₁ wide enough for it (bfloat16: 1.6e-2·‖g‖₁) is
    wide enough to hide a wrong backward too. So in half precision the references check the
    backward (autograd's, and manual's) evaluated in float64, against float64 tolerances; the
    half-precision gradient itself is what manual against autograd compares, element by element.
    """
    if not any(c.value.is_floating_point() and c.value.element_size() == 2
               for c in call.checked):
        return None
    checked = [replace(c, value=to64(c.value).requires_grad_()) for c in call.checked]
    inputs = [to64(t) for t in call.inputs]
    state = {k: to64(t) for k, t in call.state.items()}
    for c in checked:
        if c.role == "input":
            inputs[int(c.key)] = c.value.detach()
        else:
            state[str(c.key)] = c.value
    return replace(call, inputs=inputs, checked=checked, state=state, _cast={})


def half_precision_note(call: Call, what: str) -> str:
    names = ", ".join(f"{c.name} ({dtype_name(c.value.dtype)})" for c in call.checked
                      if c.value.element_size() == 2)
    return (f"{what}: {names} in half precision, so the backward was checked at float64 copies "
            "of the tensors, with float64's tolerances (its rounding would hide a wrong "
            "backward); the half-precision gradient itself is compared only by manual vs autograd")


def _gradients64(twin: Call, manual: Callable[..., Any] | None, u64: Tensor) -> tuple[
        Tensor, list[dict[str, Tensor]]]:
    """fn's output at the float64 twin, and autograd's (and manual's) gradients there."""
    torch = import_torch()
    with torch.enable_grad():
        out = check_output(twin.evaluate(twin.values))
        if out.requires_grad:
            auto: Sequence[Tensor] = torch.autograd.grad(
                out, twin.values, u64.to(out.dtype), allow_unused=True, materialize_grads=True)
        else:
            auto = [torch.zeros_like(x) for x in twin.values]
    gradients: list[dict[str, Tensor]] = [{"autograd": g.detach()} for g in auto]
    if manual is not None:
        with torch.no_grad():
            given = call_manual(manual, twin.inputs, u64.to(out.dtype))
        for grads, m in zip(gradients, check_manual(twin, given), strict=True):
            grads["manual"] = m
    return out, gradients


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
                "dtype": dtype_name(c.value.dtype),
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
