"""`autograd-check submit`: the check on Slurm, as an sbatch job or a job step of this allocation.

A thin command over autograd_check.slurm.submission, which decides (job step or batch job, the
dry-run plan, the refusals, whether to wait) and waits: this module parses, shows progress on
stderr and the result on stdout. `status` and `result`, and the views shared with them, are in
cli/jobs.py.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autograd_check.base.errors import EXIT_PASS
from autograd_check.base.torch_features import require_parallel
from autograd_check.cli.app import app
from autograd_check.cli.edge import EXIT_CODE_HELP, edge
from autograd_check.cli.jobs import show_job_result
from autograd_check.cli.options import JsonOutput, ShowTensors, check_options
from autograd_check.cli.output import print_document
from autograd_check.cli.slurm_options import submit_slurm_options
from autograd_check.config import slurm_from, spec_from
from autograd_check.render.console import note
from autograd_check.render.progress import JobProgress
from autograd_check.slurm.submission import Finished, hint_flags, plan_submission, submit_check

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
    if dry_run:
        plan = plan_submission(spec, opts, new_job=new_job)
        if json_output:
            print_document("submit-plan", {**plan.to_dict(), "spec": spec.to_dict()})
        else:
            print(plan.text(), end="")
        raise typer.Exit(EXIT_PASS)
    done = submit_check(spec, opts, new_job=new_job, wait=wait, terminal=sys.stdout.isatty,
                        watching=JobProgress, on_note=note)
    if not isinstance(done, Finished):
        show_submitted(done, opts, json_output)
        raise typer.Exit(EXIT_PASS)
    show_job_result(done.result, json_output=json_output, show_tensors=show_tensors,
                    state=done.state, elapsed=done.elapsed)
    raise typer.Exit(done.result.exit_code)
