"""A sweep folder the tool did not leave so (issue 17, item 6): `records/` replaced by a file, a
manifest whose `grid` is null or whose `submissions` is not a list of objects. Every command that
reads it says so in one line naming the file, exit 2 (bad input: nothing ran), never a traceback
(exit 1 would read as a gradient mismatch)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from autograd_check.cli import app

runner = CliRunner()
SWEEP = ["sweep", "--local", "--seeds", "0-1"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "out"
    result = runner.invoke(app, [*SWEEP, "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    return out


def _manifest(change: Callable[[dict[str, object]], None]) -> Callable[[Path], None]:
    def damage(out: Path) -> None:
        path = out / "manifest.json"
        doc = json.loads(path.read_text())
        change(doc)
        path.write_text(json.dumps(doc))

    return damage


def _records_a_file(out: Path) -> None:
    shutil.rmtree(out / "records")
    (out / "records").write_text("not a folder\n")


DAMAGE = {
    "records is a file": (_records_a_file, "records is not a folder, so this sweep's records "
                                           "cannot be read"),
    "grid is null": (_manifest(lambda d: d.update(grid=None)),
                     "manifest.json is damaged: its 'grid' is null, not an object"),
    "submissions is an object": (_manifest(lambda d: d.update(submissions={"a": 1})),
                                 "manifest.json is damaged: its 'submissions' is an object, "
                                 "not a list"),
    "a submission is a number": (_manifest(lambda d: d.update(submissions=[1])),
                                 "manifest.json is damaged: its submission 0 is a number, not "
                                 "an object"),
    "arrays is a string": (_manifest(lambda d: d.update(submissions=[{"arrays": "x"}])),
                           "manifest.json is damaged: the arrays of its submission 0 are not a "
                           "list of objects"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("command", ["report", "report --json", "sweep"])
def test_one_line_and_exit_2(finished: Path, tmp_path: Path, damage: str, command: str) -> None:
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    spoil, words = DAMAGE[damage]
    spoil(out)
    if command == "sweep" and damage == "records is a file":
        words = "is not a writable directory"  # the sweep's own check of --out says it first
    args = ([*SWEEP, "--out", str(out)] if command == "sweep"
            else ["report", str(out), *command.split()[1:]])
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.stderr, result.exception)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("autograd-check: error: ") and words in line, line
    assert "Traceback" not in result.stderr
    if command == "report --json":
        doc = json.loads(result.stdout)
        assert doc["kind"] == "error" and doc["error"]["exit_code"] == 2, doc
