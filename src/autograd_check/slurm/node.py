"""The job itself, run on the node: `run_job(spec)` (what submitit pickles and runs), and its
answer as plain data turned back into a CheckResult (or the domain error) on this side."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any

from autograd_check.base.environment import slurm_ids
from autograd_check.base.errors import (
    EXIT_BAD_INPUT,
    BadInput,
    CheckError,
    EnvironmentProblem,
    JobFailed,
)
from autograd_check.base.result import CheckResult
from autograd_check.base.spec import build_spec
from autograd_check.distributed.rendezvous import RENDEZVOUS_ENV
from autograd_check.execute import execute


def error_envelope(error: CheckError) -> dict[str, Any]:
    return {
        "outcome": "error",
        "kind": type(error).__name__,
        "exit_code": error.exit_code,
        "message": str(error),
        "host": socket.gethostname(),
        "slurm": slurm_ids(),
    }


def plain(result: CheckResult) -> dict[str, Any]:
    """The result document with plain types only, in its own key order.

    torch.__version__ is a torch class: pickled as is, loading the answer would import torch on
    the submitting side (seconds of waiting for nothing). JSON keeps str, not the subclass; no
    sort_keys, so the tensors keep the order the view shows them in (real, predicted, ...).
    """
    data: dict[str, Any] = json.loads(json.dumps(result.to_dict()))
    return data


PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"
"""submitit's variable naming the signal Slurm sends before a time limit (--signal=USR2@90)."""


def stop_signal() -> signal.Signals:
    """The signal submitit asks Slurm to send before the time limit (USR2 unless told)."""
    name = "SIG" + os.environ.get(PREEMPT_SIGNAL_ENV, "USR2")
    found = getattr(signal, name, None)
    return found if isinstance(found, signal.Signals) else signal.SIGUSR2


class JobStopping(BaseException):
    """Slurm is stopping this job (its time limit is near, or it is preempted or signalled).

    Raised by the node's signal handler wherever the check happens to be, it is no Exception and
    no SystemExit: it passes every `except Exception` (the user's code, a sweep's per-case
    catch-all) and the target's SystemExit handling, so no check result and no record is ever
    made of it. `cause` is what submitit's own handler raised (its UncompletedJobError, or the
    SystemExit that ends the process after a requeue), raised again at the top of the job.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


Handler = Callable[[int, FrameType | None], Any]


@contextmanager
def stop_signal_escapes() -> Iterator[None]:
    """While the block runs, what submitit's handler of the stop signal raises (it checkpoints
    and requeues a Checkpointable call, then exits; or raises UncompletedJobError) reaches the
    block's caller as JobStopping, whatever code it interrupts; it leaves the block as submitit
    raised it. For sweep array tasks, whose records let a requeued task go on."""
    sig = stop_signal()
    previous = signal.getsignal(sig)
    if not callable(previous) or threading.current_thread() is not threading.main_thread():
        yield  # not under submitit (or not where a handler can be set): nothing to wrap
        return
    submitit_handler: Handler = previous

    def handler(signum: int, frame: FrameType | None) -> None:
        try:
            submitit_handler(signum, frame)
        except BaseException as e:  # noqa: BLE001  (every way it ends the job)
            raise JobStopping(e) from e

    signal.signal(sig, handler)
    try:
        yield
    except JobStopping as stopping:
        raise stopping.cause from None
    finally:
        signal.signal(sig, previous)


def let_slurm_end_it() -> None:
    """For a single check (`submit`): the stop signal is logged and otherwise ignored.

    submitit's handler would raise UncompletedJobError inside whatever runs (the user's loss,
    whose error then failed the check: a time limit read as a mismatch) or requeue the job to
    start the same check over. Instead the check goes on: it ends in time, or Slurm ends the job
    at its limit (TIMEOUT), preempts it (PREEMPTED, or requeues it when the cluster says so) or
    cancels it (CANCELLED). No result file is left, and `collect` reports Slurm's state and the
    log tail (exit 4). Nothing changes outside a submitit job (no handler of its own there)."""
    sig = stop_signal()
    if not callable(signal.getsignal(sig)):
        return

    def noted(signum: int, frame: FrameType | None) -> None:
        print(f"autograd-check: got {signal.Signals(signum).name} from Slurm: the job's time "
              "limit is near or it is being preempted; the check goes on until it ends or "
              "Slurm stops it", file=sys.stderr, flush=True)

    with suppress(ValueError):  # signal.signal works in the main thread only
        signal.signal(sig, noted)


def job_folder() -> Path:
    """The submitit job's log folder, seen by every task of the job."""
    # submitit loads only on a node
    import submitit

    return Path(submitit.JobEnvironment().paths.folder)


def run_job(spec_data: dict[str, Any]) -> dict[str, Any]:
    """What submitit runs on the node: execute(spec), answered as plain data.

    Domain errors (a shape that does not fit the node's memory, no GPU on the node) come back as
    data with their exit code rather than as a traceback; the result is a plain dict, so reading
    it back needs no matching class versions. A time limit, preemption or cancellation is never
    an answer: Slurm's state tells it (see let_slurm_end_it).
    """

    let_slurm_end_it()
    if spec_data.get("ranks") is not None:  # the ranks meet in the job's own (private) folder
        os.environ[RENDEZVOUS_ENV] = str(job_folder())
    try:
        result = execute(build_spec(spec_data))
    except CheckError as e:
        print(f"autograd-check: error: {e}", file=sys.stderr, flush=True)
        return error_envelope(e)
    verdict = "PASS" if result.passed else "FAIL"
    print(f"autograd-check: {verdict} on {result.environment.get('host')}", flush=True)
    return {"outcome": "result", "result": plain(result)}


def outcome_to_result(envelope: Mapping[str, Any], where: str) -> CheckResult:
    """The CheckResult of a job's answer, or its domain error raised again, here."""
    if envelope.get("outcome") == "result":
        return CheckResult.from_dict(envelope["result"])
    if envelope.get("outcome") == "error":
        kinds: dict[str, type[CheckError]] = {
            "BadInput": BadInput, "EnvironmentProblem": EnvironmentProblem, "JobFailed": JobFailed
        }
        error_class = kinds.get(str(envelope.get("kind")), CheckError)
        host = envelope.get("host") or "?"
        error = error_class(f"{envelope.get('message')} (on node {host}, {where})")
        if error_class is CheckError:
            error.exit_code = int(envelope.get("exit_code", EXIT_BAD_INPUT))
        raise error
    raise JobFailed(f"{where} answered something that is not a check result", state="FAILED")
