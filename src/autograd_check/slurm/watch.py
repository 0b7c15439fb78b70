"""Watching a job: scontrol/squeue while Slurm remembers it, sacct after, the log folder last;
waiting for it (every wait bounded) and collecting its result."""

from __future__ import annotations

import os
import pickle
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autograd_check.base.errors import EnvironmentProblem, JobFailed, JobNotEnded
from autograd_check.base.result import CheckResult
from autograd_check.base.safety import Unsafe, open_private
from autograd_check.slurm.admission import never_starts, reason_word
from autograd_check.slurm.commands import (
    CALL_FLOOR_S,
    CALL_TIMEOUT_S,
    JobInfo,
    array_task_job_id,
    blank_to_none,
    call_budget,
    have,
    parse_scontrol_record,
    require_slurm,
    run_command,
    state_word,
)
from autograd_check.slurm.log_dir import job_paths
from autograd_check.slurm.node import outcome_to_result
from autograd_check.slurm.tasks import dead_rank

POLL_FIRST_S = 0.2
POLL_MAX_S = 1.0
"""Polls start fast (a small check on an idle cluster ends in seconds) and settle at one a second:
a finished job is seen within about a second of its end, for one cheap scontrol call a second."""
RESULT_GRACE_S = 10.0
"""How long a finished job's result file may lag behind its state (shared filesystems cache)."""
VANISH_GRACE_S = 15.0
"""How long a job may be unknown to every source before it counts as vanished."""
LOG_TAIL_LINES = 15
STATUS_TIMEOUT_S = 6.0
"""How long `status` (and `result --wait`'s first look) asks Slurm in all: each of scontrol,
squeue and sacct gets what is left of it, at least CALL_FLOOR_S, so a hung controller is told in
about 8 s rather than 3 x CALL_TIMEOUT_S."""


def scontrol_info(job_id: str, timeout: float = CALL_TIMEOUT_S) -> JobInfo | None:
    done = run_command(["scontrol", "show", "job", "-o", job_id], timeout)
    if done is None:
        return None
    for line in done.stdout.splitlines():
        rec = parse_scontrol_record(line)
        if rec.get("JobId") == job_id.split("_")[0] or array_task_job_id(rec) == job_id:
            return JobInfo(
                job_id=job_id,
                state=state_word(rec.get("JobState", "")),
                source="scontrol",
                node=blank_to_none(rec.get("NodeList")) or blank_to_none(rec.get("BatchHost")),
                reason=blank_to_none(rec.get("Reason")),
                elapsed=blank_to_none(rec.get("RunTime")),
                exit_code=blank_to_none(rec.get("ExitCode")),
                partition=blank_to_none(rec.get("Partition")),
            )
    return None


def squeue_info(job_id: str, timeout: float = CALL_TIMEOUT_S) -> JobInfo | None:
    done = run_command(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%i|%T|%N|%r|%M|%P"],
                       timeout)
    if done is None:
        return None
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 6 and parts[0] == job_id:
            return JobInfo(
                job_id=job_id,
                state=state_word(parts[1]),
                source="squeue",
                node=blank_to_none(parts[2]),
                reason=blank_to_none(parts[3]),
                elapsed=blank_to_none(parts[4]),
                partition=blank_to_none(parts[5]),
            )
    return None


SACCT_FIELDS = "JobID,State,NodeList,Elapsed,ExitCode,Reason,Partition"


def sacct_info(job_id: str, timeout: float = CALL_TIMEOUT_S) -> JobInfo | None:
    """From accounting; None when accounting is off or does not (yet) know the job."""
    done = run_command(["sacct", "-X", "-n", "-P", "-j", job_id, "-o", SACCT_FIELDS], timeout)
    if done is None:
        return None
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 7 and parts[0] == job_id:
            return JobInfo(
                job_id=job_id,
                state=state_word(parts[1]),
                source="sacct",
                node=blank_to_none(parts[2]) if parts[2] != "None assigned" else None,
                elapsed=blank_to_none(parts[3]),
                exit_code=blank_to_none(parts[4]),
                reason=blank_to_none(parts[5]),
                partition=blank_to_none(parts[6]),
            )
    return None


def job_info(job_id: str, deadline: float | None = None) -> JobInfo | None:
    """The job's state: the controller first (it knows at once when a job ends; squeue when
    scontrol is missing), then accounting (it remembers jobs the controller has forgotten).
    Each command gets at most what is left until `deadline` (see call_budget)."""
    return (
        scontrol_info(job_id, call_budget(deadline))
        or squeue_info(job_id, call_budget(deadline))
        or sacct_info(job_id, call_budget(deadline))
    )


def accounting_status() -> tuple[bool, str]:
    """(whether sacct answers, in a few words)."""
    if not have("sacct"):
        return False, "sacct not found"
    try:
        done = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "JobID", "-S", "now-1minutes"],
            capture_output=True, text=True, timeout=15, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"sacct did not answer ({e})"
    if done.returncode == 0:
        return True, "sacct works"
    return False, (done.stderr.strip().splitlines() or ["sacct failed"])[-1]


def log_tail(paths: Any, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of the job's stderr log, or of its stdout log when stderr is empty."""
    for path in (paths.stderr, paths.stdout):
        try:
            text = Path(path).read_text(errors="replace")
        except OSError:
            continue
        if text.strip():
            tail = text.rstrip().splitlines()[-lines:]
            return f"{path}:\n" + "\n".join(tail)
    return ""


def with_dead_rank(message: str, folder: Path, job_id: str, paths: Any) -> tuple[str, str]:
    """A failed job's message and log tail; for a job over ranks, with the rank that srun saw
    end first named, and the last lines of that rank's own logs after task 0's."""
    tail = log_tail(paths)
    try:
        task0 = Path(paths.stderr).read_text(errors="replace")
    except OSError:
        return message, tail
    dead = dead_rank(folder, job_id, task0)
    if dead is None:
        return message, tail
    said, own = dead
    return f"{message}: {said}", "\n".join(t for t in (tail, own) if t)


ProgressFn = Callable[[JobInfo, float], None]


def wait_for_job(
    job_id: str,
    folder: Path,
    timeout: float,
    on_update: ProgressFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JobInfo:
    """Watch a job until it has a result or ends; every wait is bounded by `timeout` seconds.

    Every Slurm command run while waiting gets at most what is left of `timeout` (at least
    CALL_FLOOR_S), and so does the grace for the result file: the wait ends within a few seconds
    of `timeout` even when Slurm's commands hang. Returns the last state seen (COMPLETED when the
    result file is there). Raises EnvironmentProblem when the job can never start (it is then
    cancelled); JobFailed when it vanished, or when the wait ran out while the job was still
    queued or running (the job itself is left alone).
    """
    paths = job_paths(folder, job_id)
    start = time.monotonic()
    deadline = start + timeout
    interval = POLL_FIRST_S
    unknown_since: float | None = None
    checked_reason: str | None = None
    info = JobInfo(job_id, "PENDING", "submitted")
    while True:
        now = time.monotonic()
        if paths.result_pickle.exists():
            # The result is written (atomically, by a rename) when the check returns: no need
            # to wait for Slurm to finish tidying up the job.
            done = JobInfo(**{**vars(info), "state": "COMPLETED", "source": "result file"})
            if on_update:
                on_update(done, now - start)
            return done
        seen = job_info(job_id, deadline)
        now = time.monotonic()  # after asking: a slow controller must not stretch the bound
        if seen is not None:
            info, unknown_since = seen, None
            if info.state == "PENDING" and info.reason and info.reason != checked_reason:
                # Asked again only when the reason changes: most reasons are an ordinary wait.
                checked_reason = info.reason
                why = never_starts(info, deadline)
                if why is not None:
                    run_command(["scancel", job_id], call_budget(deadline))
                    raise EnvironmentProblem(
                        f"Slurm will never start job {job_id}: it is PENDING "
                        f"({reason_word(info.reason)}): {why}; the job was cancelled"
                    )
            if info.finished:
                if on_update:
                    on_update(info, now - start)
                return _settle(info, paths, sleep, deadline)
        elif unknown_since is None:
            unknown_since = now
        elif now - unknown_since > VANISH_GRACE_S:
            raise JobFailed(
                f"Slurm job {job_id} vanished: neither scontrol, squeue nor sacct knows it and it "
                f"left no result in {folder}",
                state="VANISHED",
                log_tail=log_tail(paths),
            )
        if on_update:
            on_update(info, now - start)
        if now >= deadline:
            raise JobFailed(
                f"gave up waiting after {timeout:g} s: Slurm job {job_id} is still {info.state}"
                + (f" ({info.reason})" if info.reason else "")
                + f"; it was left alone: see `autograd-check result {job_id}` later",
                state=info.state,
            )
        sleep(max(0.0, min(interval, deadline - now)))
        interval = min(interval * 1.5, POLL_MAX_S)


def _settle(
    info: JobInfo, paths: Any, sleep: Callable[[float], None], deadline: float | None = None
) -> JobInfo:
    """A job Slurm says has ended: give its result file a moment to show up (shared filesystems
    can lag), unless the job failed outright; RESULT_GRACE_S at most, and no later than
    `deadline` (or CALL_FLOOR_S from now, when that is later)."""
    if info.failed:
        return info
    now = time.monotonic()
    until = now + RESULT_GRACE_S
    if deadline is not None:
        until = min(until, max(deadline, now + CALL_FLOOR_S))
    while not paths.result_pickle.exists() and time.monotonic() < until:
        sleep(max(0.0, min(0.2, until - time.monotonic())))
    return info


def load_outcome(folder: Path, job_id: str) -> tuple[str, Any] | None:
    """submitit's ("success", answer) or ("error", traceback) for the job, or None if absent.

    Only from a file that nobody but you could have written, in a folder that nobody but you
    (and root) can change all the way from /, and only what was checked: the file is opened
    through directory descriptors and checked on its own descriptor, and that descriptor is what
    is unpickled (safety.open_private). EnvironmentProblem (exit 3) otherwise.
    """
    paths = job_paths(folder, job_id)
    if not os.path.lexists(paths.result_pickle):
        return None
    try:
        fd = open_private(paths.result_pickle)
    except Unsafe as e:
        raise EnvironmentProblem(
            f"result file {str(paths.result_pickle)!r} not loaded: {e}; results are pickles, so "
            "they are only loaded from a private folder that only you (and root) can change all "
            "the way from / (chmod go-w), and from a plain file of yours"
        ) from None
    except OSError as e:
        raise EnvironmentProblem(
            f"result file {str(paths.result_pickle)!r} cannot be read: {e.strerror or e}"
        ) from None
    try:
        with os.fdopen(fd, "rb") as f:
            outcome = pickle.load(f)
    except Exception as e:  # noqa: BLE001  (unpickling a cut file raises almost anything)
        raise EnvironmentProblem(
            f"the result file {paths.result_pickle} cannot be read ({type(e).__name__}: "
            f"{' '.join(str(e).split())[:200] or 'no detail'}): was it cut short (a full disk, "
            "a copy) or written by another version? The job's log may still show its result"
        ) from None
    if (not isinstance(outcome, tuple) or len(outcome) != 2 or outcome[0] not in ("success",
            "error") or (outcome[0] == "success" and not isinstance(outcome[1], dict))):
        raise EnvironmentProblem(
            f"the result file {paths.result_pickle} does not hold a job's answer "
            f"(it holds {type(outcome).__name__}); was it written by another program?"
        )
    return outcome


def stopped_state(traceback_text: str) -> str | None:
    """TIMEOUT or PREEMPTED when a job's error is submitit's UncompletedJobError (raised by its
    handler of Slurm's warning signal: 'timed-out and not checkpointable', 'timed-out too many
    times', ...); None for any other error."""
    if "UncompletedJobError" not in traceback_text or "not requeued" not in traceback_text:
        return None
    return "TIMEOUT" if "timed-out" in traceback_text else "PREEMPTED"


def collect(job_id: str, folder: Path, info: JobInfo | None = None) -> CheckResult:
    """The job's CheckResult, its domain error raised here, or JobFailed with state and log."""
    paths = job_paths(folder, job_id)
    where = f"Slurm job {job_id}"
    outcome = load_outcome(folder, job_id)
    if outcome is None:
        info = info or job_info(job_id)
        state = info.state if info else "UNKNOWN"
        if info is not None and not info.finished:
            raise JobNotEnded(
                f"{where} is {state}" + (f" ({info.reason})" if info.reason else "")
                + ": no result yet; wait for it with `autograd-check result "
                + f"{job_id} --wait`",
                state=state,
                log_tail=log_tail(paths),
            )
        detail = {
            "COMPLETED": f"completed without leaving a result in {folder} (is that folder on "
            "a filesystem the node shares?)",
            "CANCELLED": "was cancelled",
            "TIMEOUT": "ran out of time (raise --time)",
            "OUT_OF_MEMORY": "ran out of memory (raise --mem, or choose a smaller --shape)",
            "NODE_FAIL": "lost its node",
            "PREEMPTED": "was preempted",
            "UNKNOWN": f"is unknown to Slurm and left no result in {folder}",
        }.get(state, "failed")
        exit_part = f", exit code {info.exit_code}" if info and info.exit_code else ""
        message, tail = with_dead_rank(f"{where} {detail} (state {state}{exit_part})", folder,
                                       job_id, paths)
        raise JobFailed(message, state=state, log_tail=tail)
    status, answer = outcome
    if status != "success":
        last = [ln for ln in str(answer).strip().splitlines() if ln.strip()][-1:] or ["?"]
        stopped = stopped_state(str(answer))
        if stopped is not None:
            # submitit's own handler of Slurm's warning signal ended the job (a job of an older
            # version, or an array task out of requeues): a time limit, never the check's error.
            seen = info if info is not None and info.finished else job_info(job_id)
            # FAILED is only how submitit's exception ended the process: the cause is the signal.
            state = seen.state if seen and seen.failed and seen.state != "FAILED" else stopped
            raise JobFailed(
                f"{where} was stopped by Slurm before the check ended (state {state}): "
                f"{last[0].strip()}" + (" (raise --time)" if state == "TIMEOUT" else ""),
                state=state,
                log_tail=log_tail(paths) or str(answer)[-2000:],
            )
        message, tail = with_dead_rank(
            f"{where} failed with an exception on the node: {last[0].strip()}", folder, job_id,
            paths)
        raise JobFailed(message, state="FAILED", log_tail=tail or str(answer)[-2000:])
    return outcome_to_result(answer, where)


@dataclass
class JobStatus:
    """Where a job is, as `autograd-check status` shows it: its state from the best source that
    knows it (scontrol, squeue, sacct; else the result file in the log folder), and its files."""

    job_id: str
    state: str
    source: str
    """scontrol, squeue, sacct, "result file", or "nothing"."""
    log_dir: str
    result_available: bool
    logs: dict[str, str | None] = field(default_factory=dict)
    """stdout, stderr and script: the path when the file exists, else None."""
    node: str | None = None
    partition: str | None = None
    elapsed: str | None = None
    reason: str | None = None
    exit_code: str | None = None
    never_starts: str | None = None
    """Why Slurm will never start this pending job (see admission.never_starts), else None."""
    finished: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The `job` block of `status --json`."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "source": self.source,
            "node": self.node,
            "partition": self.partition,
            "elapsed": self.elapsed,
            "reason": self.reason,
            "never_starts": self.never_starts,
            "exit_code": self.exit_code,
            "result_available": self.result_available,
            "log_dir": self.log_dir,
            "logs": dict(self.logs),
        }


def job_status(job_id: str, folder: Path) -> JobStatus:
    """The job's status: Slurm's word first, the log folder's files when Slurm has forgotten it.

    Raises EnvironmentProblem when no Slurm command is here and the folder does not exist, and
    JobFailed (state UNKNOWN) when neither Slurm nor the folder knows the job."""
    if not any(have(t) for t in ("scontrol", "squeue", "sacct")) and not folder.is_dir():
        require_slurm("scontrol")
    deadline = time.monotonic() + STATUS_TIMEOUT_S
    info = job_info(job_id, deadline)
    paths = job_paths(folder, job_id)
    has_result = paths.result_pickle.exists()
    logs = {
        "stdout": str(paths.stdout) if paths.stdout.exists() else None,
        "stderr": str(paths.stderr) if paths.stderr.exists() else None,
        "script": str(paths.submission_file) if paths.submission_file.exists() else None,
    }
    if info is None:
        if not has_result and not any(logs.values()):
            if time.monotonic() >= deadline:  # they did not answer: that is not "unknown"
                raise EnvironmentProblem(
                    f"Slurm did not answer about job {job_id} within {STATUS_TIMEOUT_S:g} s "
                    "(scontrol, squeue and sacct timed out): is its controller up? Try again "
                    "later"
                )
            raise JobFailed(
                f"Slurm job {job_id} is unknown: not in the queue, not in accounting, and nothing "
                f"in {folder} (another --log-dir?)",
                state="UNKNOWN",
            )
        return JobStatus(
            job_id, "COMPLETED" if has_result else "UNKNOWN",
            "result file" if has_result else "nothing", str(folder), has_result, logs,
        )
    return JobStatus(
        job_id, info.state, info.source, str(folder), has_result, logs,
        node=info.node, partition=info.partition, elapsed=info.elapsed, reason=info.reason,
        exit_code=info.exit_code, never_starts=never_starts(info), finished=info.finished,
    )
