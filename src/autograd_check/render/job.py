"""A Slurm job as `submit`, `status` and `result` show it on stdout: the line naming the job above
its result, and its status."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from autograd_check.slurm.submission import hint_flags

if TYPE_CHECKING:
    from autograd_check.base.result import CheckResult
    from autograd_check.slurm.watch import JobStatus


def job_header(result: CheckResult, state: str | None, elapsed: float | None) -> str:
    """Slurm job 12 · node vm · partition debug · COMPLETED · waited 3.1 s"""
    slurm = result.environment.get("slurm") or {}
    parts = [f"Slurm job {slurm.get('job_id', '?')}"]
    if slurm.get("step_id"):
        parts[0] += f" step {slurm['step_id']}"
    parts.append(f"node {slurm.get('node') or result.environment.get('host', '?')}")
    if slurm.get("partition"):
        parts.append(f"partition {slurm['partition']}")
    if state:
        parts.append(state)
    if elapsed is not None:
        parts.append(f"waited {elapsed:.1f} s")
    return " · ".join(parts)


def print_status(found: JobStatus, log_dir: Path | None) -> None:
    """`status`: the state, where and how long, why it waits, its result and its logs."""
    job_id = found.job_id
    print(f"Slurm job {job_id}: {found.state}  (from {found.source})")
    for label, value, shown in (
        ("node", found.node, True),
        ("partition", found.partition, True),
        ("elapsed", found.elapsed, True),
        ("reason", found.reason, True),
        ("exit code", found.exit_code, found.finished),
    ):
        if value and shown:
            print(f"  {label:<10}{value}")
    if found.never_starts:
        print(f"  {'hint':<10}Slurm will never start it: {found.never_starts}; cancel it: "
              f"scancel {job_id}")
    ready = f"ready: autograd-check result {job_id}{hint_flags(log_dir)}"
    print(f"  {'result':<10}{ready if found.result_available else 'none yet'}")
    for label, path in found.logs.items():
        print(f"  {label:<10}{path or '(not written yet)'}")
