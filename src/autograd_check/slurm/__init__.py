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

- submitit_adapter.py  the one user of submitit's private names (the sbatch script, node lists)
- commands.py  Slurm's tools on PATH, the bounded runner of its commands, reading what they
               print, JobInfo
- allocation.py  the allocation this shell is in (from slurm_env's table of SLURM_* variables)
- log_dir.py   the log folder: where it is, made and checked private; a job's files in it
- guard.py     what a batch job runs first on the node: nobody else could have written its pickle
- options.py   SlurmOptions and the validation of every option (flags, a [slurm] table)
- node.py      the job itself, run on the node (`run_job`), and its answer read back here
- admission.py can this job run here? a request against its partition's nodes (before queueing
               and while pending), and a new job from inside an allocation
- batch.py     batch jobs through submitit: executor parameters, the sbatch script, submit_job
- watch.py     watching a job (scontrol, squeue, sacct, the log folder), waiting, collecting
- step.py      a job step inside the current allocation (srun ... _step)
- submission.py  `submit` and `result` decided: job step or batch job, the dry-run plan, the
               refusals, whether to wait; the wait and the result
- env_facts.py facts for `autograd-check env`
- arrays.py    job arrays for `sweep --slurm`: submitting, states, watching, cancelling

Callers import from the module that owns a name (`from autograd_check.slurm.watch import
wait_for_job`): this package exports nothing itself, so there is one name for each thing.
"""
