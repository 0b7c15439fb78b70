"""`report`: aggregation (pure data), Rich/Markdown/JSON views, the plot, exit codes."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autograd_check.cli import app
from autograd_check.sweep.grid import Case, build_grid
from autograd_check.sweep.report import build_report
from autograd_check.sweep.store import Store, case_record, error_record

runner = CliRunner()


def result_doc(case: Case, *, passed: bool = True, rel: float | str = 0.0, mismatched: int = 0,
               slurm: dict[str, str] | None = None,
               causes: tuple[str, ...] = ()) -> dict[str, Any]:
    """A record as `run --json` writes it, trimmed to what a report reads; causes: the kinds of
    its diagnosis."""
    numel = case.spec.numel
    doc: dict[str, Any] = {
        "spec": case.spec.to_dict(),
        "verdict": {"passed": passed, "bit_exact": rel == 0.0, "criterion": "tolerance",
                    "exit_code": 0 if passed else 1},
        "statistics": [{"name": "predicted", "numel": numel, "max_rel_diff": rel,
                        "max_abs_diff": 0.5 if rel else 0.0, "mismatched": mismatched,
                        "rtol": 1.3e-6, "atol": 1e-5}],
        "environment": {"host": "node7", "slurm": slurm},
    }
    if causes:
        doc["diagnosis"] = [{"tensor": "predicted", "kind": kind, "text": f"a {kind} bug",
                             "factor": None, "elements": []} for kind in causes]
    return case_record(case, doc, "gid")


def put(store: Store, key: str, doc: dict[str, Any]) -> None:
    """Write a record as this sweep's task would: stamped with the sweep's grid id."""
    manifest = store.read_manifest()
    assert manifest is not None
    doc["case"]["grid_id"] = manifest["grid_id"]
    store.write_record(key, doc)


def make_sweep(root: Path, seeds: str = "0-3", dtypes: str = "float32,float64") -> tuple[Store,
                                                                                       list[Case]]:
    grid = build_grid({"seeds": seeds, "dtypes": dtypes, "shapes": "3x8,4x4"})
    store = Store(root)
    store.prepare(grid, force=False)
    return store, list(grid.cases())


def report_cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["report", *args])
    return result.exit_code, result.stdout, result.stderr


class TestAggregation:
    def test_all_passed(self, tmp_path: Path) -> None:
        store, cases = make_sweep(tmp_path)
        for case in cases:
            put(store, case.key, result_doc(case))
        report = build_report(store)
        assert report.total == 16 and report.counts == {"passed": 16, "failed": 0, "error": 0,
                                                        "missing": 0}
        assert report.exit_code == 0 and report.verdict == "passed"
        by = {(g.group, g.value): (g.cases, g.passed) for g in report.groups}
        assert by[("dtype", "float64")] == (8, 8) and by[("shape", "4x4")] == (8, 8)
        assert by[("device", "cpu")] == (16, 16) and by[("loss", "mse-sum")] == (16, 16)

    def test_mismatch_is_exit_1_and_ranked_worst(self, tmp_path: Path) -> None:
        store, cases = make_sweep(tmp_path)
        for i, case in enumerate(cases):
            put(store, case.key, result_doc(case, rel=i * 1e-7))
        bad = cases[5]
        put(store, bad.key, result_doc(bad, passed=False, rel=0.25, mismatched=3))
        report = build_report(store)
        assert report.exit_code == 1 and report.counts["failed"] == 1
        assert [r.key for r in report.failed] == [bad.key]
        assert report.worst[0].key == bad.key and report.worst[0].max_rel_diff == 0.25
        assert report.worst[1].key == cases[-1].key  # then the next greatest difference
        dtype_row = next(g for g in report.groups if g.value == bad.spec.dtype)
        assert dtype_row.failed == 1

    def test_nan_difference_is_the_worst(self, tmp_path: Path) -> None:
        store, cases = make_sweep(tmp_path, seeds="0-1")
        for case in cases:
            put(store, case.key, result_doc(case, rel=1e-3))
        put(store, cases[3].key, result_doc(cases[3], passed=False, rel="NaN"))
        report = build_report(store)
        assert report.worst[0].key == cases[3].key
        assert report.worst[0].max_rel_diff is not None and math.isnan(report.worst[0].max_rel_diff)

    def test_error_record_is_exit_3(self, tmp_path: Path) -> None:
        store, cases = make_sweep(tmp_path, seeds="0")
        for case in cases:
            put(store, case.key, result_doc(case))
        put(store, cases[0].key, error_record(cases[0], 3, "no CUDA here", "gid"))
        report = build_report(store)
        assert report.exit_code == 3 and report.errors[0].message == "no CUDA here"

    def test_missing_cases_carry_their_task_and_log_tail(self, tmp_path: Path) -> None:
        store, cases = make_sweep(tmp_path, seeds="0-1")
        logs = store.logs_dir
        logs.mkdir()
        keys = [c.key for c in cases]
        store.add_submission({"mode": "slurm", "arrays": [
            {"job_id": "77", "log_dir": str(logs), "tasks": [keys[0:4], keys[4:8]]}]})
        for case in cases[:4]:
            put(store, case.key, result_doc(
                case, slurm={"job_id": "78", "array_job_id": "77", "array_task_id": "0"}))
        lines = "\n".join(f"line {i}" for i in range(40))
        (logs / "77_1_0_log.err").write_text(lines + "\nsrun: error: node7: task 0: Killed\n")
        report = build_report(store, states={"77_1": "FAILED"})
        assert report.exit_code == 4 and report.verdict == "incomplete"
        assert [r.key for r in report.missing] == keys[4:8]
        assert {r.job for r in report.missing} == {"77_1"}
        assert report.cases[0].job == "77_0" and report.cases[0].host == "node7"
        (task,) = report.tasks
        assert task.job == "77_1" and task.state == "FAILED" and task.missing == keys[4:8]
        assert task.log_tail.endswith("srun: error: node7: task 0: Killed")
        assert "line 10" not in task.log_tail  # only the tail

    def test_unreadable_and_other_grid_records_are_missing_with_the_reason(
        self, tmp_path: Path
    ) -> None:
        """A record cut short and one left by another grid (a sweep before --force, whose
        tolerance may differ) never count as passed or failed."""
        store, cases = make_sweep(tmp_path, seeds="0")
        for case in cases:
            put(store, case.key, result_doc(case))
        store.record_path(cases[0].key).write_text('{"spec": ')
        stale = result_doc(cases[1], passed=False, rel=0.5, mismatched=9)
        store.write_record(cases[1].key, stale)  # stamped "gid": not this sweep's grid
        report = build_report(store)
        assert report.counts == {"passed": 2, "failed": 0, "error": 0, "missing": 2}
        assert report.exit_code == 4 and report.failed == []
        by_key = {r.key: r for r in report.missing}
        assert set(by_key) == {cases[0].key, cases[1].key}
        assert "is unreadable" in (by_key[cases[0].key].message or "")
        assert "a record of another grid (gid;" in (by_key[cases[1].key].message or "")
        assert set(report.ignored) == set(by_key)
        code, out, _ = report_cli(str(tmp_path))
        assert code == 4
        assert "2 record file(s) do not count and their cases are missing" in out
        assert f"{cases[0].key}.json is unreadable" in out.replace("\n", "")
        code, out, _ = report_cli(str(tmp_path), "--json")
        doc = json.loads(out)
        assert set(doc["ignored_records"]) == set(by_key)
        code, out, _ = report_cli(str(tmp_path), "--markdown")
        assert "2 record file(s) do not count" in out

    def test_no_manifest_is_bad_input(self, tmp_path: Path) -> None:
        code, out, err = report_cli(str(tmp_path))
        assert code == 2 and out == ""
        assert "holds no sweep" in err and "manifest.json is missing" in err


class TestViews:
    @pytest.fixture
    def failing(self, tmp_path: Path) -> Store:
        store, cases = make_sweep(tmp_path, seeds="0-1")
        for case in cases[:-1]:
            put(store, case.key, result_doc(case, rel=2e-7))
        put(store, cases[2].key, result_doc(cases[2], passed=False, rel=0.5, mismatched=2))
        return store

    def test_rich_table(self, failing: Store) -> None:
        code, out, err = report_cli(str(failing.root))
        assert code == 4 and err == ""  # one case is missing
        assert "Pass/fail by dimension" in out and "Worst cases" in out
        assert "Failed cases (gradient mismatch) (1)" in out
        assert "Missing cases (no record) (1)" in out
        assert "8 cases: 6 passed, 1 failed, 0 error, 1 missing → incomplete (exit 4)" in out

    def test_json_is_plain_and_complete(self, failing: Store) -> None:
        code, out, err = report_cli(str(failing.root), "--json")
        assert code == 4 and err == ""
        doc = json.loads(out)
        assert doc["kind"] == "report"
        assert doc["counts"] == {"passed": 6, "failed": 1, "error": 0, "missing": 1}
        assert doc["verdict"] == {"exit_code": 4, "summary": "incomplete"}
        assert len(doc["cases"]) == 8 and doc["failed"][0]["max_rel_diff"] == 0.5
        assert {"groups", "worst", "missing", "tasks", "grid", "grid_id"} <= set(doc)

    def test_markdown(self, failing: Store) -> None:
        code, out, _ = report_cli(str(failing.root), "--markdown")
        assert code == 4
        assert out.startswith("## autograd-check sweep: incomplete")
        assert "| dimension | value | cases | passed | failed | error | missing |" in out
        assert "| dtype | float32 | 4 | 4 | 0 | 0 | 0 |" in out
        assert "| dtype | float64 | 4 | 2 | 1 | 0 | 1 |" in out
        assert "### Failed cases (1)" in out and "### Missing cases (1)" in out

    def test_json_and_markdown_together_is_bad_input(self, failing: Store) -> None:
        code, out, err = report_cli(str(failing.root), "--json", "--markdown")
        assert code == 2 and "choose one of --json and --markdown" in err

    def test_plot_without_matplotlib_says_how_to_install(
        self, failing: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
        code, out, err = report_cli(str(failing.root), "--plot", str(tmp_path / "p.png"))
        assert code == 3 and out == ""
        assert "pip install 'autograd-check[plot]'" in err
        assert not (tmp_path / "p.png").exists()

    def test_plot_is_a_png(self, failing: Store, tmp_path: Path) -> None:
        pytest.importorskip("matplotlib")
        target = tmp_path / "p.png"
        code, _, err = report_cli(str(failing.root), "--plot", str(target))
        assert code == 4 and f"plot written to {target}" in err
        assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class TestCauses:
    """Failed cases counted by their diagnosis' kinds (kernel/diagnose.py), in every view."""

    @pytest.fixture
    def diagnosed(self, tmp_path: Path) -> tuple[Store, list[Case]]:
        store, cases = make_sweep(tmp_path, seeds="0-1")
        for case in cases:
            put(store, case.key, result_doc(case))
        for case, causes in zip(cases[:4], [("subset",), ("scale", "zero"), (), ("subset",)],
                                strict=True):
            put(store, case.key, result_doc(case, passed=False, rel=0.5, mismatched=2,
                                            causes=causes))
        return store, cases

    def test_counts_by_cause(self, diagnosed: tuple[Store, list[Case]]) -> None:
        store, cases = diagnosed
        report = build_report(store)
        # most first, then by name; a case naming two kinds counts under each; none: no diagnosis
        assert list(report.causes.items()) == [("subset", 2), ("none", 1), ("scale", 1),
                                               ("zero", 1)]
        assert [r.causes for r in report.failed] == [["subset"], ["scale", "zero"], [],
                                                     ["subset"]]
        assert all(r.causes == [] for r in report.cases if r.outcome == "passed")

    def test_views(self, diagnosed: tuple[Store, list[Case]]) -> None:
        store, cases = diagnosed
        code, out, _ = report_cli(str(store.root), "--json")
        doc = json.loads(out)
        assert code == 1 and doc["causes"] == {"subset": 2, "none": 1, "scale": 1, "zero": 1}
        assert doc["failed"][1]["causes"] == ["scale", "zero"]
        code, out, _ = report_cli(str(store.root))
        lines = [line.rstrip() for line in out.splitlines()]
        start = lines.index("Failures by likely cause")
        rows = [line.split() for line in lines[start + 1:start + 9] if line.strip()]
        assert rows[2:6] == [["subset", "2", cases[0].key], ["none", "1", cases[2].key],
                             ["scale", "1", cases[1].key], ["zero", "1", cases[1].key]]
        assert any(line.split()[-2:] == ["scale,", "zero"] for line in lines)  # its listing
        code, out, _ = report_cli(str(store.root), "--markdown")
        assert "### Failures by likely cause" in out and "| subset | 2 |" in out
        assert "likely cause scale, zero |" in out

    def test_a_passing_sweep_has_no_causes(self, tmp_path: Path) -> None:
        store, cases = make_sweep(tmp_path, seeds="0")
        for case in cases:
            put(store, case.key, result_doc(case))
        code, out, _ = report_cli(str(tmp_path), "--json")
        assert code == 0 and json.loads(out)["causes"] == {}
        code, out, _ = report_cli(str(tmp_path))
        assert "likely cause" not in out

    def test_a_sweep_of_a_planted_bug_counts_its_kind(self, tmp_path: Path) -> None:
        """examples/buggy_target.py (smooth L1's branch) swept here: each record's diagnosis is
        the branch, and the report counts it."""
        root = Path(__file__).resolve().parents[1]
        out = tmp_path / "s"
        got = runner.invoke(app, ["sweep", "--local", "--target",
                                  f"{root}/examples/buggy_target.py:smooth_l1", "--shapes",
                                  "8x8", "--seeds", "0-1", "--out", str(out), "--json"])
        assert got.exit_code == 1, got.output
        code, text, _ = report_cli(str(out), "--json")
        assert code == 1 and json.loads(text)["causes"] == {"subset": 2}
