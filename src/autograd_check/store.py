"""The results store of a sweep: one JSON record per case, written atomically, and a manifest.

Layout of DIR (`--out`):

    DIR/manifest.json          the grid, its id, and every submission (local or Slurm job ids)
    DIR/records/<key>.json     one record per finished case: `run --json`'s document + "case"
    DIR/logs/                  Slurm logs of the array tasks (submitit's folder)
    DIR/superseded/            records moved aside by --rerun-failed (<key>.<time>.json)

Records are the truth: a case is done exactly when its record exists. A record is written to a
temporary file in the same directory, flushed, fsync'd and renamed over its final name, so a
reader (or a sweep killed at any moment) sees either no record or a whole one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from autograd_check.errors import BadInput
from autograd_check.grid import Case, Grid
from autograd_check.result import SCHEMA_VERSION, dumps

MANIFEST = "manifest.json"
RECORDS = "records"
LOGS = "logs"
SUPERSEDED = "superseded"
KIND = "autograd-check sweep"
DEFAULT_OUT = "sweep-results"
"""--out when not given: ./sweep-results, relative to where the sweep starts."""


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that `path` is either its old self or the whole new text."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # Ctrl-C or a full disk mid-write: leave no temporary behind (the final name is untouched).
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (on file systems that allow opening directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def outcome_of(doc: Mapping[str, Any]) -> str:
    """'passed', 'failed' (a mismatch) or 'error' (the check could not run)."""
    if "error" in doc:
        return "error"
    return "passed" if doc.get("verdict", {}).get("passed") else "failed"


class Store:
    """A sweep's directory. Only the submitting process writes the manifest; tasks write records."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.records_dir = self.root / RECORDS
        self.logs_dir = self.root / LOGS
        self.manifest_path = self.root / MANIFEST

    # -- records -------------------------------------------------------------------------------
    def record_path(self, key: str) -> Path:
        return self.records_dir / f"{key}.json"

    def write_record(self, key: str, doc: Mapping[str, Any]) -> None:
        self.records_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.record_path(key), dumps(doc) + "\n")

    def has_record(self, key: str) -> bool:
        return self.record_path(key).is_file()

    def recorded_keys(self) -> set[str]:
        """Keys with a record (temporary files, dot-prefixed, are never counted)."""
        try:
            names = os.listdir(self.records_dir)
        except FileNotFoundError:
            return set()
        return {n[:-5] for n in names if n.endswith(".json") and not n.startswith(".")}

    def read_record(self, key: str) -> dict[str, Any] | None:
        """The record, or None when there is none (or it cannot be read as a record)."""
        try:
            doc = json.loads(self.record_path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def read_records(self, keys: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        wanted = self.recorded_keys() if keys is None else set(keys) & self.recorded_keys()
        out = {}
        for key in sorted(wanted):
            doc = self.read_record(key)
            if doc is not None:
                out[key] = doc
        return out

    def supersede(self, key: str) -> None:
        """Move a record aside (--rerun-failed) into superseded/, so the case runs again while
        its old result is kept for comparison."""
        target = self.root / SUPERSEDED
        target.mkdir(exist_ok=True)
        stamp = now().replace(":", "")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.record_path(key), target / f"{key}.{stamp}.json")

    def clear_records(self) -> int:
        """Delete every record (--force); returns how many there were."""
        count = 0
        for key in self.recorded_keys():
            with contextlib.suppress(FileNotFoundError):
                self.record_path(key).unlink()
                count += 1
        return count

    # -- manifest ------------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        try:
            text = self.manifest_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as e:
            raise BadInput(f"{self.manifest_path} cannot be read: {e.strerror or e}") from None
        try:
            doc = json.loads(text)
        except ValueError:
            raise BadInput(f"{self.manifest_path} is not a sweep manifest (not JSON)") from None
        if not isinstance(doc, dict) or doc.get("kind") != KIND or "grid" not in doc:
            raise BadInput(f"{self.manifest_path} is not an autograd-check sweep manifest")
        return doc

    def write_manifest(self, doc: Mapping[str, Any]) -> None:
        atomic_write_text(self.manifest_path, dumps(doc) + "\n")

    def grid(self) -> Grid:
        manifest = self.read_manifest()
        if manifest is None:
            raise BadInput(f"{self.root} holds no sweep ({MANIFEST} is missing)")
        return Grid.from_dict(manifest["grid"])

    def add_submission(self, submission: Mapping[str, Any]) -> None:
        manifest = self.read_manifest()
        assert manifest is not None, "prepare() writes the manifest first"
        manifest.setdefault("submissions", []).append(dict(submission))
        self.write_manifest(manifest)

    def update_last_submission(self, **fields: Any) -> None:
        manifest = self.read_manifest()
        assert manifest is not None and manifest.get("submissions")
        manifest["submissions"][-1].update(fields)
        self.write_manifest(manifest)

    # -- set-up --------------------------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Create DIR and its records folder, and prove a file can be written there."""
        try:
            self.records_dir.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.records_dir, prefix=".probe.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise BadInput(
                f"--out {str(self.root)!r} is not a writable directory: {e.strerror or e}"
            ) from None

    def prepare(self, grid: Grid, *, force: bool) -> tuple[dict[str, Any], int]:
        """Make DIR ready for this grid: (manifest, records removed by --force).

        A DIR holding another grid's manifest is refused unless `force`; `force` also removes
        every record so that the whole grid runs again.
        """
        manifest = self.read_manifest() if self.root.exists() else None
        if manifest is not None and manifest.get("grid_id") != grid.grid_id() and not force:
            old = manifest.get("grid", {})
            raise BadInput(
                f"--out {str(self.root)!r} holds another sweep (grid {_grid_line(old)}); "
                f"this one is {_grid_line(grid.to_dict())}. Use another --out, or --force to "
                "overwrite it"
            )
        self.ensure_writable()
        removed = self.clear_records() if force else 0
        if manifest is None or force:
            manifest = {
                "kind": KIND,
                "schema_version": SCHEMA_VERSION,
                "created": now(),
                "grid": grid.to_dict(),
                "grid_id": grid.grid_id(),
                "cases": grid.size,
                "submissions": [],
            }
            self.write_manifest(manifest)
        return manifest, removed


def _grid_line(grid: Mapping[str, Any]) -> str:
    parts = [f"{k} {','.join(str(v) for v in grid.get(k, []))}" for k in
             ("shapes", "dtypes", "devices", "losses", "seeds")]
    return "; ".join(parts)


def select(
    cases: Iterable[Case], store: Store, *, rerun_failed: bool = False
) -> tuple[list[Case], int]:
    """(cases to run, cases skipped because they have a record).

    A record means done, unless `rerun_failed` and the record is a mismatch or an error.
    """
    recorded = store.recorded_keys()
    todo: list[Case] = []
    skipped = 0
    for case in cases:
        if case.key not in recorded:
            todo.append(case)
            continue
        if rerun_failed:
            doc = store.read_record(case.key)
            if doc is None or outcome_of(doc) != "passed":
                todo.append(case)
                continue
        skipped += 1
    return todo, skipped


def case_record(case: Case, doc: Mapping[str, Any], grid_id: str) -> dict[str, Any]:
    """A record: the result document plus where the case sits in its sweep."""
    return {**doc, "case": {"key": case.key, "index": case.index, "grid_id": grid_id,
                            "finished": now(), "host": socket.gethostname()}}


def error_record(case: Case, exit_code: int, message: str, grid_id: str) -> dict[str, Any]:
    """A case whose check could not run (CUDA not usable there, not enough memory...)."""
    from autograd_check import __version__

    doc = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "autograd-check", "version": __version__},
        "spec": case.spec.to_dict(),
        "error": {"exit_code": exit_code, "message": message},
    }
    return case_record(case, doc, grid_id)
