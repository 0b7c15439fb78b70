"""Phase timings of a check, waiting for the device so that CUDA's asynchronous launches are not
mistaken for finished work."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from autograd_check.base.lazy_torch import import_torch

if TYPE_CHECKING:
    import torch


class Clock:
    """Phase timings that wait for the device, so CUDA's asynchronous launches are not mistaken
    for finished work."""

    def __init__(self, device: torch.device) -> None:
        self._torch = import_torch()
        self._cuda = device.type == "cuda"
        self._device = device
        self.start = self.last = self._now()
        self.timings: dict[str, float] = {}

    def _now(self) -> float:
        if self._cuda:
            self._torch.cuda.synchronize(self._device)
        return time.perf_counter()

    def mark(self, phase: str) -> None:
        now = self._now()
        self.timings[f"{phase}_s"] = now - self.last
        self.last = now

    def total(self) -> dict[str, float]:
        return {**self.timings, "total_s": self.last - self.start}
