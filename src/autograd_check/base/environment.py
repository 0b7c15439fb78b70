"""Where a check ran: host, torch, device, CUDA, determinism settings, Slurm ids."""

from __future__ import annotations

import platform
import socket
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.slurm_env import SlurmEnv

if TYPE_CHECKING:
    import torch

def slurm_ids() -> dict[str, str] | None:
    """The Slurm ids of the job (and step) this process runs in; None outside Slurm."""
    return SlurmEnv().ids()


@lru_cache(maxsize=1)
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_environment(device: torch.device) -> dict[str, Any]:
    torch = import_torch()
    on_cuda = device.type == "cuda"
    return {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if on_cuda else cpu_name(),
        "cuda": torch.version.cuda if on_cuda else None,
        "threads": torch.get_num_threads(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "slurm": slurm_ids(),
    }


def torch_facts() -> dict[str, Any]:
    """torch's version and build, and the CUDA devices it can see (names, memory)."""
    torch = import_torch()
    cuda_ok = bool(torch.cuda.is_available())
    devices = []
    if cuda_ok:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            devices.append(
                {
                    "index": index,
                    "name": props.name,
                    "memory_gib": round(props.total_memory / 1024**3, 1),
                    "capability": f"{props.major}.{props.minor}",
                }
            )
    return {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cuda_available": cuda_ok,
        "devices": devices,
        "threads": torch.get_num_threads(),
    }
