"""A correct --target for a check over ranks: a small regression network (Linear → tanh → Linear)
whose mean squared error is averaged over the batch, trained one step by the default train step.

With --ranks N every rank takes 8 / N of the batch of 8 (and, with --accumulate K, splits its share
into K micro-batches); DistributedDataParallel or FSDP2 averages the ranks' gradients, which for a
loss that is a mean over the batch is exactly the full-batch gradient one process computes. The
check passes under ddp and fsdp, in float32 and float64, with or without accumulation:

    autograd-check run --target examples/ranks_correct.py:TwoLayer --ranks 2
    autograd-check run --target examples/ranks_correct.py:TwoLayer --ranks 2 \\
        --parallel fsdp --accumulate 2 --dtype float64

The module gives what a check over ranks needs: inputs(generator, dtype, device), every tensor
with the batch as its first dimension (forward receives them all, loss the output and them all),
and how its loss reduces over the batch. See examples/ranks_bugs.py for what goes wrong.
"""

import torch
from torch import nn

BATCH = 8
FEATURES_IN = 6
HIDDEN = 8
FEATURES_OUT = 4


class TwoLayer(nn.Module):
    """y ≈ fc2(tanh(fc1(x))), loss = mean over the batch and features of (prediction − y)²."""

    reduction = "mean"  # how loss() reduces over the batch (the default; "sum" is the other)

    def __init__(self) -> None:
        super().__init__()  # the check seeds the global RNG first: every rank builds the same
        self.fc1 = nn.Linear(FEATURES_IN, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, FEATURES_OUT)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The prediction for x (y, the targets, is an input too: it is split with x)."""
        return self.fc2(torch.tanh(self.fc1(x)))

    def inputs(self, generator: torch.Generator, dtype: torch.dtype,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The global batch: inputs x and targets y, 8 rows each."""
        x = torch.randn(BATCH, FEATURES_IN, generator=generator, dtype=dtype, device=device)
        y = torch.randn(BATCH, FEATURES_OUT, generator=generator, dtype=dtype, device=device)
        return x, y

    def loss(self, output: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """loss = (1/N) Σ (prediction − y)²  (mean over the batch)"""
        return (output - y).square().mean()
