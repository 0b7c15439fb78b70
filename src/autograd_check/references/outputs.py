"""An fn with several outputs (a tuple or list of tensors), checked output by output, then all of
them together.

Output k is checked as fn(*inputs)[k] alone, with every check of a one-output fn: manual is
given grad_output as a tuple with one entry per output, the cotangent at k and zeros elsewhere
(as torch materialises the gradient of an unused output); the backward is left to autograd, so
a Function that calls ctx.set_materialize_grads(False) receives None for the other outputs,
which the contract checks (references/contract.py: undefined-grad-output). Outputs that are not
floating point (the indices of a max) have no gradient and are not checked. The results are
one CheckResult: each row's name starts with its output ("output 1: x: autograd vs projection").

With two or more floating-point outputs, one more check takes them together (Call.output =
JOINED: fn's outputs flattened and joined): the backward then gets a gradient for every output at
once, the case of a model that uses all of them, which a backward can get wrong on its own (a
branch for "both given"). manual gets grad_output as the tuple of the cotangent's slices. Its
rows start with "all outputs".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import CheckResult
from autograd_check.references.arguments import JOINED, Arguments, Call
from autograd_check.references.contract import merge
from autograd_check.references.gradients import call_manual

if TYPE_CHECKING:
    from torch import Tensor

Check = Callable[[Call, "Callable[..., Any] | None", Arguments], CheckResult]


def _manual_for(manual: Callable[..., Any], k: int, likes: list[Tensor]) -> Callable[..., Any]:
    torch = import_torch()

    def part(*inputs: Any, grad_output: Tensor, **kwargs: Any) -> Any:
        full = tuple(grad_output if j == k else torch.zeros_like(o) for j, o in enumerate(likes))
        return call_manual(manual, inputs, full, kwargs)  # type: ignore[arg-type]

    return part


def by_output(call: Call, manual: Callable[..., Any] | None, args: Arguments, count: int,
              check: Check) -> CheckResult:
    """check(call for output k) for each floating-point output k, as one result."""
    torch = import_torch()
    with torch.no_grad():
        likes = [o.detach() for o in call.evaluate(call.values)]
    results: list[tuple[int, CheckResult]] = []
    for k, like in enumerate(likes):
        if not like.is_floating_point():
            continue
        part = call.fresh(output=k)  # new leaves: no .grad of another output's backward
        results.append((k, check(part, None if manual is None else _manual_for(manual, k, likes),
                                 args)))
    if not results:
        raise ValueError(f"none of fn's {count} outputs is floating point: gradients need one")
    if len(results) > 1:
        floating = [k for k, _ in results]
        results.append((JOINED, check(call.fresh(output=JOINED), None if manual is None else
                                      _manual_joined(manual, floating, likes), args)))
    return _combine(results, count)


def _manual_joined(manual: Callable[..., Any], floating: list[int],
                   likes: list[Tensor]) -> Callable[..., Any]:
    """manual for the joined outputs: grad_output split back into one tensor per output (zeros
    for an output that is not floating point)."""
    torch = import_torch()
    sizes = [likes[k].numel() for k in floating]

    def joined(*inputs: Any, grad_output: Tensor, **kwargs: Any) -> Any:
        parts = dict(zip(floating, torch.split(grad_output, sizes), strict=True))
        full = tuple(parts[j].reshape(o.shape).to(o.dtype) if j in parts else torch.zeros_like(o)
                     for j, o in enumerate(likes))
        return call_manual(manual, inputs, full, kwargs)  # type: ignore[arg-type]

    return joined


def _label(k: int) -> str:
    return "all outputs" if k == JOINED else f"output {k}"


def _combine(results: list[tuple[int, CheckResult]], count: int) -> CheckResult:
    first = results[0][1]
    comparisons, contract, notes, diagnosis = [], [], [], []
    tensors = {k: v for k, v in first.tensors.items() if k != "output"}
    timings: dict[str, float] = {}
    for k, r in results:
        comparisons += [replace(c, name=f"{_label(k)}: {c.name}") for c in r.comparisons]
        contract += r.contract
        notes += r.notes
        diagnosis += [{**d, "tensor": f"{_label(k)}: {d['tensor']}"} for d in r.diagnosis]
        if "output" in r.tensors and k != JOINED:
            tensors[f"output {k}"] = replace(r.tensors["output"], name=f"output {k}")
        for phase, seconds in r.timings.items():
            timings[phase] = timings.get(phase, 0.0) + seconds
    merged = merge(contract)
    return replace(
        first,
        spec={**first.spec, "outputs": count},
        passed=all(r.passed for _, r in results),
        bit_exact=all(r.bit_exact for _, r in results),
        loss_value=sum(r.loss_value for k, r in results if k != JOINED),
        loss_formula="Σₖ ⟨grad_outputₖ, fn(*inputs)[k]⟩, each output checked alone"
                     + (", then all together" if results[-1][0] == JOINED else ""),
        comparisons=comparisons,
        contract=merged,
        diagnosis=diagnosis,
        tensors=tensors,
        timings=timings,
        notes=list(dict.fromkeys(notes)),
    )
