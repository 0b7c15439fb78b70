"""Turn --device into a usable torch.device, or say exactly why CUDA is not usable here."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from autograd_check._torch import import_torch
from autograd_check.errors import EnvironmentProblem

if TYPE_CHECKING:
    import torch


def _visible() -> str:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "CUDA_VISIBLE_DEVICES is unset" if value is None else f"CUDA_VISIBLE_DEVICES={value!r}"


def resolve_device(name: str) -> torch.device:
    """cpu, auto (CUDA when usable, else CPU), cuda or cuda:N; EnvironmentProblem if unusable."""
    import_torch()
    import torch  # already imported quietly by import_torch(); this gives mypy its types

    if name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    index = int(name.partition(":")[2] or 0)
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        raise EnvironmentProblem(
            f"--device {name}: this torch build ({torch.__version__}) has no CUDA support; "
            "install a CUDA build of torch, or use --device cpu"
        )
    if not torch.cuda.is_available():
        raise EnvironmentProblem(
            f"--device {name}: no CUDA device is visible ({_visible()}); "
            "on Slurm ask for a GPU (--gpus 1), or use --device cpu"
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise EnvironmentProblem(
            f"--device {name}: only {count} CUDA device(s) visible (cuda:0 to cuda:{count - 1}; "
            f"{_visible()}); choose one of those, or use --device cpu"
        )
    return torch.device("cuda", index)
