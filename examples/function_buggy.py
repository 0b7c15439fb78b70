"""A custom torch.autograd.Function with a planted bug in its backward: what a check must catch.

    swish(x)  = x · σ(x)
    swish'(x) = σ(x) + x · σ(x) · (1 − σ(x))

The backward below forgets the factor (1 − σ(x)); jvp is right. The tensors are as in
examples/function_correct.py.

    python examples/function_buggy.py          # exits 1: the bug is caught
    autograd-check run --target examples/function_buggy.py:Swish --reference projection  # exit 1
"""

import sys

import torch

from autograd_check import check


class Swish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return grad_output * (s + x * s)  # the bug: should be s + x · s · (1 − s)

    @staticmethod
    def jvp(ctx, tangent):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return (s + x * s * (1 - s)) * tangent

    @staticmethod
    def inputs(generator, dtype, device):
        """The tensors to check at, for `autograd-check run --target ...:Swish`."""
        return (torch.randn(4, 5, generator=generator, dtype=dtype, device=device),)


if __name__ == "__main__":
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)
    results = [check(Swish.apply, x), check(Swish.apply, x, reference="forward")]
    print("\n\n".join(str(r) for r in results))
    sys.exit(0 if all(r.passed for r in results) else 1)
