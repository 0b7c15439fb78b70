"""`autograd-check env`: what is here (torch, CUDA, Slurm) and what `submit` would do."""

from __future__ import annotations

import platform

import typer

from autograd_check.base.environment import torch_facts
from autograd_check.cli.app import app
from autograd_check.cli.edge import EXIT_CODE_HELP, edge
from autograd_check.cli.options import JsonOutput
from autograd_check.cli.output import print_document
from autograd_check.render.env import print_facts
from autograd_check.slurm.env_facts import slurm_facts


@app.command(epilog=EXIT_CODE_HELP)
@edge
def env(*, json_output: JsonOutput = False) -> None:
    """What is here: torch and CUDA devices, Slurm tools, partitions, accounting, the allocation
    this shell is in, and what `submit` would do."""
    facts = {"python": platform.python_version(), "torch": torch_facts(), "slurm": slurm_facts()}
    if json_output:
        print_document("environment", facts)
        return
    print_facts(facts)
    raise typer.Exit(0)
