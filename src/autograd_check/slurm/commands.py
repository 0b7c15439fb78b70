"""Asking Slurm: which of its tools are on PATH, the bounded command runner every module shares
(`run_command`, `call_budget`), reading what scontrol, squeue and sacct print, and JobInfo, a
job's state as they report it."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from autograd_check.base.errors import EnvironmentProblem

CALL_TIMEOUT_S = 15.0
"""The most any one Slurm command (scontrol, squeue, sacct, sinfo, scancel) may take."""
CALL_FLOOR_S = 1.0
"""The least a Slurm command run while waiting gets, even when the wait's --timeout is spent."""

ACTIVE_STATES = frozenset(
    {
        "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED",
        "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
        "SPECIAL_EXIT", "RESV_DEL_HOLD", "UNKNOWN",
    }
)
FAILED_STATES = frozenset(
    {
        "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
        "BOOT_FAIL", "DEADLINE", "REVOKED",
    }
)


def have(tool: str) -> bool:
    """Whether Slurm's `tool` is on PATH."""
    return shutil.which(tool) is not None


def require_slurm(*tools: str) -> None:
    """EnvironmentProblem (exit 3) unless every one of `tools` is on PATH."""
    missing = [t for t in tools if not have(t)]
    if missing:
        raise EnvironmentProblem(
            f"Slurm is not available here ({' and '.join(missing)} not found on PATH); "
            "run the check on this machine with `autograd-check run`"
        )


@dataclass
class JobInfo:
    job_id: str
    state: str
    source: str
    node: str | None = None
    reason: str | None = None
    elapsed: str | None = None
    exit_code: str | None = None
    partition: str | None = None

    @property
    def finished(self) -> bool:
        return self.state not in ACTIVE_STATES

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES


def run_command(
    cmd: Sequence[str], timeout: float = CALL_TIMEOUT_S
) -> subprocess.CompletedProcess[str] | None:
    """A Slurm command's output, or None when it is missing, hangs, or fails."""
    try:
        done = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done if done.returncode == 0 else None


def blank_to_none(value: str | None) -> str | None:
    """None for what Slurm's commands print when a field has no value."""
    return None if value in (None, "", "(null)", "None", "N/A") else value


def parse_scontrol_record(line: str) -> dict[str, str]:
    """`scontrol show ... -o` prints one record per line as Key=Value pairs."""
    return dict(re.findall(r"(?:^|\s)([A-Za-z][A-Za-z0-9_/:.]*)=(\S*)", line))


def state_word(text: str) -> str:
    """A job's state as one word ('CANCELLED by 0' → 'CANCELLED')."""
    # sacct writes "CANCELLED by 0"; scontrol may add flags after '+'.
    return text.split()[0].split("+")[0].upper() if text.strip() else "UNKNOWN"


def call_budget(deadline: float | None) -> float:
    """A Slurm command's timeout: CALL_TIMEOUT_S, or what is left until `deadline` (monotonic
    time), but at least CALL_FLOOR_S so that a command started near the deadline can answer."""
    if deadline is None:
        return CALL_TIMEOUT_S
    return max(CALL_FLOOR_S, min(CALL_TIMEOUT_S, deadline - time.monotonic()))


def array_task_job_id(rec: Mapping[str, str]) -> str | None:
    """An array task's job id as Slurm writes it ("123_4"); None for other jobs."""
    if rec.get("ArrayJobId") and rec.get("ArrayTaskId"):
        return f"{rec['ArrayJobId']}_{rec['ArrayTaskId']}"
    return None


def slurm_mb(text: str | None) -> int | None:
    """Slurm's 500M, 7.81G, 8000 (MB) → MB."""
    if not text:
        return None
    match = re.fullmatch(r"([\d.]+)([KMGTP]?)", text.strip())
    if not match:
        return None
    factor = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3}[match.group(2)]
    return int(float(match.group(1)) * factor)
