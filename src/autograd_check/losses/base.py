"""The Loss protocol: what every loss gives the check (its forward, its hand-derived gradient and
how its tensors are drawn), for the built-in losses and users' own alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from autograd_check.base.lazy_torch import import_torch

if TYPE_CHECKING:
    import torch
    from torch import Tensor

TUTORIAL_DRAWS = "real = torch.rand(shape), then predicted = torch.rand(shape)"

Draw = Callable[["torch.Generator", "tuple[int, ...]", "torch.dtype"], "Tensor"]


def draw_rand(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """torch.rand(shape): uniform in [0, 1), the tutorial's draw for both tensors."""
    drawn: Tensor = import_torch().rand(shape, generator=gen, dtype=dtype)
    return drawn


def draw_randn(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """torch.randn(shape): standard normal, for logits and for crossing Huber's δ."""
    drawn: Tensor = import_torch().randn(shape, generator=gen, dtype=dtype)
    return drawn


def draw_classes(gen: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """Class indices in [0, C) of shape[:-1] (int64), C = shape[-1]: cross-entropy's targets."""
    drawn: Tensor = import_torch().randint(0, shape[-1], shape[:-1], generator=gen)
    return drawn


@dataclass(frozen=True)
class Loss:
    name: str
    formula: str
    gradient_formula: str
    forward: Callable[[Tensor, Tensor], Tensor]
    manual_grad: Callable[[Tensor, Tensor], Tensor]
    """Called under torch.no_grad(); must not use autograd."""
    draw_real: Draw = field(default=draw_rand)
    draw_predicted: Draw = field(default=draw_rand)
    draws: str = TUTORIAL_DRAWS
    """How the seed's generator fills real, then predicted (in that order: the tutorial's)."""
    user_code: bool = False
    """A --target: its errors are the user's (a failed check), not this package's."""
    reduction: str = "mean"
    """How the loss reduces over the batch, "mean" or "sum": a check over ranks (--ranks) scales
    its full-batch reference by it (DDP averages the ranks' gradients)."""
    evaluate: Callable[[Tensor, Tensor], Tensor] | None = None
    """The loss as a plain function, for numerical evaluation (--reference finite-diff, under
    torch.no_grad() and torch.func.vmap); None: forward is that function."""
