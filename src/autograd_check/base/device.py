"""Turn --device into a usable torch.device, or say exactly why CUDA is not usable here."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from autograd_check.base.errors import EnvironmentProblem
from autograd_check.base.lazy_torch import import_torch

if TYPE_CHECKING:
    import torch


def visible_devices() -> str:
    """What CUDA_VISIBLE_DEVICES says, for a message about devices that cannot be seen."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return "CUDA_VISIBLE_DEVICES is unset" if value is None else f"CUDA_VISIBLE_DEVICES={value!r}"


def cuda_unusable(torch: Any, name: str) -> tuple[str, str] | None:
    """Why the CUDA device `name` (cuda or cuda:N) cannot be used here, and what to do instead;
    None when it can. The command line and the pytest plugin say the same thing."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return (f"this torch build ({torch.__version__}) has no CUDA support",
                "install a CUDA build of torch")
    if not torch.cuda.is_available():
        return (f"no CUDA device is visible ({visible_devices()})",
                "on Slurm ask for a GPU (--gpus 1)")
    index = int(name.partition(":")[2] or 0)
    count = int(torch.cuda.device_count())
    if index >= count:
        return (f"only {count} CUDA device(s) visible (cuda:0 to cuda:{count - 1}; "
                f"{visible_devices()})", "choose one of those")
    return None


def resolve_device(name: str) -> torch.device:
    """cpu, auto (CUDA when usable, else CPU), cuda or cuda:N; EnvironmentProblem if unusable."""
    import_torch()
    import torch  # already imported quietly by import_torch(); this gives mypy its types

    if name == "cpu":
        return torch.device("cpu")
    if name == "auto":
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    problem = cuda_unusable(torch, name)
    if problem is not None:
        why, instead = problem
        raise EnvironmentProblem(f"--device {name}: {why}; {instead}, or use --device cpu")
    return torch.device("cuda", int(name.partition(":")[2] or 0))
