"""Exit codes and the domain errors that map onto them (one table, also in the README)."""

from __future__ import annotations

EXIT_PASS = 0
EXIT_MISMATCH = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_JOB_FAILED = 4
EXIT_NOT_ENDED = 5
EXIT_INTERRUPTED = 130
"""What a shell reports for a command stopped by Ctrl-C (128 + SIGINT); SIGTERM and SIGHUP are
treated alike."""
EXIT_BROKEN_PIPE = 141
"""stdout was closed before everything was written (`... | head`): what a shell reports for a
program killed by SIGPIPE (128 + 13). Never 1, which means a gradient mismatch."""

EXIT_CODES: dict[int, str] = {
    EXIT_PASS: "every check passed",
    EXIT_MISMATCH: "a gradient mismatch: the check ran and failed",
    EXIT_BAD_INPUT: "bad input: flags, shapes, config files (nothing was run), or tolerances "
    "too wide for the gradient (the check ran, and could not have failed)",
    EXIT_ENVIRONMENT: "environment: CUDA or Slurm not available, Slurm refused the job",
    EXIT_JOB_FAILED: "the Slurm job itself (or a rank of --ranks) failed, was cancelled, timed "
    "out or vanished",
    EXIT_NOT_ENDED: "the Slurm job has not ended yet: no result to show (`result ID --wait` "
    "waits for it)",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C, SIGTERM or SIGHUP): records kept, a Slurm job keeps "
    "running",
    EXIT_BROKEN_PIPE: "stdout was closed early (its reader, `head` say, stopped), as for a "
    "program killed by SIGPIPE",
}


EXIT_CODE_SHORT: dict[int, str] = {
    EXIT_PASS: "pass",
    EXIT_MISMATCH: "gradient mismatch",
    EXIT_BAD_INPUT: "bad input or tolerances too wide",
    EXIT_ENVIRONMENT: "environment (no CUDA/Slurm, job refused)",
    EXIT_JOB_FAILED: "Slurm job or rank failed/cancelled/timed out/vanished",
    EXIT_NOT_ENDED: "Slurm job still queued or running",
    EXIT_INTERRUPTED: "interrupted",
    EXIT_BROKEN_PIPE: "output closed early",
}
"""The same table in a few words, for the epilog of every --help (the same codes: a test checks)."""


class CheckError(Exception):
    """An expected failure: printed as one line at the CLI edge, never as a traceback."""

    exit_code = EXIT_BAD_INPUT


class BadInput(CheckError):
    """Flags, shapes or config files that cannot describe a check; nothing was run."""

    exit_code = EXIT_BAD_INPUT


class Inconclusive(BadInput, ValueError):
    """The check ran, but its tolerance is as large as the gradient it checks: a gradient off by
    half would pass, so a pass would prove nothing. Bad input in the sense of tolerances (or a
    dtype) that cannot describe a check of this gradient; a ValueError for check()'s callers."""


class EnvironmentProblem(CheckError):
    """CUDA or Slurm is not usable here, or Slurm refused the job."""

    exit_code = EXIT_ENVIRONMENT


class JobState(CheckError):
    """A Slurm job's answer is not a result: its state, and the tail of its log."""

    exit_code = EXIT_JOB_FAILED

    def __init__(self, message: str, *, state: str = "UNKNOWN", log_tail: str = "") -> None:
        super().__init__(message)
        self.state = state
        self.log_tail = log_tail


class JobFailed(JobState):
    """A Slurm job failed, was cancelled, timed out or vanished."""

    exit_code = EXIT_JOB_FAILED


class JobNotEnded(JobState):
    """A Slurm job is still queued or running: no result yet, and nothing has failed."""

    exit_code = EXIT_NOT_ENDED


class WaitStopped(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM, SIGHUP) while waiting for a Slurm job: only the wait stopped, the job
    goes on. A KeyboardInterrupt still, for any caller; the CLI shows its message (where the job
    is, how to get back to it) as a note and exits with EXIT_INTERRUPTED."""

    exit_code = EXIT_INTERRUPTED
