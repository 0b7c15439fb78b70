"""Shared fixtures: a pinned terminal for CLI tests, and the real local Slurm cluster."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "scripts" / "slurm-local.sh"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _plain_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich output without colour and at a fixed width, so assertions see plain text."""
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setenv("TERMINAL_WIDTH", "120")
    monkeypatch.setenv("NO_COLOR", "1")
    for var in ("FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)


def _cluster_reason() -> str | None:
    """None when a usable Slurm is up (bringing the local one up if we may), else why not."""
    if shutil.which("sbatch") and subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True, timeout=60
    ).returncode == 0:
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "no Slurm here, and bringing up the local cluster needs root and apt-get"
    up = subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), "up"], capture_output=True, text=True, timeout=600
    )
    if up.returncode != 0:
        return f"scripts/slurm-local.sh up failed: {(up.stderr or up.stdout)[-2000:]}"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[None]:
    """The real single-node Slurm (scripts/slurm-local.sh); skips without it, fails if CI=true."""
    reason = _cluster_reason()
    if reason is not None:
        if IN_CI:
            pytest.fail(f"CI=true and Slurm is not usable: {reason}")
        pytest.skip(reason)
    yield
