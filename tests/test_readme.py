"""The README's promises that CI depends on: its test command is the one .ci/run runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line for line in ci.splitlines() if line.startswith("python -m pip install")]
    assert len(commands) == 1, "`.ci/run` should run exactly one install-and-test command"
    assert f"```bash\n{commands[0]}\n```" in readme


def test_readme_lists_every_exit_code() -> None:
    from autograd_check.base.errors import EXIT_CODES

    readme = (ROOT / "README.md").read_text()
    for code, meaning in EXIT_CODES.items():
        assert re.search(rf"^\| {code} \| {re.escape(meaning)} \|$", readme, re.M), code


def test_help_lists_the_same_exit_codes_as_the_table() -> None:
    from autograd_check.base.errors import EXIT_CODE_SHORT, EXIT_CODES

    assert list(EXIT_CODE_SHORT) == list(EXIT_CODES)
