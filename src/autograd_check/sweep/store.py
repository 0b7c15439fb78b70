"""The results store of a sweep: one JSON record per case, written atomically, and a manifest.

Layout of DIR (`--out`):

    DIR/manifest.json          the grid, its id, and every submission (local or Slurm job ids)
    DIR/records/<key>.json     one record per finished case: `run --json`'s document + "case"
    DIR/logs/                  Slurm logs of the array tasks (submitit's folder)
    DIR/superseded/            records moved aside by --rerun-failed (<key>.<time>.json)
    DIR/.lock                  flock'd around every read-modify-write of the manifest

Records are the truth: a case is done exactly when its record exists, is a plain file of yours
(never another user's: a group member who plants "passed" records must not make a sweep pass),
reads as a record, and carries this sweep's grid id (`credited`); anything else (half a file,
another grid's record, someone else's) counts as missing everywhere. A record is written to a
temporary file in the same directory, flushed, fsync'd and renamed over its final name, so a
reader (or a sweep killed at any moment) sees either no record or a whole one. Folders are 0700
and files 0600 whatever the umask: a sweep's files are its user's only (the manifest holds its
setup lines, secrets masked; the array's tasks load pickles from DIR/logs), see docs/security.md.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from autograd_check.base.document import dumps, envelope
from autograd_check.base.errors import BadInput, EnvironmentProblem
from autograd_check.base.process import leave_if_copy
from autograd_check.base.safety import PRIVATE_FILE, check_folder_chain, make_private_dirs
from autograd_check.sweep.grid import Case, Grid

MANIFEST = "manifest.json"
DAMAGED_HINT = ("the tool does not write it so; move the folder aside (its records may still "
                "be read one by one) and run the sweep again, or use another --out")
RECORDS = "records"
LOGS = "logs"
SUPERSEDED = "superseded"
LOCK = ".lock"
KIND = "manifest"
"""The manifest's document kind (autograd_check.base.document)."""
DEFAULT_OUT = "sweep-results"
TEMPORARY_GRACE_S = 60.0
"""A temporary file untouched this long was left by a writer that was killed (see
Store.remove_temporaries): writing a record takes milliseconds."""
"""--out when not given: ./sweep-results, relative to where the sweep starts."""


class DamagedStore(BadInput):
    """A sweep folder whose manifest or records/ is not of the shape the tool writes (edited,
    or written by something else): one line naming the file and what is wrong, exit 2."""


def _json_kind(value: Any) -> str:
    """A JSON value's kind as JSON names it: null, an object, a list, a string, ..."""
    kinds = ((bool, "a boolean"), (dict, "an object"), (list, "a list"), (str, "a string"),
             (int, "a number"), (float, "a number"))
    return "null" if value is None else next((k for t, k in kinds if isinstance(value, t)),
                                             type(value).__name__)


def manifest_problem(doc: Mapping[str, Any]) -> str | None:
    """What is wrong with a manifest's shape (None: nothing), in words, before any part of it is
    used: a field of the wrong kind would otherwise surface as a traceback deep in a command."""
    grid = doc.get("grid")
    if not isinstance(grid, dict):
        return f"its 'grid' is {_json_kind(grid)}, not an object"
    if not isinstance(doc.get("grid_id", ""), str):
        return f"its 'grid_id' is {_json_kind(doc['grid_id'])}, not a string"
    submissions = doc.get("submissions", [])
    if not isinstance(submissions, list):
        return f"its 'submissions' is {_json_kind(submissions)}, not a list"
    for index, submission in enumerate(submissions):
        if not isinstance(submission, dict):
            return f"its submission {index} is {_json_kind(submission)}, not an object"
        arrays = submission.get("arrays", [])
        if not isinstance(arrays, list) or not all(isinstance(a, dict) for a in arrays):
            return f"the arrays of its submission {index} are not a list of objects"
        for array in arrays:
            if not isinstance(array.get("task_jobs", []), list):
                return f"an array of its submission {index} has 'task_jobs' that is not a list"
    return None


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that `path` is either its old self or the whole new text.

    The file is 0600 (the user's only) whatever the umask. Ctrl-C, SIGTERM and SIGHUP wait until
    the write is done or undone: arriving between creating the temporary and renaming it (inside
    mkstemp, say), they would leave a temporary behind. A fork of the sweep made by a user's
    code ends here, writing nothing (process.leave_if_copy)."""
    leave_if_copy()
    with _signals_held():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, PRIVATE_FILE)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            # A full disk mid-write: leave no temporary behind (the final name is untouched).
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    _fsync_dir(path.parent)


_HELD = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold the stopping signals for the block (main thread); they arrive when it ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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


FOREIGN = "written by another user"
"""How a record that is not yours is named among the records that do not count."""
RECORDS_RISK = "write records there that make a sweep pass (or fail) as if you ran it"


def read_own_text(path: Path) -> tuple[str | None, str | None]:
    """(text, None) for a plain file of yours that nobody else can write, read from the
    descriptor that was checked (O_NOFOLLOW, fstat); else (None, why). FileNotFoundError when it
    is not there."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise
        if e.errno == errno.ELOOP:
            return None, "a symbolic link, not a record"
        return None, f"unreadable: {e.strerror or e}"
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "not a plain file"
        if st.st_uid != os.getuid():
            return None, f"{FOREIGN} (uid {st.st_uid}), not by you"
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return None, f"writable by other users (mode {oct(stat.S_IMODE(st.st_mode))[2:]})"
        os.set_blocking(fd, True)
        try:
            return f.read().decode("utf-8"), None
        except (OSError, UnicodeDecodeError) as e:
            return None, f"unreadable: {e}"


def outcome_of(doc: Mapping[str, Any]) -> str:
    """'passed', 'failed' (a mismatch) or 'error' (the check could not run)."""
    if "error" in doc:
        return "error"
    return "passed" if doc.get("verdict", {}).get("passed") else "failed"


def record_problem(doc: Any, grid_id: str) -> str | None:
    """Why a record read from disk does not count for the sweep with `grid_id` (None: it does).

    Half a record (no verdict and no error) and a record of another grid (a sweep into the same
    DIR before a --force) are not credited: their case counts as missing and runs again."""
    if not isinstance(doc, dict):
        return "unreadable (not a JSON object)"
    if "error" not in doc and "verdict" not in doc:
        return "not a whole record (no verdict and no error)"
    shape = shape_problem(doc)
    if shape is not None:
        return f"of the wrong shape ({shape})"
    case = doc.get("case")
    theirs = case.get("grid_id") if isinstance(case, dict) else None
    if theirs != grid_id:
        return f"a record of another grid ({theirs or 'no grid id'}; this sweep is {grid_id})"
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def shape_problem(doc: Mapping[str, Any]) -> str | None:
    """What, in a record that is a JSON object, has a shape the report and resume cannot read
    (None: every part they read is there in its form). The one check of a record's shape: a
    record that fails it is set aside like an unreadable one, and its case runs again."""
    if "error" in doc:
        if not isinstance(doc["error"], dict):
            return f"'error' is {_kind(doc['error'])}, not an object"
    else:
        verdict = doc.get("verdict")
        if not isinstance(verdict, dict):
            return f"'verdict' is {_kind(verdict)}, not an object"
        if not isinstance(verdict.get("passed"), bool):
            return f"'verdict.passed' is {_kind(verdict.get('passed'))}, not true or false"
    for name in ("case", "environment"):
        if doc.get(name) is not None and not isinstance(doc[name], dict):
            return f"'{name}' is {_kind(doc[name])}, not an object"
    env = doc.get("environment") or {}
    if env.get("slurm") is not None and not isinstance(env["slurm"], dict):
        return f"'environment.slurm' is {_kind(env['slurm'])}, not an object"
    stats = doc.get("statistics")
    if stats is None:
        return None
    if not isinstance(stats, list) or not all(isinstance(s, dict) for s in stats):
        return f"'statistics' is {_kind(stats)}, not a list of objects"
    for s in stats:
        count = s.get("mismatched", 0)
        if isinstance(count, bool) or not isinstance(count, int):
            return f"'statistics[].mismatched' is {_kind(count)}, not a whole number"
    return None


class Store:
    """A sweep's directory. Only the submitting process writes the manifest; tasks write records."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.records_dir = self.root / RECORDS
        self.logs_dir = self.root / LOGS
        self.manifest_path = self.root / MANIFEST
        self._lock_depth = 0

    # -- records -------------------------------------------------------------------------------
    def record_path(self, key: str) -> Path:
        return self.records_dir / f"{key}.json"

    def write_record(self, key: str, doc: Mapping[str, Any]) -> None:
        self._write(self.record_path(key), dumps(doc) + "\n", make_folder=True)

    def _write(self, path: Path, text: str, *, make_folder: bool = False) -> None:
        """atomic_write_text; a file system that refuses the write (full, over quota, read-only)
        is EnvironmentProblem naming the folder (exit 3): the records written before stay."""
        try:
            if make_folder:
                make_private_dirs(path.parent)
            atomic_write_text(path, text)
        except OSError as e:
            raise EnvironmentProblem(
                f"cannot write {path.name} in {path.parent}: {e.strerror or e}; the records "
                "written so far stay: make room there and run the same command again to resume"
            ) from None

    def has_record(self, key: str, grid_id: str) -> bool:
        """Whether `key` has a record that counts for this grid (see `record_problem`)."""
        return self.problem_of(key, grid_id) is None

    def problem_of(self, key: str, grid_id: str) -> str | None:
        """None when `key` has a credited record, else why not ('no record', 'unreadable...')."""
        path = self.record_path(key)
        try:
            text, why = read_own_text(path)
        except FileNotFoundError:
            return "no record"
        if text is None:
            return f"{path} is {why}"
        try:
            doc = json.loads(text)
        except ValueError:
            return f"{path} is unreadable: not JSON (cut short?)"
        problem = record_problem(doc, grid_id)
        return None if problem is None else f"{path} is {problem}"

    def credited_records(
        self, grid_id: str, keys: Iterable[str] | None = None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """(credited records by key, problem by key for the files that are not credited)."""
        wanted = self.recorded_keys() if keys is None else set(keys) & self.recorded_keys()
        good: dict[str, dict[str, Any]] = {}
        bad: dict[str, str] = {}
        for key in sorted(wanted):
            try:
                text, why = read_own_text(self.record_path(key))
            except FileNotFoundError:
                continue  # gone meanwhile (moved aside): no record
            doc = None
            if text is not None:
                with contextlib.suppress(ValueError):
                    doc = json.loads(text)
                why = "unreadable (not a JSON record)"
            if doc is None or not isinstance(doc, dict):
                bad[key] = f"{self.record_path(key)} is {why}"
            elif (reason := record_problem(doc, grid_id)) is not None:
                bad[key] = f"{self.record_path(key)} is {reason}"
            else:
                good[key] = doc
        return good, bad

    def check_safe(self, what: str = "--out") -> None:
        """BadInput when another user could change DIR, its records folder or the way to them
        (safety.check_folder_chain): they could plant records, and a record is a verdict."""
        check_folder_chain(self.root, what, risk=RECORDS_RISK)
        if os.path.lexists(self.records_dir):
            check_folder_chain(self.records_dir, f"{what} records folder", risk=RECORDS_RISK)

    def recorded_keys(self) -> set[str]:
        """Keys with a record (temporary files, dot-prefixed, are never counted)."""
        try:
            names = os.listdir(self.records_dir)
        except FileNotFoundError:
            return set()
        except NotADirectoryError:
            raise DamagedStore(
                f"{self.records_dir} is not a folder, so this sweep's records cannot be read: "
                f"{DAMAGED_HINT}") from None
        return {n[:-5] for n in names if n.endswith(".json") and not n.startswith(".")}

    def read_record(self, key: str) -> dict[str, Any] | None:
        """The record, or None when there is none (or it cannot be read as a record)."""
        try:
            text, _why = read_own_text(self.record_path(key))
            doc = json.loads(text) if text is not None else None
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def supersede(self, key: str) -> None:
        """Move a record aside (--rerun-failed) into superseded/, so the case runs again while
        its old result is kept for comparison."""
        target = self.root / SUPERSEDED
        make_private_dirs(target)
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

    def clear_old_files(self) -> list[str]:
        """--force: remove superseded/ and DIR/logs/ (old records moved aside, the Slurm logs of
        arrays that no longer count); returns what was removed, as 'superseded/' etc."""
        removed = []
        for name in (SUPERSEDED, LOGS):
            folder = self.root / name
            if folder.is_dir() and not folder.is_symlink():
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(f"{name}/")
        return removed

    def remove_temporaries(self, older_than_s: float = TEMPORARY_GRACE_S) -> list[Path]:
        """Remove what a killed writer left: atomic_write_text's `.NAME.*.tmp` files (in DIR and
        records/) and ensure_writable's `.probe.*`, not touched for `older_than_s` seconds (a
        live writer finishes with its file in milliseconds). Returns what was removed."""
        limit = time.time() - older_than_s
        removed: list[Path] = []
        for folder, patterns in ((self.root, (".*.tmp",)),
                                 (self.records_dir, (".*.tmp", ".probe.*"))):
            for pattern in patterns:
                for path in folder.glob(pattern):
                    with contextlib.suppress(OSError):  # gone already, or not ours to remove
                        if path.is_file() and not path.is_symlink() and (
                                path.lstat().st_mtime < limit):
                            path.unlink()
                            removed.append(path)
        return removed

    # -- the lock ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold DIR/.lock (flock) while reading, changing and writing the manifest, so two sweeps
        into one DIR cannot lose each other's submissions. `on_wait` runs once if another
        process holds it (it is held for seconds at most: while arrays are submitted).
        Re-entrant within one Store: a second flock on a new descriptor would wait for itself."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.ensure_writable()
        try:
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except OSError as e:
            raise BadInput(f"{self.root / LOCK} cannot be opened: {e.strerror or e}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_depth = 1
            yield
        finally:
            self._lock_depth = 0
            os.close(fd)  # closing the descriptor releases the lock

    # -- manifest ------------------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any] | None:
        """The manifest; None when there is none; BadInput when it is not yours (or not a plain
        file of yours that only you can write) or not a manifest."""
        try:
            text, why = read_own_text(self.manifest_path)
        except FileNotFoundError:
            return None
        if text is None:
            raise BadInput(f"{self.manifest_path} is {why}; a sweep's manifest is read only "
                           "from a file of yours")
        try:
            doc = json.loads(text)
        except ValueError:
            raise BadInput(f"{self.manifest_path} is not a sweep manifest (not JSON)") from None
        if not isinstance(doc, dict) or doc.get("kind") != KIND or "grid" not in doc:
            raise BadInput(f"{self.manifest_path} is not an autograd-check sweep manifest")
        problem = manifest_problem(doc)
        if problem is not None:
            raise DamagedStore(f"{self.manifest_path} is damaged: {problem}: {DAMAGED_HINT}")
        return doc

    def write_manifest(self, doc: Mapping[str, Any]) -> None:
        self._write(self.manifest_path, dumps(doc) + "\n")

    def grid(self) -> Grid:
        manifest = self.read_manifest()
        if manifest is None:
            raise BadInput(f"{self.root} holds no sweep ({MANIFEST} is missing)")
        return Grid.from_dict(manifest["grid"])

    def update_manifest(self, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Read, change (in place) and write the manifest under the lock; returns it."""
        with self.locked():
            manifest = self.read_manifest()
            assert manifest is not None, "prepare() writes the manifest first"
            change(manifest)
            self.write_manifest(manifest)
        return manifest

    def add_submission(self, submission: Mapping[str, Any]) -> int:
        """Append a submission; returns its index, for `update_submission`."""
        where: list[int] = []

        def add(manifest: dict[str, Any]) -> None:
            submissions = manifest.setdefault("submissions", [])
            submissions.append(dict(submission))
            where.append(len(submissions) - 1)

        self.update_manifest(add)
        return where[0]

    def update_submission(self, index: int, **fields: Any) -> None:
        self.update_manifest(lambda manifest: manifest["submissions"][index].update(fields))

    def add_array(self, index: int, array: Mapping[str, Any]) -> None:
        """Record an array that Slurm accepted under submission `index`."""
        self.update_manifest(
            lambda manifest: manifest["submissions"][index].setdefault("arrays", [])
            .append(dict(array))
        )

    # -- set-up --------------------------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Create DIR and its records folder, and prove a file can be written there."""
        try:
            make_private_dirs(self.records_dir)
            fd, probe = tempfile.mkstemp(dir=self.records_dir, prefix=".probe.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the place is right, the disk is full
                raise EnvironmentProblem(
                    f"--out {str(self.root)!r}: {e.strerror or e}; make room and run again"
                ) from None
            raise BadInput(
                f"--out {str(self.root)!r} is not a writable directory: {e.strerror or e}"
            ) from None

    def check_grid(self, grid: Grid, *, force: bool) -> dict[str, Any] | None:
        """The manifest in DIR, if any; another grid's is refused (BadInput) unless `force`."""
        manifest = self.read_manifest() if self.root.exists() else None
        if manifest is not None and manifest.get("grid_id") != grid.grid_id() and not force:
            old = manifest.get("grid", {})
            raise BadInput(
                f"--out {str(self.root)!r} holds another sweep (grid {_grid_line(old)}); "
                f"this one is {_grid_line(grid.to_dict())}. Use another --out, or --force to "
                "overwrite it"
            )
        return manifest

    def prepare(self, grid: Grid, *, force: bool) -> tuple[dict[str, Any], int]:
        """Make DIR ready for this grid: (manifest, records removed by --force).

        A DIR holding another grid's manifest is refused unless `force`; `force` also removes
        every record so that the whole grid runs again. The caller holds `locked()` (or is alone),
        and has made sure no earlier submission is still running (sweep.launch does).
        """
        manifest = self.check_grid(grid, force=force)
        self.ensure_writable()
        removed = self.clear_records() if force else 0
        if manifest is None or force:
            manifest = envelope(KIND, {
                "created": now(),
                "grid": grid.to_dict(),
                "grid_id": grid.grid_id(),
                "cases": grid.size,
                "submissions": [],
            })
            self.write_manifest(manifest)
        return manifest, removed


def _grid_line(grid: Mapping[str, Any]) -> str:
    parts = [f"{k} {','.join(str(v) for v in grid.get(k, []))}" for k in
             ("shapes", "dtypes", "devices", "losses", "seeds",
              *(a for a in ("ranks", "parallel") if a in grid))]
    return "; ".join(parts)


def select(
    cases: Iterable[Case], store: Store, grid_id: str, *, rerun_failed: bool = False
) -> tuple[list[Case], int]:
    """(cases to run, cases skipped because they have a credited record).

    A credited record means done, unless `rerun_failed` and the record is a mismatch or an error.
    A record that is unreadable, half written or of another grid does not count: its case runs.
    """
    cases = list(cases)
    credited, _ = store.credited_records(grid_id, [c.key for c in cases])
    todo: list[Case] = []
    skipped = 0
    for case in cases:
        doc = credited.get(case.key)
        if doc is None or (rerun_failed and outcome_of(doc) != "passed"):
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
    doc = envelope("check", {
        "spec": case.spec.to_dict(),
        "error": {"exit_code": exit_code, "message": message},
    })
    return case_record(case, doc, grid_id)
