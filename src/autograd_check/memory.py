"""How much memory a check needs, and how much this process may use, estimated before allocating."""

from __future__ import annotations

import os
from pathlib import Path

from autograd_check.errors import BadInput
from autograd_check.spec import CheckSpec

# Full-size tensors alive at the peak of the engine (real, predicted, the graph's saved difference
# and backward temporaries), with one tensor of margin.
PEAK_TENSORS = 6


def needed_bytes(spec: CheckSpec) -> int:
    from autograd_check.model import extra_elements  # --model's parameters and activations

    return (PEAK_TENSORS * spec.numel + extra_elements(spec)) * spec.itemsize


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_host_bytes() -> int | None:
    """MemAvailable, capped by a cgroup limit and by Slurm's memory allocation when inside a job."""
    candidates: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                candidates.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    limit = _read_int("/sys/fs/cgroup/memory.max")
    usage = _read_int("/sys/fs/cgroup/memory.current")
    if limit is not None and usage is not None:
        candidates.append(max(limit - usage, 0))
    slurm_mb = os.environ.get("SLURM_MEM_PER_NODE")
    if slurm_mb and slurm_mb.isdigit() and os.environ.get("SLURM_JOB_ID"):
        candidates.append(int(slurm_mb) * 1024 * 1024)
    return min(candidates) if candidates else None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def ensure_fits(spec: CheckSpec, available: int | None, where: str) -> None:
    """Refuse a shape whose tensors would not fit, saying what it needs and what there is."""
    need = needed_bytes(spec)
    if available is not None and need > available:
        each = human(spec.numel * spec.itemsize)
        parts = f"{PEAK_TENSORS} tensors of {each}"
        if spec.model is not None:
            model = human(need - PEAK_TENSORS * spec.numel * spec.itemsize)
            parts += f" and {model} for the {spec.model} model, whose width is the last dimension"
        raise BadInput(
            f"shape {spec.shape_text()} {spec.dtype} needs about {human(need)} "
            f"({parts}) but {where} has {human(available)} available; "
            "choose a smaller --shape"
        )
