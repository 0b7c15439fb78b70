"""run --ranks N here: N processes on this machine, one per rank, bounded by a timeout.

The ranks are forked from multiprocessing's fork server (on the CPU): a fresh process that loads
torch and what DDP loads (torch._dynamo) once, then forks each rank from that clean state, so the
ranks start at once and in parallel, never from the caller's own process. A fork of the caller
would inherit its threads' locks (a progress bar's, torch's intra-op pool after the caller
computed anything, a test runner's): a rank then hangs in its first op. The fork server starts
once per process and serves every later check (a sweep's cases). With CUDA the ranks are spawned
fresh, since a forked child cannot use CUDA. Each rank's stdout and stderr go to its own
log in a private temporary folder, which is also where rank 0 announces its port. The parent
watches them: when a rank dies, the others are stopped and the error names the rank with the tail
of its log (JobFailed, exit 4); so it is when any rank is still running at the timeout. A rank
whose user code raised (a --target's train_step, say) reports that error: a failed check, exit 1.
A rank writes its answer as soon as the verdict is known, before it tears down torch.distributed
(which can hang: on torch 2.4.1 destroy_process_group deadlocked in 5 of 13 runs, the main thread
holding the GIL that gloo's worker thread waited for); once every rank has answered, the ranks
have TEARDOWN_GRACE_S to end, then the rest are stopped and the result says so in a note. A rank
that ends without an answer (os._exit(0) in the user's code, say) died, whatever its exit code.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from autograd_check.base.errors import BadInput, CheckError, EnvironmentProblem, JobFailed
from autograd_check.base.lazy_torch import import_torch
from autograd_check.base.result import CheckResult
from autograd_check.base.spec import CheckSpec, build_spec
from autograd_check.base.torch_features import require_parallel
from autograd_check.distributed.rank import RankRaised, rank_main
from autograd_check.distributed.rendezvous import Identity, LostContact, slurm_identity
from autograd_check.distributed.verdict import failed_result
from autograd_check.losses.user import TargetRaised

DEFAULT_RANKS_TIMEOUT_S = 600.0
LOG_TAIL_LINES = 20
POLL_S = 0.02
DEATH_GRACE_S = 0.2
"""After a rank ends early, how long the others have to end before they are stopped."""
PROBE_S = 0.5
"""At the timeout, how long a rank has to answer SIGUSR1 from Python (see _probe)."""
PROBE_FRAMES = 4
"""How many of its innermost frames a rank still running at the timeout writes to its log."""
WAITING = ": one may be stuck and the others waiting for it in a collective"
TEARDOWN_GRACE_S = 3.0
"""Once every rank has answered, how long they have to tear down and end before they are
stopped (the verdict is known: nothing of the check is lost)."""
SLURM_GRACE_S = 10.0
"""A Slurm rank that lost contact with another: how long it leaves Slurm to end the step."""
_ERRORS: dict[str, type[CheckError]] = {
    "BadInput": BadInput, "EnvironmentProblem": EnvironmentProblem, "JobFailed": JobFailed,
    "LostContact": LostContact,
}


def execute_ranks(spec: CheckSpec, timeout: float | None = None) -> CheckResult:
    """The check over spec.ranks ranks: as one of them when this process is a task of a Slurm
    job or step started for it (slurm_identity), else by starting them here."""
    assert spec.ranks is not None
    require_parallel(spec.parallel, spec.device)  # one line, exit 3, before any rank starts
    identity = slurm_identity(spec.ranks)
    if identity is None:
        return run_ranks_here(spec, DEFAULT_RANKS_TIMEOUT_S if timeout is None else timeout)
    torch = import_torch()
    with torch.inference_mode(False), torch.enable_grad():
        try:
            return rank_main(spec, identity)
        except TargetRaised as e:
            return failed_result(spec, str(e), *raised_on(e))
        except LostContact:
            # Another rank died: Slurm ends the step for it (--kill-on-bad-exit), and its state
            # and log then say which rank and how. This rank answers only if Slurm does not.
            time.sleep(SLURM_GRACE_S)
            raise


def raised_on(error: TargetRaised) -> tuple[int | None, str | None]:
    """The rank the user's error was raised on, and its host (None, None when every rank raised
    it alike: the ranks built different modules)."""
    return (error.rank, error.host) if isinstance(error, RankRaised) else (None, None)


def run_ranks_here(spec: CheckSpec, timeout: float = DEFAULT_RANKS_TIMEOUT_S) -> CheckResult:
    """The check over spec.ranks local processes; rank 0's result."""
    assert spec.ranks is not None
    folder = Path(tempfile.mkdtemp(prefix="autograd-check-ranks-"))  # 0700: private
    context: Any
    if spec.device.startswith("cuda"):
        context = multiprocessing.get_context("spawn")
    else:
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(preload(spec.parallel or "ddp"))
    procs = []
    here = _working_folder()
    try:
        for rank in range(spec.ranks):
            identity = Identity(rank, spec.ranks, rank, folder, "rendezvous.json", "127.0.0.1")
            proc = context.Process(
                target=rank_process, args=(spec.to_dict(), identity, here),
                name=f"autograd-check rank {rank}", daemon=True)
            with _started_from_root():
                proc.start()
            procs.append(proc)
        stopped = _watch(procs, folder, timeout)
        result = _outcome(folder, spec.ranks)
        # those still tearing down torch.distributed (the others waited for them to say goodbye)
        stuck = [r for r in stopped if not (folder / f"down-{r}").exists()] or stopped
        if stuck:
            many = len(stuck) > 1
            result.notes.append(
                f"rank{'s' * many} {', '.join(map(str, stuck))} of {spec.ranks} had not ended "
                f"{TEARDOWN_GRACE_S:g} s after every rank had the verdict (stuck tearing down "
                f"torch.distributed) and {'were' if many else 'was'} stopped; the verdict stands")
        return result
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
            proc.join()
        shutil.rmtree(folder, ignore_errors=True)


def _working_folder() -> str | None:
    try:
        return os.getcwd()
    except OSError:
        return None  # removed under us: the rank stays in /


@contextlib.contextmanager
def _started_from_root() -> Iterator[None]:
    """Start the fork server (or, with CUDA, a spawned rank) in /, then come back here.

    multiprocessing starts them as `python -c ...`, which puts the working folder ('') first on
    sys.path until they take the parent's path: a `multiprocessing/` (or `socket.py`, ...)
    planted there by another user would be imported, and run as you, first. -P and
    PYTHONSAFEPATH exist only from Python 3.11 and the argv is multiprocessing's, so on every
    version the new interpreter starts in / (root's: nobody else can plant anything there); each
    rank goes back to this folder itself (rank_process). chdir is the process's: for these few
    milliseconds a relative path in another thread of this process would resolve from /."""
    # fchdir back even if renamed meanwhile; O_PATH: a folder you may search but not read is fine
    back = os.open(".", getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY)
    try:
        os.chdir("/")
        yield
    finally:
        os.fchdir(back)
        os.close(back)


def preload(parallel: str) -> list[str]:
    """What the fork server loads before it forks the ranks (when it starts): torch, quietly
    (distributed/preload.py), the ranks' code, torch.distributed, and torch._dynamo, which
    DDP's constructor loads (0.9 s, 800 modules): once there, not once per rank. FSDP's modules
    (0.4 s) only for --parallel fsdp."""
    modules = ["autograd_check.distributed.preload", "autograd_check.distributed.launch",
               "torch._dynamo", "torch.nn.parallel"]
    return [*modules, "torch.distributed.fsdp"] if parallel == "fsdp" else modules


def rank_process(spec_data: dict[str, Any], identity: Identity, cwd: str | None = None) -> None:
    """A local rank: its output to its own log, its outcome to a file, its exit code as for
    the check (0 pass, 1 mismatch or the user's error, 2+ for the rest). It runs in `cwd`, the
    caller's folder (its fork server was started in /, see _started_from_root)."""
    if cwd is not None:
        with contextlib.suppress(OSError):
            os.chdir(cwd)
    log = identity.folder / f"rank-{identity.rank}.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _answer_probe(identity)
    code = 0
    torch = import_torch()
    answer = identity.folder / f"outcome-{identity.rank}.json"

    def answered(result: CheckResult) -> None:  # before the teardown, which may hang
        _write(answer, json.dumps({"outcome": "result", "result": result.to_dict()}))

    try:
        with torch.inference_mode(False), torch.enable_grad():
            result = rank_main(build_spec(spec_data), identity, answered,
                               (identity.folder / f"down-{identity.rank}").touch)
        outcome: dict[str, Any] | None = None  # written by answered()
        code = result.exit_code
    except TargetRaised as e:  # the user's own code: a failed check, as without --ranks
        failed = failed_result(build_spec(spec_data), str(e), *raised_on(e))
        outcome = {"outcome": "result", "result": failed.to_dict()}
        code = 1
    except CheckError as e:
        outcome = {"outcome": "error", "kind": type(e).__name__, "message": str(e),
                   "exit_code": e.exit_code}
        code = e.exit_code
    except BaseException as e:  # noqa: BLE001  (the parent reports it with this rank's log)
        traceback.print_exc()
        print(f"rank {identity.rank}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        os._exit(3)
    if outcome is not None:
        _write(answer, json.dumps(outcome))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no atexit of the fork server's copy: the outcome file is the answer


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _watch(procs: list[Any], folder: Path, timeout: float) -> list[int]:
    """Return when every rank has ended, or TEARDOWN_GRACE_S after every rank answered: then the
    ranks that had not ended, which were stopped. JobFailed when one died or the time ran out."""
    deadline = time.monotonic() + timeout
    answered_at: float | None = None
    while True:
        running = [p for p in procs if p.exitcode is None]
        answered = [(folder / f"outcome-{r}.json").exists() for r in range(len(procs))]
        if any(p.exitcode is not None and (p.exitcode != 0 or not answered[r])
               for r, p in enumerate(procs)):
            # A rank ended early: the others would wait for it in a collective, or fail in one
            # (a peer's death reads as a broken connection there). A moment for them to end,
            # then the rank that died without answering is told from those it took down.
            time.sleep(DEATH_GRACE_S)
            ended = {r: p.exitcode for r, p in enumerate(procs) if p.exitcode is not None}
            _stop(procs)
            died = [r for r in ended if not (folder / f"outcome-{r}.json").exists()]
            if not died:
                return []  # every rank that ended answered (its own error, a failed check)
            rank = min(died, key=lambda r: (ended[r] >= 0, r))  # one killed by a signal first
            raise JobFailed(f"rank {rank} of {len(procs)} {_death(ended[rank])} before the "
                            "check ended; the other ranks were stopped",
                            state="FAILED", log_tail=tail(folder, rank))
        if not running:
            return []
        if all(answered):
            answered_at = time.monotonic() if answered_at is None else answered_at
            if time.monotonic() - answered_at > TEARDOWN_GRACE_S:
                stuck = [r for r, p in enumerate(procs) if p.exitcode is None]
                _stop(procs)
                return stuck
        elif time.monotonic() > deadline:
            late = [i for i, p in enumerate(procs) if p in running]
            busy = _probe(procs, late, folder)
            _stop(procs)
            if busy and len(busy) < len(late):
                raise JobFailed(
                    f"rank{'s' * (len(busy) > 1)} {', '.join(map(str, busy))} of {len(procs)} "
                    f"did not finish within {timeout:g} s (--timeout): still in its own code "
                    "while the other ranks waited for it in a collective; every rank was stopped",
                    state="TIMEOUT", log_tail=tail(folder, busy[0]))
            raise JobFailed(
                f"rank{'s' * (len(late) > 1)} {', '.join(map(str, late))} of {len(procs)} did "
                f"not finish within {timeout:g} s (--timeout){WAITING * (len(late) > 1)}; "
                "every rank was stopped", state="TIMEOUT",
                log_tail="\n".join(t for t in (tail(folder, r) for r in late) if t))
        time.sleep(POLL_S)


def _probe(procs: list[Any], late: list[int], folder: Path) -> list[int]:
    """The late ranks still running Python code: each answers SIGUSR1 from Python, which a rank
    blocked in a collective (waiting, in C++, for the others) cannot do until it returns. A rank
    that answers writes where it is to its log (for the tail) and a file the parent reads."""
    for rank in late:
        with contextlib.suppress(ProcessLookupError):
            os.kill(procs[rank].pid, signal.SIGUSR1)
    deadline = time.monotonic() + PROBE_S
    while time.monotonic() < deadline:
        busy = [r for r in late if (folder / f"busy-{r}").exists()]
        if len(busy) == len(late):
            break
        time.sleep(POLL_S)
    return [r for r in late if (folder / f"busy-{r}").exists()]


def _answer_probe(identity: Identity) -> None:
    """In a rank: answer _probe's SIGUSR1 (from Python) with where this rank is."""

    def answer(signum: int, frame: Any) -> None:
        print("still running at --timeout, in:", file=sys.stderr)
        traceback.print_stack(frame, limit=PROBE_FRAMES, file=sys.stderr)
        sys.stderr.flush()
        (identity.folder / f"busy-{identity.rank}").touch()

    signal.signal(signal.SIGUSR1, answer)


def _death(code: int) -> str:
    if code == 0:
        return "exited with code 0 without an answer"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def _stop(procs: list[Any]) -> None:
    for proc in procs:
        if proc.exitcode is None:
            proc.kill()
    for proc in procs:
        proc.join()


def tail(folder: Path, rank: int) -> str:
    try:
        text = (folder / f"rank-{rank}.log").read_text(errors="replace")
    except OSError:
        return ""
    lines = text.strip().splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(f"[rank {rank}] {line}" for line in lines)


def _raised_on_their_own(files: list[Path]) -> list[int]:
    """The ranks whose own user code raised (not those that only echo another rank's error)."""
    raised = []
    for rank, path in enumerate(files):
        if path.exists():
            result = json.loads(path.read_text()).get("result") or {}
            where = (result.get("distributed") or {}).get("raised_on") or {}
            if where.get("rank") == rank:
                raised.append(rank)
    return raised


def _outcome(folder: Path, world: int) -> CheckResult:
    """Rank 0's answer when it gave one, else the first answering rank's: a result (a failed
    check when the user's own code raised) or a domain error raised again here."""
    files = [folder / f"outcome-{r}.json" for r in range(world)]
    answers = [json.loads(f.read_text()) for f in files if f.exists()]
    if not answers:
        raise JobFailed(f"no rank of {world} answered", state="FAILED", log_tail=tail(folder, 0))
    # a rank that lost contact with another only echoes how that one ended: its answer first
    first = next((a for a in answers if a.get("kind") != "LostContact"), answers[0])
    if first["outcome"] == "result":
        result = CheckResult.from_dict(first["result"])
        raised = _raised_on_their_own(files)
        if len(raised) > 1:
            ranks = ", ".join(map(str, raised))
            result.notes.append(f"the target's own code raised on ranks {ranks} of {world}; the "
                                f"error shown is rank {raised[0]}'s")
        return result
    error = _ERRORS.get(first["kind"], CheckError)(first["message"])
    error.exit_code = int(first["exit_code"])
    raise error
