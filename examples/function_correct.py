"""A custom torch.autograd.Function with a correct backward (and jvp), checked from Python.

    logsumexp(x) = log Σⱼ exp(xⱼ)                  along the last dimension
    ∂/∂xⱼ        = exp(xⱼ) / Σₖ exp(xₖ) = softmax(x)ⱼ

so backward(ctx, grad_output) returns grad_output[..., None] · softmax(x): the vector-Jacobian
product for the cotangent autograd passes in. jvp is the same derivative applied forwards:
Σⱼ softmax(x)ⱼ · tangentⱼ. The backward is written with differentiable torch operations, so
it can itself be differentiated (order=2).

    python examples/function_correct.py
    autograd-check run --target examples/function_correct.py:LogSumExp --reference projection
"""

import sys

import torch

from autograd_check import check


class LogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        m = x.amax(dim=-1, keepdim=True)  # subtract the max: exp never overflows
        y = m.squeeze(-1) + torch.log(torch.exp(x - m).sum(dim=-1))
        ctx.save_for_backward(x, y)
        ctx.save_for_forward(x, y)
        return y

    @staticmethod
    def backward(ctx, grad_output):
        x, y = ctx.saved_tensors
        return grad_output.unsqueeze(-1) * torch.exp(x - y.unsqueeze(-1))

    @staticmethod
    def jvp(ctx, tangent):
        x, y = ctx.saved_tensors
        return (torch.exp(x - y.unsqueeze(-1)) * tangent).sum(dim=-1)

    @staticmethod
    def inputs(generator, dtype, device):
        """The tensors to check at, for `autograd-check run --target ...:LogSumExp`."""
        return (torch.randn(4, 5, generator=generator, dtype=dtype, device=device),)


def manual(x, grad_output):
    """The gradient derived by hand: grad_output · softmax(x)."""
    return grad_output.unsqueeze(-1) * torch.softmax(x, dim=-1)


LogSumExp.manual = staticmethod(manual)  # what `--target ...:LogSumExp` compares autograd with


if __name__ == "__main__":
    x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0),
                    requires_grad=True)
    results = [
        check(LogSumExp.apply, x, manual=manual),  # manual against autograd
        check(LogSumExp.apply, x),  # projection: no manual needed
        check(LogSumExp.apply, x, reference="forward"),  # jvp against backward
        check(LogSumExp.apply, x, reference="finite-diff", order=2),  # and the double backward
    ]
    print("\n\n".join(str(r) for r in results))
    sys.exit(0 if all(r.passed for r in results) else 1)
