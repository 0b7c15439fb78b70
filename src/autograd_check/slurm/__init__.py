"""The Slurm layer, and the one place for Slurm code: one CheckSpec plus Slurm options in, one
CheckResult (or a clear failure) out.

Three ways to run a check on Slurm, all of them ending in the same `execute(spec)` that `run` calls:

- a batch job: submitit pickles `run_job(spec)` into the log folder and submits an sbatch script
  that runs it on a node (`submit_job`); `wait_for_job` watches it and `collect` brings the result
  back, also later from another shell (`SlurmJob(folder, job_id)` re-attaches by id);
- a job step of the allocation this shell is in (salloc): `srun ... python -m autograd_check
  _step --spec JSON` runs the check on the allocated node and prints the result as one JSON line
  (`run_step`);
- `--new-job` from inside an allocation: a batch job again, submitted with the inherited SLURM_*
  variables hidden (`submitit.helpers.clean_env`, keeping SLURM_CONF).

Nothing here prints or exits: progress goes to a callback, failures are raised as BadInput (2),
EnvironmentProblem (3) or JobFailed (4). submitit is imported inside functions, so the CLI's
start-up (and `--help`) never pays for it.

Modules (each imports only those above it in this list, never this package):

- where.py     where we are: Slurm's tools on PATH, the allocation this shell is in, the log folder
- options.py   SlurmOptions and the validation of every option (flags, a [slurm] table)
- commands.py  the bounded runner of Slurm's commands, reading what they print, JobInfo
- node.py      the job itself, run on the node (`run_job`), and its answer read back here
- fit.py       would Slurm ever start it? a request against its partition's nodes
- batch.py     batch jobs through submitit: executor parameters, the sbatch script, submit_job
- watch.py     watching a job (scontrol, squeue, sacct, the log folder), waiting, collecting
- step.py      a job step inside the current allocation (srun ... _step)
- new_job.py   a new job from inside an allocation: would it start while the allocation lives?
- facts.py     facts for `autograd-check env`
- arrays.py    job arrays for `sweep --slurm`: submitting, states, watching, cancelling

This package re-exports what the rest of autograd_check (and its tests) use; a test that patches
a name a function looks up (`_run`, `time`, ...) patches the submodule that function lives in.
"""

from __future__ import annotations

from autograd_check.slurm.arrays import (
    ArrayProgress,
    SubmittedArray,
    array_blocked,
    array_parameters,
    array_script,
    array_states,
    cancel_arrays,
    live_tasks,
    max_array_size,
    submit_arrays,
    watch_arrays,
)
from autograd_check.slurm.batch import Submitted, executor_parameters, sbatch_script, submit_job
from autograd_check.slurm.commands import (
    ACTIVE_STATES,
    CALL_FLOOR_S,
    JobInfo,
    parse_scontrol_record,
)
from autograd_check.slurm.facts import slurm_facts
from autograd_check.slurm.fit import (
    NEVER_STARTS,
    Request,
    fit_problem,
    never_starts,
    reason_word,
    request_of_job,
    request_of_params,
)
from autograd_check.slurm.new_job import allocation_blocks_new_job
from autograd_check.slurm.node import outcome_to_result, run_job
from autograd_check.slurm.options import (
    DEFAULT_JOB_NAME,
    DEFAULT_TIME_MIN,
    DEFAULT_TIMEOUT_S,
    SLURM_KEYS,
    SlurmOptions,
    build_slurm_options,
    format_minutes,
    mem_to_mb,
    parse_job_id,
    parse_log_dir,
    parse_mem,
    parse_sbatch_args,
    parse_time,
    parse_timeout,
)
from autograd_check.slurm.step import (
    STEP_MARKER,
    ignored_for_step,
    run_step,
    step_answer,
    step_command,
    step_main,
)
from autograd_check.slurm.watch import (
    RESULT_GRACE_S,
    collect,
    job_info,
    load_outcome,
    wait_for_job,
)
from autograd_check.slurm.where import (
    DEFAULT_LOG_DIR,
    LOG_DIR_ENV,
    current_allocation,
    ensure_private,
    have,
    job_paths,
    prepare_log_dir,
    require_slurm,
    resolve_log_dir,
    run_outside_node_warning,
)

__all__ = [
    "ACTIVE_STATES",
    "CALL_FLOOR_S",
    "DEFAULT_JOB_NAME",
    "DEFAULT_LOG_DIR",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_TIME_MIN",
    "LOG_DIR_ENV",
    "NEVER_STARTS",
    "RESULT_GRACE_S",
    "SLURM_KEYS",
    "STEP_MARKER",
    "ArrayProgress",
    "JobInfo",
    "Request",
    "SlurmOptions",
    "Submitted",
    "SubmittedArray",
    "allocation_blocks_new_job",
    "array_blocked",
    "array_parameters",
    "array_script",
    "array_states",
    "build_slurm_options",
    "cancel_arrays",
    "collect",
    "current_allocation",
    "ensure_private",
    "executor_parameters",
    "fit_problem",
    "format_minutes",
    "have",
    "ignored_for_step",
    "job_info",
    "job_paths",
    "live_tasks",
    "load_outcome",
    "max_array_size",
    "mem_to_mb",
    "never_starts",
    "outcome_to_result",
    "parse_job_id",
    "parse_log_dir",
    "parse_mem",
    "parse_sbatch_args",
    "parse_scontrol_record",
    "parse_time",
    "parse_timeout",
    "prepare_log_dir",
    "reason_word",
    "request_of_job",
    "request_of_params",
    "require_slurm",
    "resolve_log_dir",
    "run_job",
    "run_outside_node_warning",
    "run_step",
    "sbatch_script",
    "slurm_facts",
    "step_answer",
    "step_command",
    "step_main",
    "submit_arrays",
    "submit_job",
    "wait_for_job",
    "watch_arrays",
]
