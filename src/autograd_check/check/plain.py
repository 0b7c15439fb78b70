"""The check itself, pure torch: tensors → loss → autograd gradient → manual gradient → comparison.

It never prints, never exits and never reads flags: it takes a CheckSpec and a device and returns a
CheckResult (environment left for the caller to fill).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from autograd_check._torch import import_torch
from autograd_check.check.compare import compare, difference
from autograd_check.check.determinism import plain_rerun, repeat_gradients, repeat_passed
from autograd_check.losses.builtin import TUTORIAL_DRAWS, Loss, resolve_loss
from autograd_check.check.finite_diff import Progress, plain_finite_diff
from autograd_check.check.result import TENSOR_DATA_LIMIT, CheckResult, TensorView
from autograd_check.check.spec import CheckSpec
from autograd_check.losses.user import TargetRaised, backward

if TYPE_CHECKING:
    import torch
    from torch import Tensor

HEAD = 6


class Clock:
    """Phase timings that wait for the device, so CUDA's asynchronous launches are not mistaken
    for finished work."""

    def __init__(self, device: torch.device) -> None:
        self._torch = import_torch()
        self._cuda = device.type == "cuda"
        self._device = device
        self.start = self.last = self._now()
        self.timings: dict[str, float] = {}

    def _now(self) -> float:
        if self._cuda:
            self._torch.cuda.synchronize(self._device)
        return time.perf_counter()

    def mark(self, phase: str) -> None:
        now = self._now()
        self.timings[f"{phase}_s"] = now - self.last
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.timings, "total_s": self.last - self.start}


def grad_fn_chain(t: Tensor) -> list[str]:
    """Names along one path of next_functions, from the loss down to AccumulateGrad."""
    names: list[str] = []
    fn = t.grad_fn
    while fn is not None:
        names.append(type(fn).__name__)
        inputs = [f for f, _ in fn.next_functions if f is not None]
        # Follow an operation before a leaf, so a model's chain goes through its layers (tanh
        # included) rather than stopping at the first bias.
        fn = next((f for f in inputs if type(f).__name__ != "AccumulateGrad"), None) or next(
            iter(inputs), None
        )
    return names


def tensor_view(name: str, t: Tensor) -> TensorView:
    torch = import_torch()
    t = t.detach()
    flat = t.reshape(-1)
    lo, hi = torch.aminmax(flat)
    mean = flat.mean() if flat.dtype in (torch.float32, torch.float64) else flat.float().mean()
    small = t.numel() <= TENSOR_DATA_LIMIT
    return TensorView(
        name=name,
        shape=list(t.shape),
        dtype=str(t.dtype).removeprefix("torch."),
        numel=t.numel(),
        min=float(lo),
        max=float(hi),
        mean=float(mean),
        head=flat[:HEAD].float().tolist(),
        data=_values(t) if small else None,
    )


def _values(t: Tensor) -> Any:
    """Nested lists: float64 and integer tensors (class indices) as they are, others as float32."""
    torch = import_torch()
    keep = t.dtype == torch.float64 or not t.is_floating_point()
    return (t if keep else t.float()).tolist()


def draw(
    spec: CheckSpec, device: torch.device, loss_def: Loss | None = None
) -> tuple[Tensor, Tensor]:
    """real, then predicted, after torch.manual_seed(seed): for mse-sum (and a --target) the
    tutorial's two torch.rand calls; other losses draw what they need (losses.Loss.draws).

    A private generator gives the same numbers without touching the global RNG; drawing on the
    CPU gives the same tensors on every device.
    """
    torch = import_torch()
    loss_def = loss_def if loss_def is not None else resolve_loss(spec)
    dtype = getattr(torch, spec.dtype)
    gen = torch.Generator().manual_seed(spec.seed)
    real = loss_def.draw_real(gen, spec.shape, dtype).to(device)
    predicted = loss_def.draw_predicted(gen, spec.shape, dtype).to(device).requires_grad_()
    return real, predicted


def run_check(
    spec: CheckSpec, device: torch.device, progress: Progress | None = None
) -> CheckResult:
    """The check for this spec: plain (predicted drawn) or through --model; a --target is
    imported first, and its own errors make a failed result rather than a crash."""
    loss_def = resolve_loss(spec)
    try:
        if spec.model is not None:
            from autograd_check.check.model import run_model_check

            return run_model_check(spec, device, loss_def, progress)
        return _run_plain(spec, device, loss_def, progress)
    except TargetRaised as e:
        return user_code_failed(spec, device, loss_def, e)


def user_code_failed(
    spec: CheckSpec, device: torch.device, loss_def: Loss, error: TargetRaised
) -> CheckResult:
    """A failed check whose result carries the user's own error (type, message, line)."""
    tensors: dict[str, TensorView] = {}
    if spec.model is None:  # with a model, predicted is the model's output: never finished
        real, predicted = draw(spec, device, loss_def)
        tensors["real"] = tensor_view("real", real)
        tensors["predicted"] = tensor_view("predicted", predicted)
    return CheckResult(
        spec=spec.to_dict(),
        passed=False,
        bit_exact=False,
        criterion="exact" if spec.exact else "tolerance",
        loss_name=loss_def.name,
        loss_value=math.nan,
        loss_formula=loss_def.formula,
        gradient_formula=loss_def.gradient_formula,
        grad_fn_chain=[],
        comparisons=[],
        tensors=tensors,
        environment={},
        timings={},
        error=str(error),
    )


def _run_plain(
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
    comparison = compare("predicted", manual, auto, rtol, atol, spec.exact)
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


def draw_notes(loss_def: Loss) -> list[str]:
    """Say how the tensors were drawn when it is not the tutorial's way."""
    return [] if loss_def.draws == TUTORIAL_DRAWS else [f"draws: {loss_def.draws}"]


def overflow_notes(loss_value: float, dtype: str) -> list[str]:
    """A loss that overflowed its dtype is worth a word: a user would think the check broke."""
    if math.isfinite(loss_value):
        return []
    return [
        f"the loss is {loss_value} in {dtype}: its reduction overflowed the dtype's range; "
        "the gradients are still compared element by element"
    ]
