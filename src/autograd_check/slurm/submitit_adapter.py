"""The one place that uses submitit's private names: its sbatch script writer, its parser of
Slurm's node lists, and the module its script runs. They are not part of submitit's API and may
change in any release, so pyproject allows only the minor versions tested (a test calls each).

submitit loads inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SUBMITIT_ARGS = ("-u", "-m", "submitit.core._submit")
"""What submitit's sbatch script puts between its `python` and the job's folder."""


def sbatch_script(python: str, folder: Path, params: Mapping[str, Any]) -> str:
    """The sbatch script submitit writes for executor `params` (SlurmExecutor's parameters), with
    `python` as the executor's python: what SlurmExecutor itself calls
    (`_make_submission_file_text`), with the command line of its `_submitit_command_str`."""
    # submitit loads only when Slurm is used
    from submitit.slurm.slurm import _make_sbatch_string

    command = " ".join([python, *SUBMITIT_ARGS, shlex.quote(str(folder))])
    text: str = _make_sbatch_string(command=command, folder=folder, **params)
    return text


def parse_node_list(text: str) -> list[str]:
    """vm, node[1-3,7] → host names (the syntax of SLURM_JOB_NODELIST); [text] when submitit
    cannot read it."""
    # submitit loads only when Slurm is used
    from submitit.slurm.slurm import SlurmParseException, _parse_node_list

    try:
        return list(_parse_node_list(text))
    except SlurmParseException:
        return [text]
