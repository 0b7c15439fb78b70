"""`submit --ranks 2 --nodes 2` on the local cluster with two compute nodes (n1 and n2, each
slurmd in its own network and UTS namespace: scripts/slurm-local.sh up --nodes 2): one Slurm job
of two tasks over two nodes, rank 1 on n2 meeting rank 0 on n1 at the address rank 0 announced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("two_node_cluster")]

CLI = [sys.executable, "-m", "autograd_check"]


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("SLURM_", "SLURMD_", "SRUN_", "SBATCH_", "SALLOC_"))}
    # a submitting shell's rendezvous variables must not reach the job (nor its $HOSTNAME)
    clean.update(COLUMNS="120", NO_COLOR="1", MASTER_PORT="29500", MASTER_ADDR="vm", RANK="1",
                 HOSTNAME="submitting-host")
    return clean


def test_one_job_of_two_ranks_over_two_nodes(tmp_path: Path) -> None:
    done = subprocess.run(
        [*CLI, "submit", "--ranks", "2", "--nodes", "2", "--model", "mlp", "--shape", "8x8",
         "--dtype", "float64", "--loss", "mse-mean", "--wait", "--json", "--timeout", "120",
         "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=180, env=env(),
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["verdict"]["passed"] is True
    ranks = doc["distributed"]
    assert ranks["hosts"] == ["n1", "n2"]  # one rank on each node
    assert ranks["ranks_agree"] is True
    assert [s["name"] for s in doc["statistics"]] == ["fc1.weight", "fc1.bias", "fc2.weight",
                                                       "fc2.bias"]


@pytest.mark.fsdp
def test_a_step_of_two_ranks_over_two_nodes_inside_salloc(tmp_path: Path) -> None:
    done = subprocess.run(
        ["salloc", "--nodes=2", "--ntasks=2", "--time=5", *CLI, "submit", "--ranks", "2",
         "--nodes", "2", "--model", "linear", "--shape", "4x6", "--parallel", "fsdp", "--json",
         "--timeout", "120", "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=180, env=env(),
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["verdict"]["passed"] is True
    assert doc["distributed"]["hosts"] == ["n1", "n2"]
    assert doc["environment"]["slurm"].get("step_id") is not None
