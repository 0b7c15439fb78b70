"""The SLURM_* variables this package reads, in one table (as submitit's JobEnvironment keeps
them): Slurm sets them in an allocation's shell, a batch job and every task of a job step.

`SlurmEnv()` reads os.environ when a property is asked (a test's monkeypatch.setenv shows at
once); `SlurmEnv(mapping)` reads that mapping instead. A variable set to the empty string counts
as unset. Base layer: this module imports nothing of the package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

JOB_ID = ("SLURM_JOB_ID", "SLURM_JOBID")
"""The job this process runs in; SLURM_JOBID is the older name, still set by Slurm."""
STEP_ID = "SLURM_STEP_ID"
ARRAY_JOB_ID = "SLURM_ARRAY_JOB_ID"
ARRAY_TASK_ID = "SLURM_ARRAY_TASK_ID"
NODE = "SLURMD_NODENAME"
"""The node this task runs on, as Slurm names it."""
PARTITION = "SLURM_JOB_PARTITION"
NODELIST = ("SLURM_JOB_NODELIST", "SLURM_NODELIST")
"""The job's nodes (node[1-3,7]); SLURM_NODELIST is the older name."""
PROCID = "SLURM_PROCID"
"""This task's rank among the tasks of its job step (0 ... NTASKS - 1)."""
NTASKS = "SLURM_NTASKS"
LOCALID = "SLURM_LOCALID"
"""This task's rank among the tasks of its step on this node."""
RESTART_COUNT = "SLURM_RESTART_COUNT"
"""How often the job has been requeued (unset before the first requeue)."""
MEM_PER_NODE = "SLURM_MEM_PER_NODE"
MEMORY = ("SLURM_MEM_PER_CPU", MEM_PER_NODE, "SLURM_MEM_PER_GPU")
"""An allocation's memory settings: inherited by a job submitted from inside it, they make the
job's own srun ask for memory the new job does not have."""
CONF = "SLURM_CONF"
"""The slurm.conf sbatch and friends read: tells them which cluster to talk to."""


class Variable:
    """A property of SlurmEnv: the first of its variables that is set (None when none is)."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def __get__(self, env: SlurmEnv, owner: type | None = None) -> str | None:
        return env.get(*self.names)


class SlurmEnv:
    """This process's Slurm job, step and task, as Slurm's variables say (None: not set)."""

    job_id = Variable(*JOB_ID)
    step_id = Variable(STEP_ID)
    array_job_id = Variable(ARRAY_JOB_ID)
    array_task_id = Variable(ARRAY_TASK_ID)
    node = Variable(NODE)
    partition = Variable(PARTITION)
    nodelist = Variable(*NODELIST)
    procid = Variable(PROCID)
    ntasks = Variable(NTASKS)
    localid = Variable(LOCALID)
    restart_count = Variable(RESTART_COUNT)
    mem_per_node = Variable(MEM_PER_NODE)
    conf = Variable(CONF)

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ

    def get(self, *names: str) -> str | None:
        """The first of `names` that is set to a value, else None."""
        env = os.environ if self._environ is None else self._environ
        return next((env[name] for name in names if env.get(name)), None)

    def ids(self) -> dict[str, str] | None:
        """The ids a result records of the job (and step, array task, node, partition) it ran
        in; None outside Slurm."""
        if self.job_id is None:
            return None
        ids = {"job_id": self.job_id, "step_id": self.step_id,
               "array_job_id": self.array_job_id, "array_task_id": self.array_task_id,
               "node": self.node, "partition": self.partition}
        return {key: value for key, value in ids.items() if value is not None}
