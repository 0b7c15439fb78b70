"""What each feature needs of torch, checked before anything of a check starts.

The package accepts torch from 2.1 (pyproject); a feature that needs a newer one says so here, and
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

from autograd_check.errors import EnvironmentProblem

PARALLEL_NEEDS: dict[str, tuple[tuple[int, int], str]] = {
    "ddp": ((2, 1), "DistributedDataParallel"),
    "fsdp": ((2, 4), "FSDP2's fully_shard"),
}
"""--parallel NAME: the oldest torch (major, minor) it runs on, and what it uses of torch."""
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


def parallel_problem(parallel: str | None, version: str | None) -> str | None:
    """Why --parallel `parallel` cannot run on torch `version` (None: it can, or nothing is
    known: no torch installed here, or a version that does not parse, is left to the ranks)."""
    if parallel is None or parallel not in PARALLEL_NEEDS or version is None:
        return None
    have = release(version)
    (major, minor), uses = PARALLEL_NEEDS[parallel]
    if have is None or have >= (major, minor):
        return None
    return (f"--parallel {parallel} needs torch {major}.{minor} or newer ({uses}); this is torch "
            f"{version}: install a newer torch, or use --parallel ddp")


def require_parallel(parallel: str | None) -> None:
    """Refuse (EnvironmentProblem, exit 3) a --parallel that this process's torch cannot run."""
    problem = parallel_problem(parallel, torch_version())
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
        f"--parallel fsdp needs torch {'.'.join(map(str, PARALLEL_NEEDS['fsdp'][0]))} or newer")
