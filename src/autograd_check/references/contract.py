"""The contract of a hand-written backward: the rules it must keep whatever its numbers, as
torch.autograd.gradcheck checks most of them, each a named row of the result (ContractCheck).

Two kinds of rule:

- isolation (every check through the API): fn and manual leave their inputs unwritten, the
  backward and manual leave grad_output unwritten. Each call is given its own copies, so the
  caller's tensors are never written whatever the code does; the copies are compared with a
  private one afterwards, so a write is seen even when it bypasses the version counter (.data).
- the backward's own (only when the graph holds a user's autograd.Function, found by walking
  out.grad_fn): linear in grad_output (a doubled and a zero cotangent, for a scalar output too),
  each gradient returned with its input's shape, dtype and device (autograd would silently sum a
  broadcastable shape down and cast the dtype), grad_output left unwritten, the same answer
  twice (nondet_tol), a non-contiguous grad_output taken, and, for a Function with several
  outputs, an undefined (None) gradient for the ones not checked.

The Functions are watched by wrapping their forward (or setup_context) and backward on the class
for the length of one block and putting them back after: this works on every torch, and also
when fn calls a bound `MyFunction.apply` saved before the check.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import ContractCheck
from autograd_check.kernel.compare import compare

if TYPE_CHECKING:
    from torch import Tensor

KINDS = {
    "input-mutated": "inputs left unwritten",
    "grad-output-mutated": "grad_output left unwritten",
    "grad-output-ignored": "linear in grad_output",
    "gradient-shape": "gradient shapes",
    "gradient-dtype": "gradient dtypes and devices",
    "undefined-grad-output": "undefined grad_output",
    "nondeterministic": "same gradient twice",
    "non-contiguous-grad-output": "non-contiguous grad_output",
    "state-outside-ctx": "another forward in between",
}
"""Each rule's kind and the short name it is shown under."""

MARK = "_autograd_check_inputs"
"""The attribute a watched forward leaves on its ctx: its inputs' (shape, dtype, device)."""


def rule(kind: str, problems: Sequence[str], kept: str = "") -> ContractCheck:
    """A ContractCheck: failed with the first problem (and how many more), else kept."""
    problems = list(dict.fromkeys(problems))  # the same finding from several backward calls
    if not problems:
        return ContractCheck(kind, KINDS[kind], True, kept)
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return ContractCheck(kind, KINDS[kind], False, problems[0] + more)


def same_values(a: Tensor, b: Tensor) -> bool:
    """Bitwise the same values (NaN where the other has NaN): what a write would change."""
    torch = import_torch()
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if torch.equal(a, b):
        return True
    if not a.is_floating_point():
        return False
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def written(who: str, names: Sequence[str], given: Sequence[Tensor],
            kept: Sequence[Tensor]) -> list[str]:
    """A sentence per tensor that `who` was given and wrote into (compared with a kept copy)."""
    return [f"{who} wrote into {name} (its values changed during the call): it must leave its "
            "inputs as it found them; copy first (x = x.clone()) or use out-of-place ops"
            for name, g, k in zip(names, given, kept, strict=True) if not same_values(g, k)]


def merge(checks: Sequence[ContractCheck]) -> list[ContractCheck]:
    """One row per kind, in first-seen order: kept when every row of it was."""
    rows: dict[str, ContractCheck] = {}
    for c in checks:
        was = rows.get(c.kind)
        if was is None or (was.passed and not c.passed):
            rows[c.kind] = c
    return list(rows.values())


# --- finding the user's Functions in a graph ---------------------------------------------------


def custom_functions(out: Tensor) -> list[type]:
    """The autograd.Function classes whose backward nodes out's graph holds, in the order met.

    The nodes are kept alive for the walk: a node's Python object can be made anew on each
    access of next_functions, and an id() of a freed one can be reused by the next."""
    torch = import_torch()
    backward_node = torch.autograd.function.BackwardCFunction
    alive: list[Any] = []
    seen: set[int] = set()
    found: list[type] = []
    stack = [out.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        alive.append(node)
        seen.add(id(node))
        if isinstance(node, backward_node):
            cls = getattr(type(node), "_forward_cls", None)
            if cls is not None and cls not in found:
                found.append(cls)
        stack.extend(f for f, _ in node.next_functions)
    return found


# --- watching them -------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the watched backwards did."""

    shape: list[str] = field(default_factory=list)
    dtype: list[str] = field(default_factory=list)
    device: list[str] = field(default_factory=list)
    mutated: list[str] = field(default_factory=list)
    undefined: list[str] = field(default_factory=list)
    """Functions that were given an undefined (None) grad_output, by name."""
    probe: bool = False
    """While set, each backward is also called again, and with a non-contiguous grad_output:
    the user's own backward alone, so torch's ops around it (which may round differently for
    another layout, or be non-deterministic on a GPU) are not blamed."""
    tolerances: Callable[[Any], tuple[float, float]] | None = None
    nondet_tol: float = 0.0
    differ: list[str] = field(default_factory=list)
    spread: float = 0.0
    again_raised: list[str] = field(default_factory=list)
    strided: list[str] = field(default_factory=list)


def _meta(x: object) -> tuple[Any, ...] | None:
    torch = import_torch()
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), x.dtype, x.device)
    return None


def _watch_forward(original: Callable[..., Any], setup_context: bool) -> Callable[..., Any]:
    @functools.wraps(original)  # its signature too: apply binds keyword arguments by it
    def forward(ctx: Any, *args: Any, **kwargs: Any) -> Any:
        inputs = args[0] if setup_context else args
        setattr(ctx, MARK, [_meta(x) for x in inputs])
        return original(ctx, *args, **kwargs)
    return forward


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _watch_backward(cls: type, original: Callable[..., Any], seen: Seen) -> Callable[..., Any]:
    torch = import_torch()
    name = f"{cls.__qualname__}.backward"

    @functools.wraps(original)
    def backward(ctx: Any, *grads: Any) -> Any:
        kept = [g.clone() if isinstance(g, torch.Tensor) else None for g in grads]
        if any(g is None for g in grads) and name not in seen.undefined:
            seen.undefined.append(name)
        result = original(ctx, *grads)
        if seen.probe:
            _probe(name, original, ctx, kept, result, seen)
        for i, (g, k) in enumerate(zip(grads, kept, strict=True)):
            if k is not None and not same_values(g, k):
                seen.mutated.append(
                    f"{name} wrote into its grad_output{f'[{i}]' if len(grads) > 1 else ''} "
                    "(in place): the caller's gradient buffer is not the backward's to change; "
                    "use out-of-place ops (grad_output * 2, not grad_output.mul_(2))")
        outs = result if isinstance(result, tuple) else (result,)
        metas = getattr(ctx, MARK, None) or []
        for i, (r, m) in enumerate(zip(outs, metas, strict=False)):
            if m is None or not isinstance(r, torch.Tensor):
                continue
            shape, dtype, device = m
            if tuple(r.shape) != shape:
                seen.shape.append(
                    f"{name} returned a gradient of shape {_shape_text(r.shape)} for input "
                    f"{i}, which has shape {_shape_text(shape)}: autograd sums such a gradient "
                    "down to the input's shape without a word")
            if r.dtype != dtype:
                seen.dtype.append(
                    f"{name} returned a {str(r.dtype).removeprefix('torch.')} gradient for "
                    f"input {i}, which is {str(dtype).removeprefix('torch.')}: autograd casts "
                    "it without a word")
            if r.device != device:
                seen.device.append(f"{name} returned a gradient on {r.device} for input {i}, "
                                   f"which is on {device}")
        return result
    return backward


def _outputs(result: Any) -> list[Any]:
    return list(result) if isinstance(result, tuple) else [result]


def _probe(name: str, original: Callable[..., Any], ctx: Any, kept: list[Any], result: Any,
           seen: Seen) -> None:
    """The user's backward called again on the same grad_output, and on a non-contiguous copy
    of it: the same answer (bit for bit, or within nondet_tol), and the same within the
    dtype's tolerances."""
    torch = import_torch()
    first = _outputs(result)
    try:
        again = _outputs(original(ctx, *[k.clone() if k is not None else None for k in kept]))
    except Exception as e:
        seen.again_raised.append(
            f"{name} raised when called a second time on the same graph ({_error(e)}): it "
            "writes into, or frees, what it saved; a backward must be callable again "
            "(retain_graph=True, double backward, gradient checkpointing)")
        return
    for i, (a, b) in enumerate(zip(first, again, strict=False)):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or same_values(
                a, b):
            continue
        gap = float((a.to(torch.float64) - b.to(torch.float64)).abs().max())
        seen.spread = max(seen.spread, gap)
        if not gap <= seen.nondet_tol:  # NaN is never within
            seen.differ.append(
                f"{name} gave gradient {i} differently when called twice on the same "
                f"grad_output (by up to {gap:.3g}, nondet_tol={seen.nondet_tol:g}): it is not "
                "deterministic (raise nondet_tol to allow a known spread)")
    if not any(k is not None and k.dim() > 0 for k in kept):
        return
    strided = [non_contiguous(k) if k is not None and k.dim() > 0 else k for k in kept]
    try:
        other = _outputs(original(ctx, *strided))
    except Exception as e:
        seen.strided.append(
            f"{name} raised for a non-contiguous grad_output (as a transpose or an expand "
            f"downstream gives it): {_error(e)}; use .reshape, not .view, or .contiguous() first")
        return
    for i, (a, b) in enumerate(zip(first, other, strict=False)):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            continue
        rtol, atol = seen.tolerances(a.dtype) if seen.tolerances else (0.0, 0.0)
        if a.shape != b.shape or not bool(torch.isclose(b, a, rtol=rtol, atol=atol).all()):
            seen.strided.append(f"{name} gave gradient {i} differently for a non-contiguous "
                                "grad_output than for a contiguous one with the same values")


@contextmanager
def watching(classes: Sequence[type]) -> Iterator[Seen]:
    """Each class's forward (or setup_context) and backward (or vjp) wrapped for the block."""
    torch = import_torch()
    base = torch.autograd.Function
    seen = Seen()
    undo: list[tuple[type, str, Any]] = []
    try:
        for cls in classes:
            separate = "setup_context" in vars(cls) or any(
                "setup_context" in vars(k) for k in cls.__mro__[1:] if k is not base
                and issubclass(k, base))
            front = "setup_context" if separate else "forward"
            back = "vjp" if getattr(cls, "vjp", None) is not getattr(base, "vjp", None) and (
                getattr(cls, "backward", None) is getattr(base, "backward", None)) else "backward"
            for attr, wrap in ((front, _watch_forward(getattr(cls, front), separate)),
                               (back, _watch_backward(cls, getattr(cls, back), seen))):
                undo.append((cls, attr, vars(cls).get(attr, _MISSING)))
                setattr(cls, attr, staticmethod(wrap))
        yield seen
    finally:
        for cls, attr, old in reversed(undo):
            if old is _MISSING:
                delattr(cls, attr)
            else:
                setattr(cls, attr, old)


_MISSING = object()


# --- the checks ------------------------------------------------------------------------------


def non_contiguous(u: Tensor) -> Tensor:
    """u's values in a layout no .view can flatten: its dimensions in reverse order in memory
    (a transpose's layout), or every other element of a buffer twice as long for one dim."""
    torch = import_torch()
    if u.dim() == 1:
        spread = torch.empty(2 * u.shape[0], dtype=u.dtype, device=u.device)[::2]
    else:
        dims = list(range(u.dim()))[::-1]
        spread = torch.empty(tuple(u.shape[d] for d in dims), dtype=u.dtype,
                             device=u.device).permute(dims)
    copied: Tensor = spread.copy_(u)
    return copied


def _error(e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [""])[0]
    return f"{type(e).__name__}: {first}"


@dataclass
class Backwards:
    """The backward of one fresh graph, called with the cotangents the rules need."""

    out: Tensor
    leaves: list[Tensor]
    names: list[str]

    def vjp(self, u: Tensor) -> list[Tensor]:
        torch = import_torch()
        grads = torch.autograd.grad(self.out, self.leaves, u, retain_graph=True,
                                    allow_unused=True, materialize_grads=True)
        return [g.detach() for g in grads]


def backward_contract(
    classes: Sequence[type],
    forward: Callable[[bool], tuple[Tensor, list[Tensor]]],
    names: Sequence[str],
    u: Tensor,
    tolerances: Callable[[Any], tuple[float, float]],
    nondet_tol: float,
    several_outputs: bool,
) -> list[ContractCheck]:
    """The backward's rules, on a fresh forward (forward(False) gives out and its leaves;
    forward(True) the same at other values of the inputs) with the user's Functions watched; u
    is the check's cotangent (never handed out itself).

    Linearity is checked through the whole graph (a scaled cotangent scales every gradient
    exactly: −2 is a power of two, and its sign catches a backward that uses |grad_output|);
    the rest on the user's backward alone, as it is called (_probe)."""
    names = list(names)
    checks: list[ContractCheck] = []
    with watching(classes) as seen:
        seen.tolerances, seen.nondet_tol = tolerances, nondet_tol
        out, leaves = forward(False)
        run = Backwards(out, leaves, names)
        seen.probe = True
        try:
            g1 = run.vjp(u.clone())
        except Exception as e:  # the backward itself raised: that is the user's error to see
            if seen.undefined and several_outputs:
                return [rule("undefined-grad-output", [
                    f"{seen.undefined[0]} raised when the gradient of an output that is not "
                    f"used was undefined (None, as with ctx.set_materialize_grads(False)): "
                    f"{_error(e)}; treat a None grad_output as zero"])]
            raise
        finally:
            seen.probe = False
        if not seen.again_raised:  # a backward that cannot run twice says so below instead
            checks.append(rule("grad-output-ignored", _linearity(run, names, u, g1, tolerances),
                               "the gradient of a grad_output scaled by −2, or zero, is scaled "
                               "by −2, or zero"))
        if not seen.again_raised:
            checks.append(rule("state-outside-ctx", _interleaved(run, forward, names, u, g1,
                                                                 tolerances),
                               "the same gradient with another forward of fn run in between"))
        kept = "bit for bit the same" if seen.spread == 0.0 else (
            f"within nondet_tol={nondet_tol:g} (spread {seen.spread:.3g})"
            if math.isfinite(nondet_tol) else f"not bit for bit (spread {seen.spread:.3g}): "
            "information, as --deterministic was not asked")
        checks.append(rule("nondeterministic", seen.again_raised + seen.differ, kept))
        if u.dim() > 0:
            checks.append(rule("non-contiguous-grad-output", seen.strided,
                               "the same gradient for a non-contiguous grad_output"))
        checks.append(rule("gradient-shape", seen.shape, "each gradient shaped as its input"))
        checks.append(rule("gradient-dtype", seen.dtype + seen.device,
                           "each gradient in its input's dtype, on its device"))
        checks.append(rule("grad-output-mutated", seen.mutated,
                           "the backward left grad_output unwritten"))
        if several_outputs:
            checks.append(rule("undefined-grad-output", [],
                               "took an undefined gradient for the outputs not checked"))
    return checks


def _interleaved(run: Backwards, forward: Callable[[bool], tuple[Tensor, list[Tensor]]],
                 names: list[str], u: Tensor, g1: list[Tensor],
                 tolerances: Callable[[Any], tuple[float, float]]) -> list[str]:
    """A second forward at other inputs, its graph alive, then the first graph's backward again:
    a backward that reads what forward kept on the class, a closure or a global (not on ctx) gets
    the second forward's values, as when a model uses the op twice or accumulates micro-batches
    before its backward (gradcheck never runs two forwards first)."""
    try:
        other = forward(True)
        again = run.vjp(u.clone())
    except Exception as e:
        return [f"the backward raised once another forward of fn had run before it: {_error(e)}"]
    del other
    problems = []
    for name, a, b in zip(names, g1, again, strict=True):
        rtol, atol = tolerances(a.dtype)
        if not compare(name, b, a, rtol, atol, False).passed:
            problems.append(
                f"{name}'s gradient changed when another forward of fn (at other inputs) ran "
                "before this graph's backward: the backward reads what forward kept outside ctx "
                "(on the class, in a closure or a global); keep it with ctx.save_for_backward or "
                "on ctx")
    return problems


def _linearity(run: Backwards, names: list[str], u: Tensor, g1: list[Tensor],
               tolerances: Callable[[Any], tuple[float, float]]) -> list[str]:
    torch = import_torch()
    scale = -2.0
    try:
        g2 = run.vjp(u * scale)
        g0 = run.vjp(torch.zeros_like(u))
    except Exception as e:
        return [f"the backward raised for a grad_output scaled by {scale:g} or zero: "
                f"{_error(e)}"]
    problems = []
    for name, a, b, z in zip(names, g1, g2, g0, strict=True):
        rtol, atol = tolerances(a.dtype)
        scaled = compare(name, b, a * scale, rtol, atol, False)
        if not scaled.passed:
            problems.append(
                f"with grad_output scaled by {scale:g}, {name}'s gradient is not "
                f"({scaled.mismatched} of {scaled.numel} elements differ): the backward "
                "ignores grad_output, adds to it or takes its absolute value (gradcheck: "
                "backward not multiplied by grad_output); a loss scaled by 2, or by AMP, "
                "gets the wrong gradient")
        elif not compare(name, z, torch.zeros_like(z), 0.0, atol + rtol * float(
                a.abs().max()), False).passed:
            problems.append(f"with grad_output zero, {name}'s gradient is not zero: the "
                            "backward adds a term that does not depend on grad_output")
    return problems
