"""`autograd-check submit`: the check on Slurm, as an sbatch job or a job step of this allocation.

A thin command over autograd_check.slurm: it parses, shows progress on stderr and the result on
stdout; the Slurm work (and every wait's bound) is in that package. `status` and `result`, and the
views shared with them, are in cli/jobs.py.
"""

from __future__ import annotations

import shlex
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autograd_check.cli.app import EXIT_CODE_HELP, app, edge
from autograd_check.cli.jobs import hint_flags, show_job_result, stopped_waiting
from autograd_check.cli.options import JsonOutput, ShowTensors, check_options
from autograd_check.cli.output import print_document
from autograd_check.cli.slurm_options import submit_slurm_options
from autograd_check.config import slurm_from, spec_from
from autograd_check.errors import EXIT_PASS, EnvironmentProblem
from autograd_check.render.console import note
from autograd_check.render.progress import JobProgress
from autograd_check.slurm import batch, step, watch, where
from autograd_check.slurm.new_job import allocation_blocks_new_job
from autograd_check.torch_features import require_parallel

if TYPE_CHECKING:
    from autograd_check.slurm.batch import Submitted
    from autograd_check.slurm.options import SlurmOptions

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


def show_submitted(sub: Submitted, opts: SlurmOptions, json_output: bool) -> None:
    flags = hint_flags(opts.log_dir)
    if json_output:
        print_document("submitted", {
            "job": {
                "job_id": sub.job_id,
                "log_dir": str(sub.folder),
                "stdout": str(sub.stdout),
                "stderr": str(sub.stderr),
                "submission_file": str(sub.submission_file),
                "status_command": f"autograd-check status {sub.job_id}{flags}",
                "result_command": f"autograd-check result {sub.job_id}{flags}",
            },
        })
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
@submit_slurm_options
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

    spec = spec_from(check_values)
    require_parallel(spec.parallel, spec.device)  # here, not in the job (which runs this Python)
    opts = slurm_from(slurm_values, check_values.get("config"))
    alloc = where.current_allocation()
    as_step = alloc is not None and not alloc.in_step and not new_job

    if dry_run:
        command = step.step_command(spec, opts) if as_step else None
        script = None if as_step else batch.sbatch_script(spec, opts)
        if json_output:
            print_document("submit-plan", {
                "mode": "job-step" if as_step else "batch-job",
                "srun_command": command, "sbatch_script": script, "spec": spec.to_dict(),
            })
        elif command is not None:
            print(shlex.join(command))
        else:
            print(script, end="")
        raise typer.Exit(EXIT_PASS)

    if as_step:
        assert alloc is not None
        ignored = step.ignored_for_step(opts)
        if ignored:
            note(f"{', '.join(ignored)} ignored: the check runs as a step of allocation "
                 f"{alloc.job_id} (--new-job queues a separate job)")
        if wait is False:
            note("--no-wait ignored: a job step runs while this command waits")
        label = f"step of Slurm job {alloc.job_id}"
        with JobProgress(label) as progress:
            result = step.run_step(spec, opts, alloc, on_update=progress.update)
        show_job_result(result, json_output=json_output, show_tensors=show_tensors)
        raise typer.Exit(result.exit_code)

    where.require_slurm("sbatch", "srun")
    if alloc is not None:
        blocked = allocation_blocks_new_job(opts, alloc)
        if blocked:
            raise EnvironmentProblem(blocked)
    sub = batch.submit_job(spec, opts, clean=alloc is not None)
    if not (sys.stdout.isatty() if wait is None else wait):
        show_submitted(sub, opts, json_output)
        raise typer.Exit(EXIT_PASS)
    note(f"submitted Slurm job {sub.job_id}; logs in {sub.folder}")
    try:
        with JobProgress(f"Slurm job {sub.job_id}") as progress:
            info = watch.wait_for_job(sub.job_id, sub.folder, opts.timeout, progress.update)
    except KeyboardInterrupt:
        stopped_waiting(sub.job_id, opts.log_dir)
    result = watch.collect(sub.job_id, sub.folder, info)  # a failed job: JobFailed, to edge
    show_job_result(
        result, json_output=json_output, show_tensors=show_tensors, state=info.state,
        elapsed=progress.elapsed,
    )
    raise typer.Exit(result.exit_code)
