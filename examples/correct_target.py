"""A correct --target: the log-cosh loss and its gradient, derived by hand.

    loss = Σᵢ log cosh(dᵢ),  dᵢ = predictedᵢ − realᵢ
    ∂loss/∂predictedᵢ = sinh(dᵢ) / cosh(dᵢ) = tanh(dᵢ)     (d/dx log u = u'/u, cosh' = sinh)

    autograd-check run --target examples/correct_target.py:log_cosh
"""

import torch


class LogCosh:
    """A target is any object with loss() and manual_grad(); name and formulas are optional."""

    name = "log-cosh"
    formula = "loss = Σ log cosh(predicted − real)"
    gradient_formula = "∂loss/∂predicted = tanh(predicted − real)"

    def loss(self, predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.cosh(predicted - real)).sum()

    def manual_grad(self, predicted: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return torch.tanh(predicted - real)


log_cosh = LogCosh()
