"""The README's and docs/' console blocks are what the code prints now (scripts/docs.py --check)."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _check(*args: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs.py"), "--check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (
        "console blocks differ from what the code prints now; regenerate them with "
        f"`python scripts/docs.py{' --slurm' if '--only-slurm' in args else ''}`:\n"
        f"{proc.stdout}\n{proc.stderr}"
    )


def _reference_torch() -> str:
    """The torch build the pages are generated with (docs.py's CANONICAL, what CI pins)."""
    found = re.search(r'"torch": "([^"]+)"', (ROOT / "scripts" / "docs.py").read_text())
    assert found is not None
    return found[1]


# Another torch build prints other words (a CUDA build's --device cuda error, its version):
# the pages are compared on the build they were generated with (scripts/torch-matrix.sh runs
# the suite on others).
ON_THE_REFERENCE_TORCH = pytest.mark.skipif(
    metadata.version("torch") != _reference_torch(),
    reason=f"the pages are generated with torch {_reference_torch()}; this is torch "
           f"{metadata.version('torch')}")


@ON_THE_REFERENCE_TORCH
def test_console_blocks_match_the_code() -> None:
    _check()


@pytest.mark.slurm
@ON_THE_REFERENCE_TORCH
def test_slurm_console_blocks_match_the_code(slurm_cluster: None) -> None:
    _check("--only-slurm")


LINK = re.compile(r"\]\((?!https?://|mailto:|#)([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(page: Path) -> None:
    missing = []
    for target in LINK.findall(page.read_text()):
        path = target.split("#", 1)[0]
        if path and not (page.parent / path).exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)}: links to missing files: {missing}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in PAGES[1:]:
        assert f"(docs/{page.name})" in readme, page.name


def _docs_module():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("docs_script", ROOT / "scripts" / "docs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_command_names_the_real_job_behind_a_shown_id(tmp_path: Path) -> None:
    normaliser = _docs_module().Normaliser(tmp_path)
    assert normaliser.line("Submitted batch job 7") == "Submitted batch job 101"
    assert normaliser.line("Submitted batch job 101") == "Submitted batch job 102"
    assert normaliser.command("tail -4 autograd-check-101.out") == "tail -4 autograd-check-7.out"
    assert normaliser.command("cat slurm/102_0_log.err") == "cat slurm/101_0_log.err"
    assert normaliser.command("autograd-check status 101 102") == "autograd-check status 7 101"
    # Numbers that are no shown job stay as they are.
    assert normaliser.command("run --shape 101x8 --lr 0.101 --seed 101.5") == (
        "run --shape 101x8 --lr 0.101 --seed 101.5"
    )


def test_which_passing_job_states_a_poll_caught_is_not_a_difference() -> None:
    docs = _docs_module()
    page = [
        "$ autograd-check submit --wait",
        "autograd-check: submitted Slurm job 101; logs in /home/you/.autograd-check/slurm",
        "autograd-check: Slurm job 101: PENDING, n.n s",
        "autograd-check: Slurm job 101: RUNNING on vm, n.n s",
        "autograd-check: Slurm job 101: COMPLETED on vm, n.n s",
        "PASS",
    ]
    started_at_once = page[:2] + page[3:]
    assert docs.same_but_timing(page, started_at_once)
    assert docs.same_but_timing(page, page[:2] + page[4:])
    # The end state and everything else still count.
    assert not docs.same_but_timing(page, [*page[:4], page[4].replace("COMPLETED", "FAILED"),
                                           "PASS"])
    assert not docs.same_but_timing(page, [*page[:-1], "FAIL"])
