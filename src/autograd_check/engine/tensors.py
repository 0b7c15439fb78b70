"""The pieces every check shares: drawing the tensors, timing phases, the grad_fn chain, tensor
views for the result, and notes about the draw and the loss."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from autograd_check._torch import import_torch
from autograd_check.engine.result import TENSOR_DATA_LIMIT, TensorView
from autograd_check.engine.spec import CheckSpec
from autograd_check.losses.base import TUTORIAL_DRAWS, Loss
from autograd_check.losses.resolve import resolve_loss

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
    """Shape, dtype, min, max, mean, the first values, and all of them when small. The statistics
    of float16 and bfloat16 tensors (and of integers, for the mean) are taken in float32: older
    torch has no CPU aminmax for half types (2.1), and a float32 mean does not round to the half
    type on the way."""
    torch = import_torch()
    t = t.detach()
    flat = t.reshape(-1)
    if flat.is_floating_point() and flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    lo, hi = torch.aminmax(flat)
    mean = flat.mean() if flat.is_floating_point() else flat.float().mean()
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
