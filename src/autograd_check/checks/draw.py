"""The tensors a spec-driven check starts from, and notes about how they were drawn and what the
loss did with them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.spec import CheckSpec
from autograd_check.losses.base import TUTORIAL_DRAWS, Loss
from autograd_check.losses.resolve import resolve_loss

if TYPE_CHECKING:
    import torch
    from torch import Tensor


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
