"""The check itself, pure torch: tensors → loss → autograd gradient → manual gradient → comparison.

It never prints, never exits and never reads flags: it takes a CheckSpec and a device and returns a
CheckResult (environment left for the caller to fill).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from autograd_check._torch import import_torch
from autograd_check.compare import compare
from autograd_check.losses import get_loss
from autograd_check.result import TENSOR_DATA_LIMIT, CheckResult, TensorView
from autograd_check.spec import CheckSpec

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
    """Names along the first path of next_functions, from the loss down to AccumulateGrad."""
    names: list[str] = []
    fn = t.grad_fn
    while fn is not None:
        names.append(type(fn).__name__)
        fn = next((f for f, _ in fn.next_functions if f is not None), None)
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
        data=(t if t.dtype == torch.float64 else t.float()).tolist() if small else None,
    )


def draw(spec: CheckSpec, device: torch.device) -> tuple[Tensor, Tensor]:
    """real, then predicted: the tutorial's two torch.rand calls after torch.manual_seed(seed).

    A private generator gives the same numbers without touching the global RNG; drawing on the
    CPU gives the same tensors on every device.
    """
    torch = import_torch()
    dtype = getattr(torch, spec.dtype)
    gen = torch.Generator().manual_seed(spec.seed)
    real = torch.rand(spec.shape, generator=gen, dtype=dtype).to(device)
    predicted = torch.rand(spec.shape, generator=gen, dtype=dtype).to(device).requires_grad_()
    return real, predicted


def run_check(spec: CheckSpec, device: torch.device) -> CheckResult:
    torch = import_torch()
    loss_def = get_loss(spec.loss)
    rtol, atol = spec.tolerances()
    clock = Clock(device)

    real, predicted = draw(spec, device)
    clock.mark("draw")
    loss = loss_def.forward(predicted, real)
    chain = grad_fn_chain(loss)
    clock.mark("forward")
    loss.backward()
    auto = predicted.grad
    assert auto is not None  # predicted is a leaf that requires grad
    loss_value = float(loss.detach())
    del loss  # the graph is already freed by backward(); the scalar is all that is left
    clock.mark("backward")
    # The manual gradient comes after backward() so that the graph's saved tensors are gone
    # before another full-size tensor is made: same numbers, lower peak memory.
    with torch.no_grad():
        manual = loss_def.manual_grad(predicted, real)
    clock.mark("manual")

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
        work = torch.float64 if manual.dtype == torch.float64 else torch.float32
        tensors["difference"] = tensor_view("difference", manual.to(work) - auto.to(work))
    clock.mark("compare")

    return CheckResult(
        spec=spec.to_dict(),
        passed=comparison.passed,
        bit_exact=comparison.bit_exact,
        criterion="exact" if spec.exact else "tolerance",
        loss_name=loss_def.name,
        loss_value=loss_value,
        loss_formula=loss_def.formula,
        gradient_formula=loss_def.gradient_formula,
        grad_fn_chain=chain,
        comparisons=[comparison],
        tensors=tensors,
        environment={},
        timings=clock.total(),
        notes=overflow_notes(loss_value, spec.dtype),
    )


def overflow_notes(loss_value: float, dtype: str) -> list[str]:
    """A loss that overflowed its dtype is worth a word: a user would think the check broke."""
    if math.isfinite(loss_value):
        return []
    return [
        f"the loss is {loss_value} in {dtype}: its reduction overflowed the dtype's range; "
        "the gradients are still compared element by element"
    ]
