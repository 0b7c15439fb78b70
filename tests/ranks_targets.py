"""Test-only --target modules for checks across ranks that must fail in a given way: a rank
killed, a rank hung, the user's own code raising (on every rank, or on rank 1 only). Shared by
tests/test_ranks.py, tests/test_ranks_slurm.py and tests/test_sweep_ranks.py (the correct module
and the planted gradient bugs are in examples/)."""

import contextlib
import os
import signal
import time

import torch
import torch.distributed as dist
from torch import nn


class Net(nn.Module):
    """A linear layer, a batch of 8 and a mean loss: what each class below breaks."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)

    def inputs(self, generator, dtype, device):
        return (torch.randn(8, 4, generator=generator, dtype=dtype, device=device),)

    def step(self, model, micro_batches):
        for micro in micro_batches:
            model(*micro).square().mean().backward()


class Dies(Net):
    def train_step(self, model, micro_batches):
        if dist.get_rank() == 1:
            print("rank 1: about to be killed", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        self.step(model, micro_batches)


class Hangs(Net):
    def train_step(self, model, micro_batches):
        if dist.get_rank() == 1:
            print("rank 1: sleeping forever", flush=True)
            while True:
                time.sleep(60)
        self.step(model, micro_batches)


class Sleeps(Net):
    """Every rank sleeps two minutes (a sweep's --case-timeout stops it first)."""

    def train_step(self, model, micro_batches):
        time.sleep(120)


class ExitsOnRank1(Net):
    """Rank 1 exits at once with code 9, the others sleep: its death is the case's error."""

    def train_step(self, model, micro_batches):
        if dist.get_rank() == 1:
            os._exit(9)
        time.sleep(120)


class Raises(Net):
    def train_step(self, model, micro_batches):
        raise ValueError("planted: the step refuses")


class RaisesOnRank1(Net):  # rank 0 waits in the all-reduce, which breaks as rank 1 ends
    def train_step(self, model, micro_batches):
        if dist.get_rank() == 1:
            raise ValueError("planted: rank 1 refuses")
        self.step(model, micro_batches)


class ForwardRaises(Net):
    def forward(self, x):
        raise KeyError("planted: no such layer")


class FrozenOnOneRank(Net):
    """fc is frozen on rank 1 only: the ranks' modules differ."""

    def __init__(self):
        super().__init__()
        if dist.get_rank() == 1:
            self.fc.weight.requires_grad_(False)


class FrozenEverywhere(Net):
    """A frozen parameter: no gradient anywhere, by design."""

    def __init__(self):
        super().__init__()
        self.fc.bias.requires_grad_(False)


class SyncNormOnCpu(Net):
    """SyncBatchNorm, which DDP refuses to wrap on the CPU."""

    def __init__(self):
        super().__init__()
        self.norm = nn.SyncBatchNorm(2)

    def forward(self, x):
        return self.norm(self.fc(x))


class WithBatchNorm(Net):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(2)

    def forward(self, x):
        return self.norm(self.fc(x))


class WithDropout(Net):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.fc(x))


class ClipsGradients(Net):
    """Clips the gradient norm inside train_step: a uniform scale of every gradient."""

    def train_step(self, model, micro_batches):
        self.step(model, micro_batches)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)


class LossTimesWorld(Net):
    """Multiplies the loss by the world size (a 'fix' for DDP's averaging that is not needed)."""

    def train_step(self, model, micro_batches):
        k = len(micro_batches)
        for i, micro in enumerate(micro_batches):
            context = model.no_sync() if i < k - 1 else contextlib.nullcontext()
            with context:
                (model(*micro).square().mean() / k * dist.get_world_size()).backward()


class DictOutput(Net):
    """forward returns a dict, and no loss(): the default loss cannot take it."""

    def forward(self, x):
        return {"y": self.fc(x)}


class _DoublesInPlace(torch.autograd.Function):
    """The identity, whose backward doubles grad_output in place: ranks and the full batch
    agree (they run the same backward), so only the backward's contract can see it."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.mul_(2)


class WritesGradOutput(Net):
    def forward(self, x):
        return _DoublesInPlace.apply(self.fc(x))
