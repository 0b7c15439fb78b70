"""The command line: thin Typer commands over execute(spec) and the Slurm layer."""

from __future__ import annotations

from autograd_check.cli import env as _env  # noqa: F401  (registers the command)
from autograd_check.cli import run as _run  # noqa: F401  (registers the command)
from autograd_check.cli import submit as _submit  # noqa: F401  (registers submit, status, result)
from autograd_check.cli import sweep as _sweep  # noqa: F401  (registers sweep and report)
from autograd_check.cli import tour as _tour  # noqa: F401  (registers the command)
from autograd_check.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
