"""Losses: each one's forward written with torch ops, and its gradient derived by hand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autograd_check.errors import BadInput

if TYPE_CHECKING:
    from torch import Tensor


@dataclass(frozen=True)
class Loss:
    name: str
    formula: str
    gradient_formula: str
    forward: Callable[[Tensor, Tensor], Tensor]
    manual_grad: Callable[[Tensor, Tensor], Tensor]
    """Called under torch.no_grad(); must not use autograd."""


def _mse_sum(predicted: Tensor, real: Tensor) -> Tensor:
    # The tutorial's loss, written exactly as the tutorial writes it.
    return (predicted - real).pow(2).sum()


def _mse_sum_grad(predicted: Tensor, real: Tensor) -> Tensor:
    # d/dp sum((p - r)^2) = 2 (p - r): the tutorial's manual gradient, exactly as it writes it.
    return 2.0 * (predicted - real)


LOSSES: dict[str, Loss] = {
    "mse-sum": Loss(
        name="mse-sum",
        formula="loss = Σ (predicted − real)²",
        gradient_formula="∂loss/∂predicted = 2 (predicted − real)",
        forward=_mse_sum,
        manual_grad=_mse_sum_grad,
    ),
}


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise BadInput(f"loss {name!r} is not known; choose one of {', '.join(LOSSES)}") from None
