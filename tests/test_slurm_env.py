"""slurm_env: the one table of the SLURM_* variables the package reads, and the only module that
reads them; submitit's private names, used only in slurm/submitit_adapter.py."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import autograd_check
from autograd_check.base.slurm_env import SlurmEnv
from autograd_check.slurm.submitit_adapter import parse_node_list, sbatch_script

PACKAGE = Path(autograd_check.__file__).parent


def test_outside_slurm_nothing_is_set() -> None:
    env = SlurmEnv({"HOME": "/root"})
    assert env.job_id is None and env.procid is None and env.ids() is None


def test_the_older_names_and_empty_values() -> None:
    env = SlurmEnv({"SLURM_JOBID": "12", "SLURM_NODELIST": "vm", "SLURM_STEP_ID": ""})
    assert (env.job_id, env.nodelist, env.step_id) == ("12", "vm", None)
    assert SlurmEnv({"SLURM_JOB_ID": "13", "SLURM_JOBID": "12"}).job_id == "13"


def test_the_ids_a_result_records() -> None:
    env = SlurmEnv({"SLURM_JOB_ID": "41", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "1",
                    "SLURMD_NODENAME": "vm", "SLURM_PROCID": "0"})
    assert env.ids() == {"job_id": "41", "array_job_id": "40", "array_task_id": "1",
                         "node": "vm"}


def test_reads_the_environment_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    env = SlurmEnv()
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert env.procid == "3"


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_other_module_names_a_slurm_variable() -> None:
    variable = re.compile(r"SLURMD?_[A-Z_]+")
    found = [
        f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value}"
        for path in modules() if path.name != "slurm_env.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        and variable.fullmatch(node.value)
    ]
    assert found == []


def test_submitits_private_names_only_in_the_adapter() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{node.lineno}"
        for path in modules() if path.name != "submitit_adapter.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("submitit")
        and any(name.startswith("_") for name in
                [*(node.module or "").split("."), *(a.name for a in node.names)])
    ]
    assert found == []


def test_the_adapter_against_the_installed_submitit(tmp_path: Path) -> None:
    assert parse_node_list("node[1-3,7],vm") == ["node1", "node2", "node3", "node7", "vm"]
    assert parse_node_list("bad[") == ["bad["]
    script = sbatch_script("/usr/bin/python3", tmp_path, {"job_name": "agc", "time": 5})
    assert script.startswith("#!/bin/bash") and "#SBATCH --job-name=agc" in script
    assert f"/usr/bin/python3 -u -m submitit.core._submit {tmp_path}" in script
