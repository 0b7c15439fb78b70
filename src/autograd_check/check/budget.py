"""How much memory a check needs, and how much this process may use, estimated before allocating."""

from __future__ import annotations

import os
from pathlib import Path

from autograd_check.errors import BadInput
from autograd_check.check.spec import CheckSpec

# Full-size tensors alive at the peak of the tutorial's check (real, predicted, the graph's saved
# difference and backward temporaries: 6, measured), with one tensor of margin.
PEAK_TENSORS = 7
# The other losses keep more intermediates (measured: about 8 for huber in float32), and compute
# in float32 for float16/bfloat16 inputs, which doubles what each one costs (about 15 measured).
# --repeat holds a reference gradient and a fresh one besides.
OTHER_LOSS_TENSORS = 9
HALF_WIDENING = 2
REPEAT_TENSORS = 2


def peak_tensors(spec: CheckSpec) -> int:
    """How many tensors of the check's size and dtype its peak holds, with a little margin."""
    if spec.loss == "mse-sum" and spec.target is None:
        count = PEAK_TENSORS
    else:
        count = OTHER_LOSS_TENSORS * (HALF_WIDENING if spec.itemsize == 2 else 1)
    return count + (REPEAT_TENSORS if spec.repeat > 1 else 0)


def needed_bytes(spec: CheckSpec) -> int:
    from autograd_check.check.model import extra_elements  # --model's parameters and activations

    return (peak_tensors(spec) * spec.numel + extra_elements(spec)) * spec.itemsize


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
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n / 1024:.3g} PiB"


def ensure_fits(spec: CheckSpec, available: int | None, where: str) -> None:
    """Refuse a shape whose tensors would not fit, saying what it needs and what there is."""
    need = needed_bytes(spec)
    if available is not None and need > available:
        each = human(spec.numel * spec.itemsize)
        count = peak_tensors(spec)
        parts = f"{count} tensors of {each}"
        if spec.model is not None:
            model = human(need - count * spec.numel * spec.itemsize)
            parts += f" and {model} for the {spec.model} model, whose width is the last dimension"
        raise BadInput(
            f"shape {spec.shape_text()} {spec.dtype} needs about {human(need)} "
            f"({parts}) but {where} has {human(available)} available; "
            "choose a smaller --shape"
        )
