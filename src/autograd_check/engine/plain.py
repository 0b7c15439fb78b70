"""The check itself, pure torch: tensors → loss → autograd gradient → manual gradient → comparison.

It never prints, never exits and never reads flags: it takes a CheckSpec and a device and returns a
CheckResult (environment left for the caller to fill).

It is a user of the Python API's own path (api/gradients.py), as check() is: the loss as a
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
from functools import partial
from typing import TYPE_CHECKING, Any

from autograd_check.api import gradients as one_path
from autograd_check.api.call import prepare
from autograd_check.api.gradients import manual_vs_autograd
from autograd_check.engine.compare import difference
from autograd_check.engine.determinism import plain_rerun, repeat_gradients, repeat_passed
from autograd_check.engine.finite_diff import Progress, plain_finite_diff
from autograd_check.engine.result import TENSOR_DATA_LIMIT, CheckResult, TensorView
from autograd_check.engine.spec import CheckSpec
from autograd_check.engine.tensors import Clock, draw, draw_notes, overflow_notes, tensor_view
from autograd_check.losses.base import Loss
from autograd_check.losses.user import backward

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
    finite_diff = None
    if spec.reference == "finite-diff":
        finite_diff = plain_finite_diff(
            spec, loss_def, predicted, real, {"autograd": auto, "manual": manual}, progress
        )
        clock.mark("finite_diff")

    tensors = {"real": tensor_view("real", real), "predicted": tensor_view("predicted", predicted)}
    del real, predicted, call, again  # summarised; free them before the comparison's temporaries
    (comparison,) = manual_vs_autograd(["predicted"], [manual], [auto], lambda _: (rtol, atol),
                                       spec.exact)
    tensors["manual_grad"] = tensor_view("manual_grad", manual)
    tensors["autograd_grad"] = (
        TensorView(**{**vars(tensors["manual_grad"]), "name": "autograd_grad"})
        if comparison.bit_exact
        else tensor_view("autograd_grad", auto)
    )
    if not comparison.bit_exact and manual.numel() <= TENSOR_DATA_LIMIT:
        tensors["difference"] = tensor_view("difference", difference(manual, auto))
    clock.mark("compare")
    comparisons = [comparison, *(finite_diff.comparisons if finite_diff else [])]

    return CheckResult(
        spec=spec.to_dict(),
        passed=all(c.passed for c in comparisons) and repeat_passed(repeat),
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
               *(finite_diff.notes if finite_diff else [])],
        finite_diff=finite_diff.block if finite_diff else None,
        repeat=repeat,
    )


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
