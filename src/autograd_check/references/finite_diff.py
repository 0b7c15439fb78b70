"""--reference finite-diff: autograd (and the manual gradient) against central differences.

For every element i of a tensor p that the loss L depends on, in float64:

    fdᵢ = (L(p + h·eᵢ) − L(p − h·eᵢ)) / 2h,        h = FD_STEP = 1e-6

which is how torch.autograd.gradcheck builds its numerical Jacobian (its eps=1e-6). The inputs
are the check's own tensors cast to float64, so a float32 check is compared with the exact-ish
gradient at the very same (float32-representable) point. The error of fd is O(h²) from
truncation (zero for a quadratic like mse) plus about ε·|L|/h from rounding the two evaluations.

A gradient g (autograd's, or the manual one) agrees with fd when, for every element,

    |g − fd| ≤ atol + rtol·|fd|       (gradcheck's test: its atol=1e-5, rtol=1e-3)

with rtol = max(FD_RTOL, the check's rtol) and atol = max(FD_ATOL, the check's atol,
FD_NOISE·ε·|L|/h): never tighter than gradcheck, wider for float16/bfloat16 (whose own tolerances
are wider), and wide enough for the rounding of a very large loss. `--exact` does not apply: a
numerical derivative is never bit-exact.

Cost: two loss evaluations per element, each over all n elements, so O(n²) work; refused past
--max-fd-elements (DEFAULT_MAX_FD_ELEMENTS = 65536) with the cost spelled out. The evaluations
are batched: one buffer of 2·B copies of p (B = pairs per batch, sized to BATCH_BYTES so that a
batch and the loss's temporaries stay in cache) is allocated once; each batch adds ±h on a
diagonal of it, evaluates the loss on every row at once with torch.func.vmap, and puts the
diagonal back. A loss that vmap cannot trace (a user's .item(), data-dependent Python control
flow) is evaluated element by element instead, with a note saying why.

Non-differentiable points: at an exact tie (l1 at predicted = real) the central difference is
the symmetric one (0 for |x|), which is also the subgradient torch uses; an element closer than h
to a kink without being on it can differ (probability about 2h per element for uniform draws).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from autograd_check.base.budget import batch_pairs
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import Comparison
from autograd_check.kernel.compare import compare, to64

if TYPE_CHECKING:
    from torch import Tensor

    from autograd_check.base.spec import CheckSpec
    from autograd_check.losses.base import Loss

FD_STEP = 1e-6
"""h: torch.autograd.gradcheck's eps."""
FD_RTOL = 1e-3
"""gradcheck's rtol; the check's own rtol when that is wider."""
FD_ATOL = 1e-5
"""gradcheck's atol; the check's own atol, or the rounding allowance, when wider."""
FD_NOISE = 8.0
"""Safety factor on ε·|L|/h, the rounding error of the difference of two float64 evaluations."""
FLOAT64_EPS = 2.0**-52
CPU_THREADS = 1
"""torch threads while finite differences run on a CPU. They are thousands of short batches, each a
few ops: with more threads every op ends in an OpenMP barrier, and when the cores are shared (a
busy workstation, a Slurm job given fewer CPUs than the node has, where torch still starts one
thread per core) each barrier waits for a descheduled thread. Measured on a shared 2-core machine,
128x128: 1-2 s on one thread, 8-24 s on two."""
HEAP_HEADROOM = 4
"""The block freed before the batches is this many batches large (see _heap_headroom)."""
DYNAMIC_THRESHOLD_MAX = 32 << 20
"""The largest block whose free raises glibc's dynamic mmap threshold (64-bit)."""
VMAP_PROBE_RTOL = 1e-9
"""vmap's first value must match a direct evaluation this closely, or the loop is used."""

Progress = Callable[[int, int], None]
"""progress(done, total): finite-difference elements evaluated so far, out of total."""
LossFn = Callable[["Tensor"], "Tensor"]


def fd_tolerances(spec: CheckSpec, loss_value: float) -> tuple[float, float]:
    """(rtol, atol) for a comparison with finite differences (module docstring)."""
    rtol, atol = spec.tolerances()
    noise = FD_NOISE * FLOAT64_EPS * abs(loss_value) / FD_STEP if math.isfinite(loss_value) else 0
    return max(FD_RTOL, rtol), max(FD_ATOL, atol, noise)


# --- central differences ----------------------------------------------------------------------


@dataclass
class Differences:
    grad: Tensor
    """float64, the shape of the perturbed tensor."""
    vectorised: bool
    pairs_per_batch: int
    batches: int
    buffer_bytes: int
    fallback: str | None = None
    """Why the element-by-element loop was used, when it was."""


class Tracker:
    """Cumulative progress over several tensors, for one callback."""

    def __init__(self, callback: Progress | None, total: int) -> None:
        self.callback, self.total, self.done = callback, total, 0
        if callback is not None:
            callback(0, total)  # the total is known before the first (slowest) batch

    def advance(self, count: int) -> None:
        self.done += count
        if self.callback is not None:
            self.callback(self.done, self.total)


def central_differences(
    fn: LossFn,
    x: Tensor,
    *,
    step: float = FD_STEP,
    pairs: int | None = None,
    tracker: Tracker | None = None,
) -> Differences:
    """(fn(x + h·eᵢ) − fn(x − h·eᵢ)) / 2h for every element i of x, in float64.

    fn maps a tensor shaped like x to a scalar tensor; it is evaluated under torch.no_grad().
    """
    torch = import_torch()
    tracker = tracker if tracker is not None else Tracker(None, x.numel())
    x64 = x.detach().to(torch.float64).contiguous()
    pairs = pairs if pairs is not None else batch_pairs(x64.numel(), x64.device.type)
    start = tracker.done
    device_type = x64.device.type
    batch_bytes = 2 * pairs * x64.numel() * 8
    if device_type == "cpu":
        _heap_headroom(torch, batch_bytes)
    with torch.no_grad(), _threads(torch, device_type):
        try:
            return _batched(torch, fn, x64, step, pairs, tracker)
        except Exception as e:  # vmap could not trace fn: anything fn raised under it
            first = (str(e).strip().splitlines() or [""])[0]
            reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
            tracker.done = start
            return _loop(torch, fn, x64, step, tracker, reason)


@contextmanager
def _threads(torch: Any, device_type: str) -> Iterator[None]:
    """CPU_THREADS torch threads on a CPU for the block, restored after; nothing on a GPU."""
    before = torch.get_num_threads()
    if device_type != "cpu" or before == CPU_THREADS:
        yield
        return
    torch.set_num_threads(CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _heap_headroom(torch: Any, batch_bytes: int) -> None:
    """Let the loss's per-batch temporaries be reused from the heap rather than fetched from the
    kernel on every batch (CPU).

    Our own buffer is allocated once, but the loss makes its own temporaries, each as large as a
    batch, on every call. glibc serves blocks this large with mmap, or from the top of the heap and
    trims that back to the kernel as soon as two of them are free: every batch then faults its
    pages in again, zero-filled, which costs more than the arithmetic (128x128 mse-sum: 3-5 s
    against under 1 s, two million page faults). glibc's dynamic mmap threshold is what avoids
    this: freeing an mmapped block raises the threshold to its size (at most 32 MiB), and the trim
    threshold to twice that. So one block of HEAP_HEADROOM batches is allocated and freed here:
    afterwards blocks up to that size come from the heap, and up to twice that stays there when
    freed. No setting is changed (mallopt would turn the dynamic threshold off for good): glibc
    adapts as it does whenever a large tensor is freed, and keeps adapting afterwards. Another
    allocator sees one large block come and go. The block is never written: no page is touched.
    """
    size = min(HEAP_HEADROOM * batch_bytes, DYNAMIC_THRESHOLD_MAX - (1 << 16))
    block = torch.empty(size, dtype=torch.uint8)
    del block


class VmapMismatch(Exception):
    """vmap's value for a row differs from evaluating that row directly."""


def _batched(
    torch: Any, fn: LossFn, x64: Tensor, step: float, pairs: int, tracker: Tracker
) -> Differences:
    n = x64.numel()
    flat = x64.reshape(-1)
    # Rows 2k and 2k+1 hold x + h·e(s+k) and x − h·e(s+k) for the batch starting at element s:
    # the first 2b rows of the buffer are then one contiguous block for a short last batch.
    buffer = x64.reshape(1, n).repeat(2 * pairs, 1)
    rows = buffer.view(2 * pairs, *x64.shape)
    out = torch.empty(n, dtype=torch.float64, device=x64.device)
    batched = _vmap(torch, fn)
    # +h and −h as one (pairs, 2) tensor, added to both perturbed elements of a pair at once
    signed = torch.tensor([[step, -step]], dtype=torch.float64, device=x64.device)
    batches = 0
    for s in range(0, n, pairs):
        b = min(pairs, n - s)
        # element s+k of rows 2k and 2k+1: one strided view of the 2b perturbed elements
        diagonal = buffer.as_strided((b, 2), (2 * n + 1, n), s)
        diagonal.add_(signed)
        values = batched(rows[: 2 * b]).reshape(-1)
        if values.numel() != 2 * b:
            raise VmapMismatch(f"vmap gave {values.numel()} values for {2 * b} rows")
        if batches == 0:
            _probe(fn, rows[0], values[0])
        torch.sub(values[0::2], values[1::2], out=out[s : s + b])
        diagonal.copy_(flat[s : s + b].unsqueeze(1))
        batches += 1
        tracker.advance(b)
    out.div_(2 * step)
    return Differences(
        grad=out.view(x64.shape),
        vectorised=True,
        pairs_per_batch=pairs,
        batches=batches,
        buffer_bytes=buffer.numel() * buffer.element_size(),
    )


def _vmap(torch: Any, fn: LossFn) -> LossFn:
    """fn evaluated on every row of a batch: torch.func.vmap's own steps (one vmap level, the
    batch dimension added, fn, the batch dimension removed), without its per-call flattening of
    arguments, which for a 128x128 tensor costs as much as a fifth of each batch's arithmetic.
    torch.func.vmap itself where those steps are not there (another torch version)."""
    functorch = getattr(torch._C, "_functorch", None)
    steps = ("_vmap_increment_nesting", "_add_batch_dim", "_remove_batch_dim",
             "_vmap_decrement_nesting")
    if functorch is None or not all(hasattr(functorch, name) for name in steps):
        vmapped: LossFn = torch.func.vmap(fn)
        return vmapped

    def batched(rows: Tensor) -> Tensor:
        size = rows.shape[0]
        level = functorch._vmap_increment_nesting(size, "error")
        try:
            value = fn(functorch._add_batch_dim(rows, 0, level))
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"fn returned a {type(value).__name__}, not a tensor")
            result: Tensor = functorch._remove_batch_dim(value, level, size, 0)
            return result
        finally:
            functorch._vmap_decrement_nesting()

    return batched


def _probe(fn: LossFn, row: Tensor, batched_value: Tensor) -> None:
    """A function that vmap traces without error can still mean something else per row (one
    that reads a global shape, say): check the first row against a direct evaluation."""
    direct = float(fn(row))
    value = float(batched_value)
    if not (
        abs(direct - value) <= VMAP_PROBE_RTOL * max(1.0, abs(direct))
        or (math.isnan(direct) and math.isnan(value))
        or direct == value
    ):
        raise VmapMismatch(f"vmap gave {value!r} where a direct evaluation gives {direct!r}")


def _loop(
    torch: Any, fn: LossFn, x64: Tensor, step: float, tracker: Tracker, reason: str
) -> Differences:
    work = x64.clone()
    flat = work.view(-1)
    n = flat.numel()
    out = torch.empty(n, dtype=torch.float64, device=x64.device)
    every, reported = max(1, n // 200), 0
    for i in range(n):
        original = float(flat[i])
        flat[i] = original + step
        plus = fn(work)
        flat[i] = original - step
        minus = fn(work)
        flat[i] = original
        out[i] = (plus.reshape(()) - minus.reshape(())) / (2 * step)
        if (i + 1) % every == 0 or i + 1 == n:
            tracker.advance(i + 1 - reported)
            reported = i + 1
    return Differences(
        grad=out.view(x64.shape),
        vectorised=False,
        pairs_per_batch=1,
        batches=n,
        buffer_bytes=work.numel() * work.element_size(),
        fallback=reason,
    )


# --- the comparisons --------------------------------------------------------------------------


@dataclass
class FiniteDiffOutcome:
    """What --reference finite-diff adds to a result."""

    comparisons: list[Comparison]
    block: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def evaluator(loss_def: Loss) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss as a plain function for numerical evaluation: a --target's own loss without the
    checks that only make sense for a tracked forward (Loss.evaluate), else the forward."""
    evaluate = getattr(loss_def, "evaluate", None)
    return evaluate if evaluate is not None else loss_def.forward


def check_against_fd(
    spec: CheckSpec,
    targets: Mapping[str, tuple[LossFn, Tensor, Mapping[str, Tensor]]],
    loss64: float,
    progress: Progress | None = None,
) -> FiniteDiffOutcome:
    """For each perturbed tensor (name → (loss as a function of it, its value, the gradients to
    check: label → tensor)), central differences and one Comparison per gradient."""
    torch = import_torch()
    rtol, atol = fd_tolerances(spec, loss64)
    tracker = Tracker(progress, sum(value.numel() for _, value, _ in targets.values()))
    comparisons: list[Comparison] = []
    notes: list[str] = []
    runs: list[Differences] = []
    single = list(targets) == ["predicted"]
    for name, (fn, value, gradients) in targets.items():
        diff = central_differences(fn, value, tracker=tracker)
        runs.append(diff)
        if diff.fallback is not None:
            notes.append(
                f"finite differences for {name} were evaluated element by element (slower): "
                f"torch.func.vmap could not evaluate the loss in batches ({diff.fallback})"
            )
        for label, grad in gradients.items():
            title = f"{label} vs finite-diff" if single else f"{name}: {label} vs finite-diff"
            comparisons.append(
                compare(title, grad.detach().to(torch.float64), diff.grad, rtol, atol, False)
            )
    elements = sum(d.grad.numel() for d in runs)
    block = {
        "method": "central differences in float64: (L(p + h·eᵢ) − L(p − h·eᵢ)) / 2h",
        "step": FD_STEP,
        "rtol": rtol,
        "atol": atol,
        "criterion": "|g − fd| ≤ atol + rtol·|fd| (gradcheck's test)",
        "elements": elements,
        "evaluations": 2 * elements,
        "vectorised": all(d.vectorised for d in runs),
        "pairs_per_batch": max(d.pairs_per_batch for d in runs),
        "batches": sum(d.batches for d in runs),
        "buffer_bytes": max(d.buffer_bytes for d in runs),
    }
    return FiniteDiffOutcome(comparisons, block, notes)


def plain_finite_diff(
    spec: CheckSpec,
    loss_def: Loss,
    predicted: Tensor,
    real: Tensor,
    gradients: Mapping[str, Tensor],
    progress: Progress | None = None,
) -> FiniteDiffOutcome:
    """The plain check: the loss as a function of predicted, real held fixed."""
    loss = evaluator(loss_def)
    real64 = to64(real)

    def fn(p: Tensor) -> Tensor:
        return loss(p, real64)

    torch = import_torch()
    with torch.no_grad():
        loss64 = float(fn(to64(predicted)))
    return check_against_fd(spec, {"predicted": (fn, predicted, gradients)}, loss64, progress)
