"""The results store: atomic records, the manifest, refusing another grid, selection for resume."""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import stat
from pathlib import Path

import pytest

from autograd_check.base.errors import BadInput
from autograd_check.sweep import store as store_module
from autograd_check.sweep.grid import Grid, build_grid
from autograd_check.sweep.store import Store, atomic_write_text, error_record, outcome_of, select


def passed_doc(passed: bool = True, grid_id: str = "") -> dict[str, object]:
    return {"verdict": {"passed": passed}, "statistics": [], "case": {"grid_id": grid_id}}


@pytest.fixture
def grid3() -> Grid:
    return build_grid({"seeds": "0-2"})


class TestAtomicWrite:
    def test_writes_whole_text_and_leaves_no_temporary(self, tmp_path: Path) -> None:
        target = tmp_path / "a.json"
        atomic_write_text(target, "one")
        atomic_write_text(target, "two")
        assert target.read_text() == "two"
        assert os.listdir(tmp_path) == ["a.json"]

    @pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError])
    def test_interrupted_write_keeps_the_old_file_and_no_temporary(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, interruption: type[BaseException]
    ) -> None:
        target = tmp_path / "a.json"
        atomic_write_text(target, "old")

        def boom(fd: int) -> None:
            raise interruption()

        monkeypatch.setattr(store_module.os, "fsync", boom)
        with pytest.raises(interruption):
            atomic_write_text(target, "new and longer")
        assert target.read_text() == "old"
        assert os.listdir(tmp_path) == ["a.json"]

    def test_interrupted_first_write_leaves_no_record(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grid3: Grid
    ) -> None:
        store = Store(tmp_path)
        monkeypatch.setattr(store_module.os, "replace", _raise_interrupt)
        with pytest.raises(KeyboardInterrupt):
            store.write_record("k", passed_doc())
        assert store.recorded_keys() == set()
        assert os.listdir(store.records_dir) == []


def _raise_interrupt(*args: object) -> None:
    raise KeyboardInterrupt


class TestRecords:
    def test_record_round_trip_and_keys(self, tmp_path: Path) -> None:
        store = Store(tmp_path / "out")
        store.write_record("a", passed_doc())
        store.write_record("b", passed_doc(False))
        (store.records_dir / ".b.json.123.tmp").write_text("{half")  # a stray temporary
        assert store.recorded_keys() == {"a", "b"}
        assert store.read_record("a") == passed_doc()
        assert store.read_record("missing") is None
        assert store.record_path("a").read_text().endswith("\n")

    def test_outcomes(self, grid3: Grid) -> None:
        assert outcome_of(passed_doc()) == "passed"
        assert outcome_of(passed_doc(False)) == "failed"
        case = next(build_grid({}).cases())
        doc = error_record(case, 3, "no CUDA", "id")
        assert outcome_of(doc) == "error"
        assert doc["case"]["key"] == case.key and doc["spec"]["shape"] == [3, 8]
        assert doc["error"] == {"exit_code": 3, "message": "no CUDA"}


class TestPrepare:
    def test_new_directory_gets_a_manifest(self, tmp_path: Path, grid3: Grid) -> None:
        store = Store(tmp_path / "deep" / "out")
        manifest, removed = store.prepare(grid3, force=False)
        assert removed == 0
        on_disk = json.loads(store.manifest_path.read_text())
        assert on_disk == manifest
        assert on_disk["grid_id"] == grid3.grid_id() and on_disk["cases"] == 3
        assert on_disk["kind"] == "manifest" and on_disk["submissions"] == []
        assert store.grid() == grid3

    def test_same_grid_keeps_manifest_and_records(self, tmp_path: Path, grid3: Grid) -> None:
        store = Store(tmp_path)
        store.prepare(grid3, force=False)
        store.add_submission({"mode": "local"})
        store.write_record("x", passed_doc())
        manifest, removed = store.prepare(grid3, force=False)
        assert removed == 0 and manifest["submissions"] == [{"mode": "local"}]
        assert store.recorded_keys() == {"x"}

    def test_other_grid_is_refused_then_forced(self, tmp_path: Path, grid3: Grid) -> None:
        store = Store(tmp_path)
        store.prepare(grid3, force=False)
        store.write_record("x", passed_doc())
        other = build_grid({"seeds": "0-3"})
        with pytest.raises(BadInput) as e:
            store.prepare(other, force=False)
        assert "holds another sweep (grid shapes 3x8; dtypes float32; devices cpu; losses " \
               "mse-sum; seeds 0,1,2); this one is" in str(e.value)
        assert "--force to overwrite it" in str(e.value)
        manifest, removed = store.prepare(other, force=True)
        assert removed == 1 and store.recorded_keys() == set()
        assert manifest["grid_id"] == other.grid_id()

    def test_not_writable_is_bad_input(self, tmp_path: Path, grid3: Grid) -> None:
        blocker = tmp_path / "file"
        blocker.write_text("")
        with pytest.raises(BadInput, match="is not a writable directory"):
            Store(blocker / "out").prepare(grid3, force=False)

    @pytest.mark.parametrize("text", ["{not json", '{"kind": "something else"}', "[]"])
    def test_foreign_manifest_is_bad_input(self, tmp_path: Path, text: str) -> None:
        (tmp_path / "manifest.json").write_text(text)
        with pytest.raises(BadInput, match="manifest"):
            Store(tmp_path).read_manifest()


class TestSelect:
    def test_resume_skips_recorded_and_rerun_failed_takes_failures(
        self, tmp_path: Path, grid3: Grid
    ) -> None:
        store = Store(tmp_path)
        cases = list(grid3.cases())
        gid = grid3.grid_id()
        store.write_record(cases[0].key, passed_doc(grid_id=gid))
        store.write_record(cases[1].key, passed_doc(False, grid_id=gid))
        todo, skipped = select(cases, store, gid)
        assert [c.key for c in todo] == [cases[2].key] and skipped == 2
        todo, skipped = select(cases, store, gid, rerun_failed=True)
        assert [c.key for c in todo] == [cases[1].key, cases[2].key] and skipped == 1

    @pytest.mark.parametrize(
        ("text", "problem"),
        [
            ('{"spec": ', "is unreadable"),  # cut short
            ('{"spec": {}}', "not a whole record"),
            ("[]", "is unreadable"),
            (json.dumps(passed_doc(grid_id="0123456789abcdef")), "a record of another grid"),
            (json.dumps(passed_doc()), "a record of another grid (no grid id"),
        ],
    )
    def test_unusable_record_counts_as_missing(
        self, tmp_path: Path, grid3: Grid, text: str, problem: str
    ) -> None:
        store = Store(tmp_path)
        cases = list(grid3.cases())
        gid = grid3.grid_id()
        for case in cases:
            store.write_record(case.key, passed_doc(grid_id=gid))
        store.record_path(cases[1].key).write_text(text)
        todo, skipped = select(cases, store, gid)
        assert [c.key for c in todo] == [cases[1].key] and skipped == 2
        assert not store.has_record(cases[1].key, gid) and store.has_record(cases[0].key, gid)
        reason = store.problem_of(cases[1].key, gid)
        assert reason is not None and problem in reason and cases[1].key in reason
        good, bad = store.credited_records(gid)
        assert set(good) == {cases[0].key, cases[2].key}
        assert set(bad) == {cases[1].key} and problem in bad[cases[1].key]
        assert store.problem_of("nothing", gid) == "no record"


class TestModes:
    @pytest.mark.parametrize("umask", [0o000, 0o002, 0o022, 0o077])
    def test_everything_is_the_users_only_whatever_the_umask(
        self, tmp_path: Path, grid3: Grid, umask: int
    ) -> None:
        old = os.umask(umask)
        try:
            store = Store(tmp_path / "grp" / "out")
            store.prepare(grid3, force=False)
            store.write_record("k", passed_doc())
            store.supersede("k")
            store.write_record("k", passed_doc())
            with store.locked():
                pass
        finally:
            os.umask(old)
        made = [tmp_path / "grp", *(tmp_path / "grp").rglob("*")]
        assert {store.manifest_path, store.record_path("k"), store.root / "superseded"} < set(made)
        for path in made:
            assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path


def _add_many(root: str, tag: str, count: int) -> None:
    store = Store(Path(root))
    for i in range(count):
        store.add_submission({"mode": "local", "who": tag, "i": i})


class TestLock:
    def test_two_processes_lose_no_submission(self, tmp_path: Path, grid3: Grid) -> None:
        """Without the lock, two read-modify-write loops overwrite each other's appends."""
        store = Store(tmp_path)
        store.prepare(grid3, force=False)
        context = multiprocessing.get_context("fork")
        procs = [context.Process(target=_add_many, args=(str(tmp_path), tag, 40))
                 for tag in ("a", "b")]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0
        manifest = store.read_manifest()
        assert manifest is not None
        seen = sorted((s["who"], s["i"]) for s in manifest["submissions"])
        assert seen == sorted((tag, i) for tag in ("a", "b") for i in range(40))

    def test_lock_is_reentrant_and_exclusive(self, tmp_path: Path, grid3: Grid) -> None:
        store = Store(tmp_path)
        store.prepare(grid3, force=False)
        waited: list[bool] = []
        with store.locked():
            index = store.add_submission({"mode": "slurm"})  # takes the lock again: no deadlock
            store.add_array(index, {"job_id": "7"})
            store.update_submission(index, ended="now")
            other = os.open(tmp_path / ".lock", os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(other)
        with Store(tmp_path).locked(on_wait=lambda: waited.append(True)):
            pass
        assert waited == []  # released: a second Store gets it at once
        manifest = store.read_manifest()
        assert manifest is not None
        assert manifest["submissions"] == [{"mode": "slurm", "arrays": [{"job_id": "7"}],
                                            "ended": "now"}]

    def test_force_clears_superseded_and_logs(self, tmp_path: Path, grid3: Grid) -> None:
        store = Store(tmp_path)
        store.prepare(grid3, force=False)
        store.write_record("k", passed_doc())
        store.supersede("k")
        (store.logs_dir).mkdir()
        (store.logs_dir / "5_0_0_log.out").write_text("old")
        assert store.clear_old_files() == ["superseded/", "logs/"]
        assert not (tmp_path / "superseded").exists() and not store.logs_dir.exists()
        assert store.clear_old_files() == []
