"""The command line: thin Typer commands over execute(spec) and the Slurm layer."""

from __future__ import annotations

from autograd_check.cli import run as _run  # noqa: F401  (registers the command)
from autograd_check.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
