"""The command line: one thin Typer module per command, loaded when its command runs.

Importing this package loads only the app (cli/app.py) and typer: `autograd-check --help` lists
the commands from a static table without importing them (see cli/app.py).
"""

from __future__ import annotations

from autograd_check.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
