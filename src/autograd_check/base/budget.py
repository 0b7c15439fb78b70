"""Sizes, memory and costs of a check, worked out before anything is allocated (no torch here).

Everything that answers "will this fit, and what will it cost" lives here: the tensors at a check's
peak, a model's parameters, what this host or GPU has available, and the work of finite
differences. The spec refuses what cannot run by calling into this module, so it takes any object
with the spec's fields (`Sized`) rather than importing CheckSpec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from autograd_check.base.errors import BadInput
from autograd_check.base.slurm_env import SlurmEnv


class Sized(Protocol):
    """The fields of a CheckSpec (frozen) that sizes and costs depend on."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> str: ...

    @property
    def device(self) -> str: ...

    @property
    def loss(self) -> str: ...

    @property
    def model(self) -> str | None: ...

    @property
    def hidden(self) -> int | None: ...

    @property
    def target(self) -> str | None: ...

    @property
    def repeat(self) -> int: ...

    @property
    def max_fd_elements(self) -> int: ...

    @property
    def numel(self) -> int: ...

    @property
    def itemsize(self) -> int: ...

    def shape_text(self) -> str: ...


# --- memory at the check's peak ----------------------------------------------------------------

# Full-size tensors alive at the peak of the tutorial's check (real, predicted, the graph's saved
# difference and backward temporaries: 6, measured), with one tensor of margin.
PEAK_TENSORS = 7
# The other losses keep more intermediates (measured: about 8 for huber in float32), and compute
# in float32 for float16/bfloat16 inputs, which doubles what each one costs (about 15 measured).
# --repeat holds a reference gradient and a fresh one besides.
OTHER_LOSS_TENSORS = 9
HALF_WIDENING = 2
REPEAT_TENSORS = 2


def peak_tensors(spec: Sized) -> int:
    """How many tensors of the check's size and dtype its peak holds, with a little margin."""
    if spec.loss == "mse-sum" and spec.target is None:
        count = PEAK_TENSORS
    else:
        count = OTHER_LOSS_TENSORS * (HALF_WIDENING if spec.itemsize == 2 else 1)
    return count + (REPEAT_TENSORS if spec.repeat > 1 else 0)


def needed_bytes(spec: Sized) -> int:
    return (peak_tensors(spec) * spec.numel + extra_elements(spec)) * spec.itemsize



def layer_shapes(spec: Sized) -> list[tuple[str, int, int]]:
    """(name, out_features, in_features) of each layer, in forward order."""
    features = spec.shape[-1]
    if spec.model == "linear":
        return [("linear", features, features)]
    hidden = spec.hidden or 1  # set whenever model is mlp (spec._combine)
    return [("fc1", hidden, features), ("fc2", features, hidden)]


def extra_elements(spec: Sized) -> int:
    """Elements the model adds to the check's peak, beyond the plain check's tensors: each
    parameter with its .grad and its manual gradient, and for the mlp the hidden activations
    (h, a, their gradients and the manual path's temporaries)."""
    if spec.model is None:
        return 0
    layers = layer_shapes(spec)
    params = sum(out * (inp + 1) for _, out, inp in layers)
    rows = spec.numel // spec.shape[-1]
    hidden = 5 * rows * layers[0][1] if spec.model == "mlp" else 0
    return 3 * params + hidden


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
    slurm = SlurmEnv()
    slurm_mb = slurm.mem_per_node
    if slurm_mb and slurm_mb.isdigit() and slurm.job_id:
        candidates.append(int(slurm_mb) * 1024 * 1024)
    return min(candidates) if candidates else None


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n / 1024:.3g} PiB"


def ensure_fits(spec: Sized, available: int | None, where: str) -> None:
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


BATCH_BYTES = {"cpu": 4 << 20, "cuda": 256 << 20}
"""Size of the reused batch buffer: on a CPU, a batch and the loss's temporaries fit in cache;
fresh large temporaries for every batch would cost more than the arithmetic."""
ELEMENT_RATE = {"cpu": 1e9, "cuda": 5e10}
"""Rough element-evaluations per second (an mse-like loss), for the cost estimate in refusals."""

# --- finite differences: what --reference finite-diff costs -----------------------------------


def fd_tensors(spec: Sized) -> dict[str, int]:
    """The tensors finite differences perturb, with their sizes: predicted, or with --model
    the output, every parameter and the input (in the order of the check's comparisons)."""
    if spec.model is None:
        return {"predicted": spec.numel}
    sizes = {"predicted": spec.numel}
    for name, out, inp in reversed(layer_shapes(spec)):
        sizes[f"{name}.weight"] = out * inp
        sizes[f"{name}.bias"] = out
    sizes["input"] = spec.numel
    return sizes


def _evaluation_elements(spec: Sized) -> int:
    """Elements one loss evaluation touches (the loss alone, or the model's forward too)."""
    if spec.model is None:
        return spec.numel
    rows = spec.numel // spec.shape[-1]
    return spec.numel + sum(rows * out * (inp + 1) for _, out, inp in layer_shapes(spec))


def batch_pairs(numel: int, device_type: str) -> int:
    """B: perturbation pairs per batch, so that the 2·B float64 copies fit BATCH_BYTES."""
    budget = BATCH_BYTES.get(device_type, BATCH_BYTES["cuda"])
    return max(1, min(numel, budget // (2 * numel * 8)))


@dataclass(frozen=True)
class Cost:
    elements: int
    evaluations: int
    element_operations: int
    buffer_bytes: int
    seconds: float


def estimate(spec: Sized) -> Cost:
    device_type = "cpu" if spec.device == "cpu" else "cuda"
    sizes = fd_tensors(spec)
    elements = sum(sizes.values())
    per_evaluation = _evaluation_elements(spec)
    operations = 2 * elements * per_evaluation
    largest = max(sizes.values())
    buffer = 2 * batch_pairs(largest, device_type) * largest * 8
    # with "auto" the device is not known yet: estimate as on a CPU, the slower
    rate = ELEMENT_RATE["cpu" if spec.device in ("cpu", "auto") else "cuda"]
    return Cost(elements, 2 * elements, operations, buffer, operations / rate)


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 else "under a second"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400 * 2:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def ensure_affordable(spec: Sized) -> None:
    """Refuse (BadInput, exit 2) finite differences on more than --max-fd-elements elements,
    saying what they would cost."""
    cost = estimate(spec)
    if cost.elements <= spec.max_fd_elements:
        return
    where = "this CPU" if spec.device in ("cpu", "auto") else "a GPU"
    raise BadInput(
        f"reference finite-diff on {cost.elements} elements needs {cost.evaluations} loss "
        f"evaluations ({cost.element_operations:.2g} element operations, roughly "
        f"{duration(cost.seconds)} on {where}; batch buffers about {human(cost.buffer_bytes)}), "
        f"but max_fd_elements is {spec.max_fd_elements}; choose a smaller --shape, or raise "
        f"--max-fd-elements to {cost.elements} to run it anyway"
    )


