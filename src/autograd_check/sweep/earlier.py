"""An earlier submission into DIR, seen before a sweep starts: one still running is refused (an
earlier job array is cancelled first with --force), one killed outright is tidied up, and one
that ended is resumed from: only cases without a credited record run, and the records that are
not credited (failed ones on --rerun-failed, unreadable ones, another grid's or another user's)
are moved aside to run again.

Nothing here prints: notes go to `on_note`. Called by launch.start_sweep under DIR's lock.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from autograd_check.base.errors import BadInput
from autograd_check.base.process import pid_alive
from autograd_check.slurm.arrays import JobIdentity, cancel_arrays, job_identities, live_tasks
from autograd_check.sweep.grid import Case
from autograd_check.sweep.plan import Plan
from autograd_check.sweep.store import FOREIGN, Store, now, select

Note = Callable[[str], None]


def quiet(message: str) -> None:
    """The default `on_note`: say nothing."""


def _cmdline(pid: int) -> bytes | None:
    """The process's command line, or None when /proc cannot tell."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return None


def sweep_alive(pid: int) -> bool:
    """Whether the local sweep the manifest records as `pid` still runs: a living process
    (process.pid_alive) that is this tool, as far as its command line tells (the manifest keeps
    no start time: a reused pid of another program is told by its command line)."""
    if not pid_alive(pid):
        return False  # killed without a word (SIGKILL, a crash): it runs no more
    cmdline = _cmdline(pid)
    return cmdline is None or b"autograd" in cmdline


def live_local(manifest: Mapping[str, Any], host: str | None = None) -> str | None:
    """'pid 123 on host' of a local sweep into this DIR, started on this host, that has not ended
    and whose process still lives; None when there is none (this process itself never counts)."""
    host = host if host is not None else socket.gethostname()
    for submission in manifest.get("submissions", []):
        if submission.get("mode") != "local" or "ended" in submission:
            continue
        pid = submission.get("pid")
        if submission.get("host") != host or not isinstance(pid, int) or pid == os.getpid():
            continue
        if sweep_alive(pid):
            return f"pid {pid} on {host}"
    return None


def slurm_jobs(manifest: Mapping[str, Any]) -> list[str]:
    """Every array task job id the manifest's submissions hold, in order."""
    return [job for submission in manifest.get("submissions", [])
            for array in submission.get("arrays", []) for job in array.get("task_jobs", [])]


def _expected(manifest: Mapping[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    """Array id → (job name, log folder) that the manifest says its submission used."""
    expected: dict[str, tuple[str | None, str | None]] = {}
    for submission in manifest.get("submissions", []):
        params = submission.get("parameters") or {}
        name = params.get("job_name") if isinstance(params, dict) else None
        for array in submission.get("arrays", []):
            log_dir = array.get("log_dir") or submission.get("log_dir")
            for job in [array.get("job_id"), *array.get("task_jobs", [])]:
                if job:
                    expected[str(job).split("_")[0]] = (
                        name if isinstance(name, str) else None,
                        log_dir if isinstance(log_dir, str) else None,
                    )
    return expected


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b) or Path(a).resolve() == Path(b).resolve()
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def why_not_ours(seen: JobIdentity, name: str | None, log_dir: str | None) -> str | None:
    """Why a job the manifest lists is not this sweep's array (None when it is): its job name
    must be the one the sweep submitted with, and its log must go into the sweep's log folder."""
    if name is not None and seen.name != name:
        return f"its job name is {seen.name!r}, not {name!r}"
    if log_dir is None or seen.stdout is None:
        return "its log folder cannot be told"
    if not _same_dir(str(Path(seen.stdout).parent), log_dir):
        return f"its log goes to {str(Path(seen.stdout).parent)!r}, not {log_dir!r}"
    return None


def sort_jobs(
    manifest: Mapping[str, Any], alive: Mapping[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(live tasks of this sweep's arrays, {array id: why it is not this sweep's}) among `alive`.

    A job id in the manifest is trusted only when the controller confirms it: the job name and
    log folder the sweep submitted with (a hand-edited manifest, or a job id reused after the
    controller's counter restarted, must not get someone's other job cancelled)."""
    expected = _expected(manifest)
    arrays = sorted({j.split("_")[0] for j in alive}, key=int)
    seen = job_identities(arrays)
    foreign: dict[str, str] = {}
    for array in arrays:
        name, log_dir = expected.get(array, (None, None))
        if array not in seen:
            foreign[array] = "the controller does not say what it is"
        elif (why := why_not_ours(seen[array], name, log_dir)) is not None:
            foreign[array] = why
    ours = {job: state for job, state in alive.items() if job.split("_")[0] not in foreign}
    return ours, foreign


def stop_earlier(store: Store, *, force: bool, on_note: Note = quiet) -> None:
    """Refuse (BadInput) while an earlier submission into DIR still runs: its tasks would write
    records beside this sweep's and cases would run twice. With `force` an earlier job array is
    cancelled first (and waited for); a local sweep still running is always refused."""
    manifest = store.read_manifest() if store.root.exists() else None
    if manifest is None:
        return
    local = live_local(manifest)
    if local is not None:
        raise BadInput(
            f"a local sweep into --out {str(store.root)!r} is still running ({local}); wait for "
            "it to end or stop it first (Ctrl-C there, or kill its pid)"
        )
    jobs = slurm_jobs(manifest)
    alive, foreign = sort_jobs(manifest, live_tasks(jobs))
    for array, why in foreign.items():
        on_note(f"job {array}, listed in {store.manifest_path}, is not this sweep's array "
                f"({why}): left alone")
    if not alive:
        return
    arrays = sorted({j.split("_")[0] for j in alive}, key=int)
    listed = ", ".join(sorted(alive)[:5]) + (", ..." if len(alive) > 5 else "")
    what = (f"job array {', '.join(arrays)} of an earlier sweep into --out {str(store.root)!r} "
            f"still has {len(alive)} task(s) pending or running ({listed})")
    if not force:
        raise BadInput(
            f"{what}. Wait for it to end (`autograd-check report {shlex.quote(str(store.root))}` "
            f"shows what is done), cancel it (`scancel {' '.join(arrays)}`), or run with --force "
            "to cancel it and start over"
        )
    on_note(f"--force: {what}; cancelling it")
    cancel_arrays(list(alive))


def tidy_after_killed(store: Store, on_note: Note = quiet) -> None:
    """What a sweep killed outright (SIGKILL, a crash, a lost node) left in DIR: its local run in
    the manifest, never ended, is marked ended with status 'killed'; temporary files it was
    writing are removed (Store.remove_temporaries). Only local runs of this host whose process
    is gone are closed: one of another host cannot be told from a live one here. Called under
    the lock, once stop_earlier has found nothing still running into DIR."""
    host = socket.gethostname()
    killed: list[int] = []

    def close(manifest: dict[str, Any]) -> None:
        for index, sub in enumerate(manifest.get("submissions", [])):
            pid = sub.get("pid")
            if (sub.get("mode") == "local" and "ended" not in sub and sub.get("host") == host
                    and isinstance(pid, int) and pid != os.getpid() and not sweep_alive(pid)):
                sub.update(ended=now(), status="killed")
                killed.append(index)

    manifest = store.read_manifest() if store.root.exists() else None
    if manifest is not None and any(
            s.get("mode") == "local" and "ended" not in s for s in manifest.get("submissions", [])):
        store.update_manifest(close)
    if killed:
        on_note(f"{len(killed)} earlier local run(s) into {store.root} never ended (killed): "
                "marked so in its manifest")
    removed = store.remove_temporaries()
    if removed:
        on_note(f"removed {len(removed)} temporary file(s) a killed sweep left in {store.root}")


def resume(plan: Plan, *, rerun_failed: bool, on_note: Note = quiet) -> tuple[list[Case], int]:
    """(the cases to run, how many are skipped): the plan's cases without a credited record in
    DIR (and, on `rerun_failed`, those whose record failed); the records of those to run again
    are moved aside (Store.supersede), each kind said in a note."""
    store = plan.store
    todo, skipped = select(plan.cases, store, plan.grid_id, rerun_failed=rerun_failed)
    recorded = store.recorded_keys()
    again = [c.key for c in todo if c.key in recorded]
    # never resumed from: a record another user wrote (a group member's planted "passed")
    _, unusable = store.credited_records(plan.grid_id, again) if again else ({}, {})
    foreign = [key for key, why in unusable.items() if FOREIGN in why]
    for key in again:  # a failed record (--rerun-failed), a half, another grid's or user's
        store.supersede(key)
    if foreign:
        on_note(f"{len(foreign)} record(s) in {store.records_dir} were {FOREIGN}, not by "
                f"you: not counted, moved to {store.root / 'superseded'}; running those "
                "cases again")
    if len(again) > len(foreign):
        what = ("--rerun-failed: {} failed" if rerun_failed else
                "{} unusable (unreadable, or another grid's)").format(
                    len(again) - len(foreign))
        on_note(f"{what} record(s) moved to {store.root / 'superseded'}; running them again")
    if skipped:
        on_note(f"resuming: {skipped} of {len(plan.cases)} cases already have a record in "
                f"{store.root}; running {len(todo)}")
    return todo, skipped
