"""The check itself, pure torch: tensors → loss → autograd gradient → manual gradient → comparison.

It never prints, never exits and never reads flags: it takes a CheckSpec and a device and returns a
CheckResult (environment left for the caller to fill).

One path with the Python API (api/check.py). What is shared: the comparison of the manual
gradient with autograd's, per checked tensor (api.check.manual_vs_autograd: the verdict, the
bit-exact test, mismatched k of N, the greatest differences and their index), which check(),
this plain check and the model check (engine/model.py) all call; and the central differences of
--reference finite-diff (engine/finite_diff.central_differences, which the API's finite-diff and
order=2 call too). What stays separate, and why:

- Drawing and the forward. `run` draws real and predicted exactly as the tutorial does from the
  seed and calls the loss as loss(predicted, real), so that its tensors, loss value and grad_fn
  chain are the tutorial's; check() takes the caller's tensors and calls fn(*inputs) on detached
  views, through a Call (names, module parameters, caller state) that `run` has no use for.
- The order of the steps and what is freed between them, for peak memory at 4096x4096 and
  beyond (benchmarks/bench_run.py: peak RSS at most the bare tutorial snippet's): backward()
  frees the graph before the manual gradient is made, and real and predicted are summarised and
  dropped before the comparison's temporaries. check() keeps fn's output and the inputs to the
  end (its references evaluate fn again), so routing `run` through it would hold one or two
  more full-size tensors at the peak.
- The backward itself: loss.backward() and the leaf's .grad, as the tutorial writes it (a
  target's error in its own graph reported as the target's: losses/user.backward); check() uses
  torch.autograd.grad with a cotangent, which a scalar loss does not need.
- The timing phases (draw, forward, backward, [repeat], manual, [finite_diff], compare), the
  tensor summaries (real, predicted, manual_grad, autograd_grad, difference) and the notes are
  `run`'s output format, which does not change.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from autograd_check._torch import import_torch
from autograd_check.api.check import manual_vs_autograd
from autograd_check.engine.compare import difference
from autograd_check.engine.determinism import plain_rerun, repeat_gradients, repeat_passed
from autograd_check.engine.finite_diff import Progress, plain_finite_diff
from autograd_check.engine.result import TENSOR_DATA_LIMIT, CheckResult, TensorView
from autograd_check.engine.spec import CheckSpec
from autograd_check.engine.tensors import (
    Clock,
    draw,
    draw_notes,
    grad_fn_chain,
    overflow_notes,
    tensor_view,
)
from autograd_check.losses.base import Loss
from autograd_check.losses.user import backward

if TYPE_CHECKING:
    import torch

def run_plain(
    spec: CheckSpec, device: torch.device, loss_def: Loss, progress: Progress | None = None
) -> CheckResult:
    torch = import_torch()
    rtol, atol = spec.tolerances()
    clock = Clock(device)

    real, predicted = draw(spec, device, loss_def)
    clock.mark("draw")
    loss = loss_def.forward(predicted, real)
    chain = grad_fn_chain(loss)
    clock.mark("forward")
    backward(loss_def, loss)
    auto = predicted.grad
    assert auto is not None  # predicted is a leaf that requires grad
    loss_value = float(loss.detach())
    del loss  # the graph is already freed by backward(); the scalar is all that is left
    clock.mark("backward")
    repeat = None
    if spec.repeat > 1:  # --repeat N: N - 1 more autograd gradients, each on a fresh graph
        repeat = repeat_gradients({"predicted": auto}, plain_rerun(loss_def, predicted, real),
                                  spec.repeat, in_verdict=spec.deterministic)
        clock.mark("repeat")
    # The manual gradient comes after backward() so that the graph's saved tensors are gone
    # before another full-size tensor is made: same numbers, lower peak memory.
    with torch.no_grad():
        manual = loss_def.manual_grad(predicted, real)
    clock.mark("manual")
    finite_diff = None
    if spec.reference == "finite-diff":
        finite_diff = plain_finite_diff(
            spec, loss_def, predicted, real, {"autograd": auto, "manual": manual}, progress
        )
        clock.mark("finite_diff")

    tensors = {"real": tensor_view("real", real), "predicted": tensor_view("predicted", predicted)}
    del real, predicted  # summarised; free them before the comparison's temporaries
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
        grad_fn_chain=chain,
        comparisons=comparisons,
        tensors=tensors,
        environment={},
        timings=clock.total(),
        notes=[*overflow_notes(loss_value, spec.dtype), *draw_notes(loss_def),
               *(finite_diff.notes if finite_diff else [])],
        finite_diff=finite_diff.block if finite_diff else None,
        repeat=repeat,
    )


