"""`submit`, `status` and `result`: the check on Slurm, and re-attaching to it later by job id.

Thin commands over autograd_check.slurm: they parse, show progress on stderr and results on
stdout; the Slurm work (and every wait's bound) is in that package (src/autograd_check/slurm/).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from autograd_check.cli.app import EXIT_CODE_HELP, app, edge, error_line
from autograd_check.cli.options import check_options
from autograd_check.cli.run import JsonOutput, ShowTensors
from autograd_check.cli.slurm_options import slurm_options
from autograd_check.errors import EXIT_PASS, JobFailed

if TYPE_CHECKING:
    from rich.live import Live

    from autograd_check.check.result import CheckResult
    from autograd_check.slurm import JobInfo, SlurmOptions, Submitted

Wait = Annotated[
    bool | None,
    typer.Option(
        "--wait/--no-wait",
        help="Wait for the job (live status on stderr), then show its result like `run` and exit "
        "with the check's exit code (default: --wait when stdout is a terminal, --no-wait when "
        "it is not: scripts get the job id at once).",
        show_default=False,
    ),
]
NewJob = Annotated[
    bool,
    typer.Option(
        "--new-job",
        help="Inside an salloc allocation: queue a separate sbatch job instead of running the "
        "check as a job step of the allocation.",
    ),
]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="Print the sbatch script (or srun line); submit nothing."),
]
JobId = Annotated[str, typer.Argument(help="The job id `submit` printed.", show_default=False)]
LogDir = Annotated[
    Path | None,
    typer.Option(
        "--log-dir",
        metavar="DIR",
        help="The log folder the job was submitted with (default: $AUTOGRAD_CHECK_LOG_DIR, "
        "else ~/.autograd-check/slurm).",
        show_default=False,
    ),
]
Timeout = Annotated[
    str | None,
    typer.Option(help="Bound on the wait, in seconds.", metavar="SECONDS", show_default="3600"),
]

STATE_STYLES = {
    "PENDING": "yellow",
    "CONFIGURING": "yellow",
    "RUNNING": "cyan",
    "COMPLETING": "cyan",
    "COMPLETED": "green",
}


class JobProgress:
    """Where a job is while we wait: a Rich live line on a terminal's stderr; otherwise one plain
    line on stderr each time the state changes (nothing fancy for logs and pipes)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.live: Live | None = None
        self.last: tuple[str, str | None] | None = None
        self.latest: tuple[JobInfo, float] | None = None

    def __enter__(self) -> JobProgress:
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(console=Console(stderr=True), transient=True, refresh_per_second=8)
            self.live.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
            if self.latest is not None:  # the live line was transient: leave its last word
                print(f"autograd-check: {self._words(*self.latest)}", file=sys.stderr, flush=True)

    def _words(self, info: JobInfo, elapsed: float) -> str:
        where = f" on {info.node}" if info.node and info.state != "PENDING" else ""
        why = f" ({info.reason})" if info.reason and info.state == "PENDING" else ""
        return f"{self.label}: {info.state}{where}{why}, {elapsed:.1f} s"

    def update(self, info: JobInfo, elapsed: float) -> None:
        self.latest = (info, elapsed)
        if self.live is not None:
            from rich.spinner import Spinner
            from rich.text import Text

            text = Text(self._words(info, elapsed), style=STATE_STYLES.get(info.state, "red"))
            self.live.update(Spinner("dots", text=text))
            return
        key = (info.state, info.node)
        if key != self.last:
            self.last = key
            print(f"autograd-check: {self._words(info, elapsed)}", file=sys.stderr, flush=True)


def note(message: str) -> None:
    print(f"autograd-check: {message}", file=sys.stderr, flush=True)


def fail_job(error: JobFailed, json_output: bool) -> NoReturn:
    """A failed job: one error line, then its state and log tail on stderr; exit 4."""
    error_line(str(error))
    if error.log_tail:
        print("last lines of the job's log:", file=sys.stderr)
        for line in error.log_tail.splitlines():
            print(f"  {line}", file=sys.stderr)
    if json_output:
        from autograd_check.document import SCHEMA_VERSION, dumps

        doc = {
            "schema_version": SCHEMA_VERSION,
            "error": {"exit_code": error.exit_code, "message": str(error)},
            "job": {"state": error.state, "log_tail": error.log_tail},
        }
        print(dumps(doc))
    raise typer.Exit(error.exit_code)


def job_header(result: CheckResult, state: str | None, elapsed: float | None) -> str:
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


def show_job_result(
    result: CheckResult,
    *,
    json_output: bool,
    show_tensors: bool | None,
    state: str | None = None,
    elapsed: float | None = None,
) -> None:
    from autograd_check.cli.output import show_result

    if not json_output:
        print(job_header(result, state, elapsed), flush=True)
    show_result(result, json_output=json_output, show_tensors=show_tensors)


def hint_flags(opts_dir: Path | None) -> str:
    return f" --log-dir {shlex.quote(str(opts_dir))}" if opts_dir is not None else ""


EXIT_INTERRUPTED = 130
"""What a shell reports for a command stopped by Ctrl-C (128 + SIGINT)."""


def stopped_waiting(job_id: str, log_dir: Path | None) -> NoReturn:
    """Ctrl-C while waiting for a batch job: only the wait stops, so say where the job is."""
    flags = hint_flags(log_dir)
    note(
        f"stopped waiting; Slurm job {job_id} keeps running: `autograd-check status {job_id}"
        f"{flags}` shows its state, `autograd-check result {job_id}{flags} --wait` waits for "
        f"its result, `scancel {job_id}` cancels it"
    )
    raise typer.Exit(EXIT_INTERRUPTED)


def show_submitted(sub: Submitted, opts: SlurmOptions, json_output: bool) -> None:
    flags = hint_flags(opts.log_dir)
    if json_output:
        from autograd_check.document import SCHEMA_VERSION, dumps

        print(
            dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "job": {
                        "job_id": sub.job_id,
                        "log_dir": str(sub.folder),
                        "stdout": str(sub.stdout),
                        "stderr": str(sub.stderr),
                        "submission_file": str(sub.submission_file),
                        "status_command": f"autograd-check status {sub.job_id}{flags}",
                        "result_command": f"autograd-check result {sub.job_id}{flags}",
                    },
                }
            )
        )
        return
    print(f"Submitted Slurm job {sub.job_id} ({opts.job_name})")
    print(f"  stdout log  {sub.stdout}")
    print(f"  stderr log  {sub.stderr}")
    print(f"  script      {sub.submission_file}")
    print(f"  state       autograd-check status {sub.job_id}{flags}")
    print(f"  result      autograd-check result {sub.job_id}{flags}")


@app.command(epilog=EXIT_CODE_HELP)
@edge
@check_options
@slurm_options
def submit(
    *,
    wait: Wait = None,
    new_job: NewJob = False,
    dry_run: DryRun = False,
    show_tensors: ShowTensors = None,
    json_output: JsonOutput = False,
    check_values: dict[str, Any],
    slurm_values: dict[str, Any],
) -> None:
    """Run the check on Slurm: an sbatch job through submitit, or, inside an salloc allocation,
    a job step of it (srun). Same check, same result view as `run`."""
    from autograd_check import slurm
    from autograd_check.config import slurm_from, spec_from

    spec = spec_from(check_values)
    opts = slurm_from(slurm_values, check_values.get("config"))
    alloc = slurm.current_allocation()
    as_step = alloc is not None and not alloc.in_step and not new_job

    if dry_run:
        if as_step:
            print(shlex.join(slurm.step_command(spec, opts)))
        else:
            print(slurm.sbatch_script(spec, opts), end="")
        raise typer.Exit(EXIT_PASS)

    try:
        if as_step:
            assert alloc is not None
            ignored = slurm.ignored_for_step(opts)
            if ignored:
                note(f"{', '.join(ignored)} ignored: the check runs as a step of allocation "
                     f"{alloc.job_id} (--new-job queues a separate job)")
            if wait is False:
                note("--no-wait ignored: a job step runs while this command waits")
            label = f"step of Slurm job {alloc.job_id}"
            with JobProgress(label) as progress:
                result = slurm.run_step(spec, opts, alloc, on_update=progress.update)
            show_job_result(result, json_output=json_output, show_tensors=show_tensors)
            raise typer.Exit(result.exit_code)

        slurm.require_slurm("sbatch", "srun")
        if alloc is not None:
            blocked = slurm.allocation_blocks_new_job(opts, alloc)
            if blocked:
                from autograd_check.errors import EnvironmentProblem

                raise EnvironmentProblem(blocked)
        sub = slurm.submit_job(spec, opts, clean=alloc is not None)
        if not (sys.stdout.isatty() if wait is None else wait):
            show_submitted(sub, opts, json_output)
            raise typer.Exit(EXIT_PASS)
        note(f"submitted Slurm job {sub.job_id}; logs in {sub.folder}")
        try:
            with JobProgress(f"Slurm job {sub.job_id}") as progress:
                info = slurm.wait_for_job(sub.job_id, sub.folder, opts.timeout, progress.update)
        except KeyboardInterrupt:
            stopped_waiting(sub.job_id, opts.log_dir)
        elapsed = progress.latest[1] if progress.latest else None
        result = slurm.collect(sub.job_id, sub.folder, info)
    except JobFailed as e:
        fail_job(e, json_output)
    show_job_result(
        result, json_output=json_output, show_tensors=show_tensors, state=info.state,
        elapsed=elapsed,
    )
    raise typer.Exit(result.exit_code)


@app.command(epilog=EXIT_CODE_HELP)
@edge
def status(
    job_id: JobId,
    *,
    log_dir: LogDir = None,
    json_output: JsonOutput = False,
) -> None:
    """State, node, elapsed time and log paths of a job `submit` queued."""
    from autograd_check import slurm

    job_id = slurm.parse_job_id(job_id)
    folder = slurm.resolve_log_dir(slurm.parse_log_dir(log_dir) if log_dir else None)
    if not any(slurm.have(t) for t in ("scontrol", "squeue", "sacct")) and not folder.is_dir():
        slurm.require_slurm("scontrol")
    info = slurm.job_info(job_id)
    never = slurm.never_starts(info) if info is not None else None
    paths = slurm.job_paths(folder, job_id)
    has_result = paths.result_pickle.exists()
    state = info.state if info else ("COMPLETED" if has_result else "UNKNOWN")
    source = info.source if info else ("result file" if has_result else "nothing")
    files = {
        "stdout": str(paths.stdout) if paths.stdout.exists() else None,
        "stderr": str(paths.stderr) if paths.stderr.exists() else None,
        "script": str(paths.submission_file) if paths.submission_file.exists() else None,
    }
    if info is None and not has_result and not any(files.values()):
        raise JobFailed(
            f"Slurm job {job_id} is unknown: not in the queue, not in accounting, and nothing in "
            f"{folder} (another --log-dir?)",
            state="UNKNOWN",
        )
    doc = {
        "job_id": job_id,
        "state": state,
        "source": source,
        "node": info.node if info else None,
        "partition": info.partition if info else None,
        "elapsed": info.elapsed if info else None,
        "reason": info.reason if info else None,
        "never_starts": never,
        "exit_code": info.exit_code if info else None,
        "result_available": has_result,
        "log_dir": str(folder),
        "logs": files,
    }
    if json_output:
        from autograd_check.document import SCHEMA_VERSION, dumps

        print(dumps({"schema_version": SCHEMA_VERSION, "job": doc}))
        return
    print(f"Slurm job {job_id}: {state}  (from {source})")
    finished = info is None or info.finished
    for label, key in (
        ("node", "node"), ("partition", "partition"), ("elapsed", "elapsed"),
        ("reason", "reason"), ("exit code", "exit_code"),
    ):
        if doc[key] and (key != "exit_code" or finished):
            print(f"  {label:<10}{doc[key]}")
    if never:
        print(f"  {'hint':<10}Slurm will never start it: {never}; cancel it: scancel {job_id}")
    ready = f"ready: autograd-check result {job_id}{hint_flags(log_dir)}"
    print(f"  {'result':<10}{ready if has_result else 'none yet'}")
    for label, path in files.items():
        print(f"  {label:<10}{path or '(not written yet)'}")


@app.command(epilog=EXIT_CODE_HELP)
@edge
def result(
    job_id: JobId,
    *,
    log_dir: LogDir = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for a job that has not ended yet.")
    ] = False,
    timeout: Timeout = None,
    show_tensors: ShowTensors = None,
    json_output: JsonOutput = False,
) -> None:
    """The result of a job `submit` queued (the view of `run`), or its state and log tail."""
    from autograd_check import slurm

    job_id = slurm.parse_job_id(job_id)
    folder = slurm.resolve_log_dir(slurm.parse_log_dir(log_dir) if log_dir else None)
    bound = slurm.parse_timeout(timeout) if timeout is not None else slurm.DEFAULT_TIMEOUT_S
    info = None
    try:
        if wait:
            try:
                with JobProgress(f"Slurm job {job_id}") as progress:
                    info = slurm.wait_for_job(job_id, folder, bound, progress.update)
            except KeyboardInterrupt:
                stopped_waiting(job_id, log_dir)
        checked = slurm.collect(job_id, folder, info)
    except JobFailed as e:
        fail_job(e, json_output)
    show_job_result(
        checked, json_output=json_output, show_tensors=show_tensors,
        state=info.state if info else None,
    )
    raise typer.Exit(checked.exit_code)


@app.command("_step", hidden=True)
def step(spec: Annotated[str, typer.Option("--spec", help="The CheckSpec as JSON.")]) -> None:
    """Inside a job step: run the check, answer with one marked JSON line (see slurm.run_step)."""
    from autograd_check.slurm import step_main

    line, code = step_main(spec)
    print(line, flush=True)
    raise typer.Exit(code)
