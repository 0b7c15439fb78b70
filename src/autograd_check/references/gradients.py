"""The one path of a manual-against-autograd check, shared by check() (api/check.py) and `run`'s
built-in losses, models and the tutorial check (checks/plain.py, checks/model.py):

    forward        out = fn(*inputs), its grad_fn chain
    backward       out.backward(grad_output, inputs=checked), then each checked tensor's .grad:
                   the tutorial's loss.backward() and predicted.grad (grad_output is 1 for a
                   scalar loss); inputs= keeps any other leaf fn reaches from being written to
    manual         manual(*inputs, grad_output) under no_grad, one gradient per checked tensor,
                   each checked for shape, dtype and device
    compare        manual_vs_autograd: per checked tensor, the verdict and the statistics

The caller decides what to hold and what to free between the steps (`run` drops its tensors
before the comparison's temporaries, for peak memory); everything computed is the same.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autograd_check.base.clock import Clock
from autograd_check.base.errors import Inconclusive
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import Comparison, ContractCheck
from autograd_check.kernel.compare import (
    HALF_NORM,
    HALF_ROUNDING,
    compare,
    compare_with_truth,
    largest,
    unresolved_elements,
)
from autograd_check.kernel.diagnose import Finding, diagnose, swapped
from autograd_check.kernel.views import grad_fn_chain
from autograd_check.references.arguments import Call, check_output, cotangent
from autograd_check.references.contract import custom_functions, rule, same_values

if TYPE_CHECKING:
    from torch import Tensor

Backward = Callable[["Tensor", "Tensor | None", list["Tensor"]], None]
"""backward(out, grad_output, checked): fills each checked tensor's .grad; grad_output None is
1 (a one-element output)."""


@dataclass
class Gradients:
    """What the forward, backward and manual steps give, one entry per checked tensor."""

    out: Tensor
    """fn's output, detached (for `run`, the scalar loss)."""
    grad_output: Tensor
    chain: list[str]
    """out's grad_fn chain, down to AccumulateGrad (kernel/views.grad_fn_chain)."""
    auto: list[Tensor]
    manual: list[Tensor] | None
    """None when no manual was given."""
    notes: list[str]
    contract: list[ContractCheck] = field(default_factory=list)
    """Isolation's rules (inputs and grad_output left unwritten), for an isolated call."""
    functions: list[type] = field(default_factory=list)
    """The user's autograd.Function classes in fn's graph (isolated calls only)."""


def _backward(out: Tensor, grad_output: Tensor | None, checked: list[Tensor]) -> None:
    out.backward(grad_output, inputs=checked)  # type: ignore[no-untyped-call]


def autograd_then_manual(
    call: Call,
    manual: Callable[..., Any] | None,
    seed: int,
    clock: Clock,
    backward: Backward = _backward,
    after_backward: Callable[[list[Tensor]], None] | None = None,
) -> Gradients:
    """fn's forward, autograd's gradients and (with manual) the hand-derived ones, timed as
    forward, backward and manual; after_backward(auto) runs between backward and manual (`run`'s
    --repeat: its fresh graphs before another full-size tensor is made)."""
    torch = import_torch()
    values = call.values
    notes: list[str] = []
    problems: dict[str, list[str]] = {"input-mutated": [], "grad-output-mutated": []}
    with torch.enable_grad():
        args, state = call.arguments(values)
        out = check_output(call.invoke(args, state))
        problems["input-mutated"] += call.written_inputs("fn", args, state)
        del args, state
        chain = grad_fn_chain(out)
        classes = custom_functions(out) if call.isolate else []
        clock.mark("forward")
        u = cotangent(out, seed)
        if out.requires_grad:
            # A one-element output goes as loss.backward() takes it, without a gradient: an
            # explicit one makes torch import sympy (torch.fx's shape checks), 0.2 s and 30 MiB.
            given = None if out.numel() == 1 else (u.clone() if call.isolate else u)
            backward(out, given, values)
            if given is not None and given is not u and not same_values(given, u):
                problems["grad-output-mutated"].append(
                    "the backward wrote into grad_output (in place): use out-of-place ops")
                del given
        else:
            notes.append("fn's output does not depend on any checked tensor (it has no "
                         "grad_fn): autograd's gradients are zero")
    # A checked tensor fn does not reach keeps .grad None: its gradient is zero.
    auto = [x.grad if x.grad is not None else torch.zeros_like(x) for x in values]
    out = out.detach()
    clock.mark("backward")
    if after_backward is not None:
        after_backward(auto)
    mine = None
    if manual is not None:
        inputs = call.manual_inputs()
        u_given = u.clone() if call.isolate else u
        with torch.no_grad():
            returned = call_manual(manual, inputs, u_given, call.kwargs)
        problems["input-mutated"] += call.written_inputs("manual", inputs)
        if u_given is not u and not same_values(u_given, u):
            problems["grad-output-mutated"].append(
                "manual wrote into grad_output (in place): use out-of-place ops")
        del inputs, u_given
        mine = check_manual(call, returned)
        clock.mark("manual")
    if any(problems.values()):
        call.restore()  # the references then evaluate fn at the caller's values, not the written
    contract = [rule(kind, found) for kind, found in problems.items()] if call.isolate else []
    return Gradients(out, u, chain, auto, mine, notes, contract, classes)


def call_manual(manual: Callable[..., Any], inputs: Sequence[Tensor],
                grad_output: Tensor, options: dict[str, Any] | None = None) -> Any:
    """manual(*inputs, grad_output, **options): grad_output by keyword where manual names a
    parameter so (or takes **kwargs), else as its last positional argument, whatever its name;
    options are fn's non-tensor keyword arguments. TypeError when manual cannot take the inputs
    and grad_output at all (before it runs)."""
    options = options or {}
    try:
        signature = inspect.signature(manual)
    except (TypeError, ValueError):  # a builtin without one: as documented, by keyword
        return manual(*inputs, grad_output=grad_output, **options)
    kinds = {p.name: p.kind for p in signature.parameters.values()}
    by_name = kinds.get("grad_output") in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                           inspect.Parameter.KEYWORD_ONLY)
    by_name = by_name or inspect.Parameter.VAR_KEYWORD in kinds.values()
    args, kwargs = (list(inputs), {"grad_output": grad_output, **options}) if by_name else (
        [*inputs, grad_output], dict(options))
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        extra = f" and {', '.join(options)} by keyword" if options else ""
        raise TypeError(
            f"manual{signature} cannot be called as manual(*inputs, grad_output) with "
            f"{len(inputs)} input(s){extra}: it takes each of fn's inputs, in order, then "
            "grad_output" + (", then fn's keyword arguments" if options else "")
        ) from None
    return manual(*args, **kwargs)


def manual_vs_autograd(
    names: Sequence[str],
    manual: Sequence[Tensor],
    auto: Sequence[Tensor],
    tolerances: Callable[[Any], tuple[float, float]],
    exact: bool,
    resolve: bool = True,
    unresolved: list[str] | None = None,
) -> list[Comparison]:
    """The one comparison of hand-derived gradients with autograd's, per checked tensor, in
    order: check(), `run`'s plain and model checks, and --ranks (distributed/verdict.py).

    tolerances(dtype) gives (rtol, atol) for a tensor's dtype; exact asks for bit-exact equality
    (the tutorial's eq().all()). One Comparison per tensor: shape, bit-exact, mismatched k of N,
    the greatest absolute and relative differences with their index, the tolerances, the verdict
    (kernel/compare.py, without full-size copies when the two are bit-exact). With resolve,
    a pass whose tolerances would also pass a gradient off by half raises Inconclusive, or says
    why in `unresolved` when given (the caller decides: a check that fails elsewhere stands)."""
    comparisons = []
    scale: float | None = None  # the check's greatest gradient element, when a row needs it
    for name, m, a in zip(names, manual, auto, strict=True):
        rtol, atol = tolerances(m.dtype)
        row = compare(name, m, a, rtol, atol, exact)
        # A mismatch is a mismatch, and bit-exact is bit-exact; a pass by tolerance must be one
        # the tolerances could have refused.
        judged = resolve and row.passed and not (exact or row.bit_exact)
        if judged and scale is None:
            scale = largest(list(auto))
        why = unresolved_elements(name, a, rtol, atol, scale) if judged and scale is not None \
            else None
        if why is not None:
            if unresolved is None:
                raise Inconclusive(f"the check cannot tell this gradient from a wrong one: {why}")
            unresolved.append(why)
        comparisons.append(row)
    return comparisons


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
            raise ValueError(f"manual's gradient for {c.name} is {dtype_name(g.dtype)}, but "
                             f"{c.name} is {dtype_name(x.dtype)}: return it in the tensor's own "
                             "dtype")
        if g.device != x.device:
            raise ValueError(f"manual's gradient for {c.name} is on {g.device}, but {c.name} is "
                             f"on {x.device}")
        out.append(g.detach())
    return out


def dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def against_float64(
    rows: list[Comparison], manual: Sequence[Tensor], auto: Sequence[Tensor],
    truth: Sequence[Tensor], tolerances: Callable[[Any], tuple[float, float]],
    trust_auto: bool = True,
) -> tuple[list[Comparison], list[str]]:
    """Half precision (float16, bfloat16): each manual-vs-autograd row judged against truth,
    the float64 gradient at the same inputs (kernel/compare.compare_with_truth), with a note per
    tensor so judged. Rows of other dtypes are returned as they are. trust_auto: autograd is
    torch's own code (not a backward of the user's), so closeness to it counts."""
    out: list[Comparison] = []
    notes: list[str] = []
    for row, m, a, t in zip(rows, manual, auto, truth, strict=True):
        if not is_half(m.dtype):
            out.append(row)
            continue
        rtol, atol = tolerances(m.dtype)
        judged = compare_with_truth(row.name, m, a, t, rtol, atol, trust_auto)
        out.append(judged)
        notes.append(
            f"{row.name} is {dtype_name(m.dtype)}: manual was judged against the gradient in "
            f"float64 at the same inputs, not against autograd's, which rounds differently: "
            f"|manual − float64| ≤ atol + rtol·|float64| + {HALF_ROUNDING:g}·ε·max|float64| "
            f"for each element ({judged.mismatched} not), and ‖manual − float64‖₂ ≤ "
            f"{HALF_NORM:g}·ε·‖float64‖₂ + atol·√n")
    return out, notes


def autograd_against_float64(
    names: Sequence[str], auto: Sequence[Tensor], truth: Sequence[Tensor],
    tolerances: Callable[[Any], tuple[float, float]],
) -> list[Comparison]:
    """Half precision with your own backward: autograd's gradient (your backward, run in the
    half type) against the float64 one, which the references check; named '… vs float64'."""
    rows = []
    for name, a, t in zip(names, auto, truth, strict=True):
        rtol, atol = tolerances(a.dtype)
        rows.append(compare_with_truth(f"{name}: autograd vs float64", a, t.to(a.dtype), t,
                                       rtol, atol, trust_auto=False))
    return rows


def is_half(dtype: Any) -> bool:
    """float16 or bfloat16: the types whose gradients are judged against float64."""
    return str(dtype) in ("torch.float16", "torch.bfloat16")


def backward_grad(loss: Tensor, leaf: Tensor) -> Tensor:
    """d loss / d leaf by autograd (zero when loss does not depend on it)."""
    torch = import_torch()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(loss.sum(), [leaf], allow_unused=True,
                                      materialize_grads=True)
    detached: Tensor = grad.detach()
    return detached


def diagnose_rows(
    rows: Sequence[Comparison], manual: Sequence[Tensor], auto: Sequence[Tensor],
    tolerances: Callable[[Any], tuple[float, float]], exact: bool,
    sizes: dict[str, list[int]], conditions: dict[str, Tensor], output: Tensor | None = None,
) -> list[dict[str, Any]]:
    """Why each failed manual-vs-autograd row is wrong (kernel/diagnose.py), as plain data: a
    gradient given for the wrong tensor first, then each row's own explanation. conditions are
    tensors (inputs, d = predicted − real) whose values may split the wrong elements off;
    output is fn's (a softmax-like backward's difference is the output times a term)."""
    failed = [i for i, row in enumerate(rows) if not row.passed]
    if not failed:
        return []
    names = [row.name for row in rows]
    rtol, atol = tolerances(manual[0].dtype)
    swaps = swapped(names, manual, auto, rtol, atol)
    found = []
    for i in failed:
        rtol, atol = tolerances(manual[i].dtype)
        finding = swaps.get(i) or diagnose(
            names[i], manual[i], auto[i], rtol, atol, exact=exact, sizes=sizes,
            conditions={k: v for k, v in conditions.items() if v.shape == manual[i].shape},
            output=output)
        found.append(finding.to_dict())
    return found


def contract_findings(contract: Sequence[ContractCheck], names: Sequence[str]) -> list[
        dict[str, Any]]:
    """A broken rule that is itself the bug's explanation, as a finding of the same kind."""
    kinds = ("grad-output-mutated", "grad-output-ignored", "input-mutated")
    return [Finding(", ".join(names), c.kind, c.text).to_dict() for c in contract
            if not c.passed and c.kind in kinds]
