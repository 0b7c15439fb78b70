"""The loss a spec names: a user's --target, or a built-in loss with its options."""

from __future__ import annotations

from typing import TYPE_CHECKING

from autograd_check.losses.base import Loss
from autograd_check.losses.builtin import get_loss
from autograd_check.losses.user import load_target

if TYPE_CHECKING:
    from autograd_check.base.spec import CheckSpec


def resolve_loss(spec: CheckSpec) -> Loss:
    """The spec's loss: its --target (imported now, so a bad one fails before any work), else the
    built-in one with its options."""
    if spec.target is not None:
        return load_target(spec.target)
    return get_loss(spec.loss, spec.delta)
