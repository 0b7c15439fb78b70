"""The check itself, pure torch: tensors → loss → autograd gradient → manual gradient → comparison.

It never prints, never exits and never reads flags: it takes a CheckSpec and a device and returns a
CheckResult (environment left for the caller to fill).

It is a user of the Python API's own path (references/gradients.py), as check() is: the loss as a
function of predicted, with real held fixed, is the Call; its forward, loss.backward() and
predicted.grad, the manual gradient and the comparison are the API's steps. What `run` adds
around them is its output format, which does not change: the tutorial's draw of real and
predicted from the seed, --repeat between backward and manual, --reference finite-diff, the
tensor summaries (real, predicted, manual_grad, autograd_grad, difference), the notes, and the
timing phases (draw, forward, backward, [repeat], manual, [finite_diff], compare).

For peak memory at 4096x4096 and beyond (benchmarks/bench_run.py: peak RSS at most the bare
tutorial snippet's), backward() frees the graph before the manual gradient is made, and real and
predicted are summarised and dropped before the comparison's temporaries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING, Any

from autograd_check.base.clock import Clock
from autograd_check.base.result import TENSOR_DATA_LIMIT, CheckResult, Comparison, TensorView
from autograd_check.base.spec import CheckSpec, nondet_tol
from autograd_check.checks.determinism import plain_rerun, repeat_gradients, repeat_passed
from autograd_check.checks.draw import draw, draw_notes, overflow_notes
from autograd_check.kernel.compare import difference, to64
from autograd_check.kernel.views import tensor_view
from autograd_check.losses.base import Loss
from autograd_check.losses.user import backward
from autograd_check.references import gradients as one_path
from autograd_check.references.arguments import Call, parse_arguments, prepare
from autograd_check.references.contract import backward_contract, merge, rule
from autograd_check.references.finite_diff import Progress, plain_finite_diff
from autograd_check.references.gradients import (
    against_float64,
    backward_grad,
    contract_findings,
    diagnose_rows,
    is_half,
    manual_vs_autograd,
)
from autograd_check.references.independent import Outcome, projection

if TYPE_CHECKING:
    import torch
    from torch import Tensor


def run_plain(
    spec: CheckSpec, device: torch.device, loss_def: Loss, progress: Progress | None = None
) -> CheckResult:
    rtol, atol = spec.tolerances()
    clock = Clock(device)

    real, predicted = draw(spec, device, loss_def)
    clock.mark("draw")
    # A built-in loss is the tool's own code on the tool's own tensors: no copies (peak memory)
    call = prepare(partial(_loss, loss_def, real), [predicted], ["predicted"],
                   isolate=loss_def.user_code)
    again = plain_rerun(loss_def, predicted, real) if spec.repeat > 1 else None
    repeats: list[dict[str, Any]] = []
    got = one_path.autograd_then_manual(
        call, partial(_manual, loss_def, real), spec.seed, clock,
        backward=partial(backward, loss_def),
        after_backward=partial(_repeat, spec, again, clock, repeats))
    assert got.manual is not None  # manual was given
    (auto,), (manual,) = got.auto, got.manual
    loss_value = float(got.out)
    repeat = repeats[0] if repeats else None
    contract, own = list(got.contract), None
    if got.functions:  # the target's loss runs its own autograd.Function: its rules, and a
        # reference independent of its backward (manual against autograd alone is not one)
        contract = [*backward_contract(
            got.functions, partial(_fresh_forward, call), ["predicted"], got.grad_output,
            lambda _: (rtol, atol), nondet_tol(spec), False), *contract]
        if spec.reference == "manual":
            own = _projection(spec, loss_def, real, call, got.grad_output, auto, manual,
                              loss_value, got.functions)
        contract.append(rule("input-mutated", call.writes("loss")))
        clock.mark("contract")
    contract = merge(contract)
    finite_diff = None
    if spec.reference == "finite-diff":
        finite_diff = plain_finite_diff(
            spec, loss_def, predicted, real, {"autograd": auto, "manual": manual}, progress
        )
        clock.mark("finite_diff")

    tensors = {"real": tensor_view("real", real), "predicted": tensor_view("predicted", predicted)}
    # half precision: kept for the float64 gradient that manual is judged against
    kept = (predicted, real) if is_half(predicted.dtype) and not spec.exact and (
        spec.rtol is None and spec.atol is None) else None  # tolerances given: the criterion
    # what a diagnosis may name (the wrong elements exactly where d = predicted − real < t):
    # kept where that costs little beside the check's own tensors
    clues = {"predicted": predicted, "real": real} if predicted.numel() <= CLUE_ELEMENTS else {}
    del real, predicted, call, again  # summarised; free them before the comparison's temporaries
    (comparison,) = manual_vs_autograd(["predicted"], [manual], [auto], lambda _: (rtol, atol),
                                       spec.exact)
    half_notes: list[str] = []
    if kept is not None:
        truth = _gradient64(loss_def, *kept)
        (comparison,), half_notes = against_float64(
            [comparison], [manual], [auto], [truth], lambda _: (rtol, atol),
            trust_auto=not got.functions)
    del kept
    diagnosis = [*contract_findings(contract, ["predicted"]), *_diagnose(
        spec, comparison, manual, auto, clues, rtol, atol)]
    del clues
    tensors["manual_grad"] = tensor_view("manual_grad", manual)
    tensors["autograd_grad"] = (
        TensorView(**{**vars(tensors["manual_grad"]), "name": "autograd_grad"})
        if comparison.bit_exact
        else tensor_view("autograd_grad", auto)
    )
    if not comparison.bit_exact and manual.numel() <= TENSOR_DATA_LIMIT:
        tensors["difference"] = tensor_view("difference", difference(manual, auto))
    clock.mark("compare")
    comparisons = [comparison, *(finite_diff.comparisons if finite_diff else []),
                   *(own.comparisons if own else [])]

    return CheckResult(
        spec=spec.to_dict(),
        passed=all(c.passed for c in comparisons) and repeat_passed(repeat) and all(
            c.passed for c in contract),
        bit_exact=comparison.bit_exact,
        criterion="exact" if spec.exact else "tolerance",
        loss_name=loss_def.name,
        loss_value=loss_value,
        loss_formula=loss_def.formula,
        gradient_formula=loss_def.gradient_formula,
        grad_fn_chain=got.chain,
        comparisons=comparisons,
        tensors=tensors,
        environment={},
        timings=clock.total(),
        notes=[*overflow_notes(loss_value, spec.dtype), *draw_notes(loss_def),
               *(finite_diff.notes if finite_diff else []), *half_notes,
               *(own.notes if own else [])],
        finite_diff=finite_diff.block if finite_diff else None,
        repeat=repeat,
        reference=own.block if own else None,
        contract=contract,
        diagnosis=diagnosis,
    )


CLUE_ELEMENTS = 1 << 20
"""predicted and real are kept for a diagnosis up to this many elements (8 MiB in float64)."""


def _diagnose(spec: CheckSpec, comparison: Comparison, manual: Tensor, auto: Tensor,
              clues: dict[str, Tensor], rtol: float, atol: float) -> list[dict[str, Any]]:
    """Why manual differs from autograd, when it does (kernel/diagnose.py)."""
    if comparison.passed:
        return []
    conditions = dict(clues)
    if "real" in clues and clues["real"].shape == clues["predicted"].shape and \
            clues["real"].is_floating_point():
        conditions = {"d = predicted − real": clues["predicted"] - clues["real"], **conditions}
    return diagnose_rows([comparison], [manual], [auto], lambda _: (rtol, atol), spec.exact,
                         {"predicted": list(manual.shape)}, conditions)


def _fresh_forward(call: Call, other: bool = False) -> tuple[Tensor, list[Tensor]]:
    """The loss at new leaves (or at other values: Call.fresh_leaves), with its graph."""
    leaves = call.fresh_leaves(other)
    return call.evaluate(leaves), leaves


def _evaluate(loss_def: Loss, real: Tensor, predicted: Tensor) -> Tensor:
    return (loss_def.evaluate or loss_def.forward)(predicted, real)


def _projection(spec: CheckSpec, loss_def: Loss, real: Tensor, call: Call, u: Tensor,
                auto: Tensor, manual: Tensor, loss_value: float,
                functions: list[type]) -> Outcome:
    """projection beside manual against autograd, for a loss whose backward is the target's
    own: its rows, its block (with why), and its notes."""
    args = parse_arguments(None, "projection", spec.rtol, spec.atol, False, 1, spec.seed, {})
    # evaluated without the target's forward checks (a grad_fn): projection runs under no_grad
    evaluate = replace(call, fn=partial(_evaluate, loss_def, real), _cast={})
    outcome = projection(evaluate, args, u, [{"autograd": auto, "manual": manual}],
                         abs(loss_value))
    own = ", ".join(f"{f.__qualname__}.backward" for f in functions)
    outcome.block = {"name": "manual", "references": ["manual", "projection"],
                     "why": f"autograd runs the target's own backward ({own}), so manual against "
                            "autograd alone would compare the target's code with itself: "
                            "projection checks both", **outcome.block}
    return outcome


def _gradient64(loss_def: Loss, predicted: Tensor, real: Tensor) -> Tensor:
    """The loss's gradient by autograd in float64, at the same (half-precision) values."""
    p64 = to64(predicted).requires_grad_()
    grad: Tensor = backward_grad(loss_def.forward(p64, to64(real)), p64)
    return grad


def _loss(loss_def: Loss, real: Tensor, predicted: Tensor) -> Tensor:
    return loss_def.forward(predicted, real)


def _manual(loss_def: Loss, real: Tensor, predicted: Tensor, grad_output: Tensor) -> Tensor:
    """The loss is a scalar, so grad_output is 1 and ∂loss/∂predicted is manual_grad itself."""
    return loss_def.manual_grad(predicted, real)


def _repeat(spec: CheckSpec, again: Callable[[], dict[str, Tensor]] | None, clock: Clock,
            repeats: list[dict[str, Any]], auto: list[Tensor]) -> None:
    """--repeat N: N - 1 more autograd gradients, each on a fresh graph (before the manual
    gradient, so that no more full-size tensors are alive than for the first)."""
    if again is not None:
        repeats.append(repeat_gradients({"predicted": auto[0]}, again, spec.repeat,
                                        in_verdict=spec.deterministic))
        clock.mark("repeat")
