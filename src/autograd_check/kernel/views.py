"""What a result shows of a tensor: its view (shape, dtype, statistics, first values, all values
when small) and the grad_fn chain a loss was built by."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import TENSOR_DATA_LIMIT, TensorView

if TYPE_CHECKING:
    from torch import Tensor

HEAD = 6


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
