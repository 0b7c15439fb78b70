"""A --target with a planted bug, for the check to catch: smooth L1 (β = 0.25).

    loss = Σᵢ s(dᵢ),  dᵢ = predictedᵢ − realᵢ,  s(d) = d²/(2β) if |d| < β else |d| − β/2
    ∂loss/∂predictedᵢ = dᵢ/β if |dᵢ| < β else sign(dᵢ)

The manual gradient below writes the second branch as 1 instead of sign(d): right wherever
d > β, wrong (by 2) wherever d < −β. The check reports exactly those elements.

    autograd-check run --target examples/buggy_target.py:smooth_l1      # exit 1
"""

from types import SimpleNamespace

import torch

BETA = 0.25


def loss(predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """with s(d) = d²/(2β) if |d| < β else |d| − β/2, β = 0.25:  loss = Σ s(predicted − real)"""
    d = predicted - real
    return torch.where(d.abs() < BETA, d.pow(2) / (2 * BETA), d.abs() - BETA / 2).sum()


def manual_grad(predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """∂loss/∂predicted = d/β if |d| < β else 1,  d = predicted − real"""
    d = predicted - real
    # The planted bug: the else-branch should be torch.sign(d).
    return torch.where(d.abs() < BETA, d / BETA, torch.ones_like(d))


# A module-like namespace works as a target too (so would a module: drop ':smooth_l1').
smooth_l1 = SimpleNamespace(loss=loss, manual_grad=manual_grad)
