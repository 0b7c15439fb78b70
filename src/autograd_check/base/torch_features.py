"""What each feature needs of torch, checked before anything of a check starts.

The package accepts torch from 2.4 (pyproject); a feature that needs a newer one says so here, and
a check that asks for it on an older torch is refused in one line (EnvironmentProblem, exit 3)
before any rank starts, instead of failing inside the ranks. Nothing here imports torch at load:
the version comes from torch itself when it is already loaded, else from its installed metadata,
so `submit` and `sweep` refuse on a login node without paying for the import.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from importlib import metadata
from typing import Any

from autograd_check.base.errors import EnvironmentProblem

PARALLEL_NEEDS: dict[str, tuple[str, dict[str, tuple[int, int]]]] = {
    "ddp": ("DistributedDataParallel", {"cuda": (2, 1), "cpu": (2, 1)}),
    # FSDP2 came in 2.4 for CUDA only: 2.4 creates CUDA streams on any device (on the CPU,
    # "CUDA driver version is insufficient" in the ranks), 2.5 raises "FSDP requires CUDA for
    # streams", 2.6's CPU stream has no record_event, and 2.7.1 runs but sums the ranks'
    # gradients instead of averaging them (a correct module FAILs, 2x the reference). On the CPU
    # (gloo) it is accepted from the oldest release seen right, 2.10 (docs/development.md).
    "fsdp": ("FSDP2's fully_shard", {"cuda": (2, 4), "cpu": (2, 10)}),
}
"""--parallel NAME: what it uses of torch, and the oldest torch (major, minor) it runs on with
CUDA and on the CPU (--device cpu, or auto, which may be the CPU)."""
FULLY_SHARD_MODULES = ("torch.distributed.fsdp", "torch.distributed._composable.fsdp")
"""Where FSDP2's fully_shard lives: public from torch 2.6, under _composable in 2.4 and 2.5."""


def torch_version() -> str | None:
    """The torch this process runs with (e.g. '2.4.1+cu121'); None when none is installed."""
    loaded = sys.modules.get("torch")
    version = getattr(loaded, "__version__", None)
    if version is not None:
        return str(version)
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None


def release(version: str) -> tuple[int, int] | None:
    """(major, minor) of a version string; None when it does not start with them."""
    found = re.match(r"(\d+)\.(\d+)", version)
    return (int(found[1]), int(found[2])) if found else None


def parallel_problem(parallel: str | None, device: str, version: str | None) -> str | None:
    """Why --parallel `parallel` on `device` cannot run on torch `version` (None: it can, or
    nothing is known: no torch installed here, or a version that does not parse, is left to
    the ranks)."""
    if parallel is None or parallel not in PARALLEL_NEEDS or version is None:
        return None
    have = release(version)
    uses, oldest = PARALLEL_NEEDS[parallel]
    kind = "cuda" if device.startswith("cuda") else "cpu"
    if have is None or have >= oldest[kind]:
        return None
    where, others = "", ""
    if oldest["cpu"] != oldest["cuda"]:
        where = (" with CUDA" if kind == "cuda" else " on the CPU" if device == "cpu" else
                 f" with --device {device} (which may be the CPU)")
        others = "" if kind == "cuda" else f"; with CUDA from {_shown(oldest['cuda'])}"
    return (f"--parallel {parallel}{where} needs torch {_shown(oldest[kind])} or newer ({uses}"
            f"{others}); this is torch {version}: install a newer torch, or use --parallel ddp")


def _shown(release: tuple[int, int]) -> str:
    return ".".join(map(str, release))


def require_parallel(parallel: str | None, device: str) -> None:
    """Refuse (EnvironmentProblem, exit 3) a --parallel that this process's torch cannot run on
    `device`."""
    problem = parallel_problem(parallel, device, torch_version())
    if problem is not None:
        raise EnvironmentProblem(problem)


def fully_shard() -> Callable[..., Any]:
    """FSDP2's fully_shard, from where this torch keeps it (imports torch.distributed)."""
    for name in FULLY_SHARD_MODULES:
        try:
            found: Callable[..., Any] = importlib.import_module(name).fully_shard
        except (ImportError, AttributeError):
            continue
        return found
    raise EnvironmentProblem(
        f"this torch has no FSDP2 (fully_shard in none of {', '.join(FULLY_SHARD_MODULES)}); "
        f"--parallel fsdp needs torch {_shown(PARALLEL_NEEDS['fsdp'][1]['cuda'])} or newer")
