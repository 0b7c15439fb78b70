"""A module with a hand-written backward: a linear layer whose forward calls its own
autograd.Function. check() takes the module itself: its input and its parameters (by their
names, weight and bias) are checked together.

    y = x Wᵀ + b
    ∂L/∂x = g W,   ∂L/∂W = gᵀ x,   ∂L/∂b = Σ_rows g        (g = grad_output = ∂L/∂y)

    python examples/module_manual.py
    autograd-check run --target examples/module_manual.py:MyLinear --reference projection
"""

import sys

import torch
from torch import nn

from autograd_check import check


class LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return x @ weight.T + bias

    @staticmethod
    def backward(ctx, grad_output):
        x, weight = ctx.saved_tensors
        return grad_output @ weight, grad_output.T @ x, grad_output.sum(dim=0)


class MyLinear(nn.Module):
    def __init__(self, features_in=3, features_out=2):
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.weight = nn.Parameter(torch.randn(features_out, features_in, generator=gen))
        self.bias = nn.Parameter(torch.randn(features_out, generator=gen))

    def forward(self, x):
        return LinearFunction.apply(x, self.weight, self.bias)

    def inputs(self, generator, dtype, device):
        """The input to check at, for `autograd-check run --target ...:MyLinear` (which moves
        the module to --dtype and --device first)."""
        x = torch.randn(4, self.weight.shape[1], generator=generator, dtype=dtype, device=device)
        return (x,)

    def manual(self, x, grad_output):
        """x's gradient, then the parameters' in the order of named_parameters()."""
        return grad_output @ self.weight, grad_output.T @ x, grad_output.sum(dim=0)


def manual(x, grad_output):
    """One gradient per checked tensor: the input first, then the parameters in the order of
    named_parameters() (weight, bias)."""
    return grad_output @ layer.weight, grad_output.T @ x, grad_output.sum(dim=0)


layer = MyLinear(3, 2)

if __name__ == "__main__":
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    result = check(layer, x, manual=manual, reference="projection")
    print(result)
    sys.exit(0 if result.passed else 1)
