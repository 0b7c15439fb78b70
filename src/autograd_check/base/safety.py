"""What keeps another user out of your jobs and results (docs/security.md).

- `script_value`: the one check of a value that is written into an sbatch script (a path, a
  setup line, an sbatch option): no newline or other control character, and for paths no `%`
  (Slurm and submitit expand %j, %u ... in them).
- `check_folder_chain`: a folder that will hold the pickles a job loads (its log folder, a
  sweep's --out) is refused when another user could change the way to it, as ssh's StrictModes
  refuses: every folder passed on the way (from /, through symbolic links) must belong to you or
  root and be writable by nobody else unless it is sticky (like /tmp).
- `make_private_dirs`, `private_umask`, `PRIVATE_FILE`: what the tool creates is yours only
  (folders 0700, files 0600), whatever the umask.
- `mask_secrets`: setup lines and sbatch options as they are stored (manifest, report), with the
  values of variables and options whose names look secret replaced by ***.
- `open_private`: open a file so that what is read is what was checked (the folder chain and
  the file, through descriptors: nothing can be swapped between the check and the read).
- `python_module_argv`: how the tool starts a Python of its own (the node's guard, a job step):
  as `python -m MODULE` would, but with no working folder on sys.path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from autograd_check.base.errors import BadInput

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_LINKS = 40
"""Symbolic links followed on the way to a folder before giving up (Linux's own limit)."""


# -- values written into a job script -------------------------------------------------------------
def script_value(what: str, value: str, *, path: bool = False) -> str:
    """`value`, unchanged, when it may be written into an sbatch script; else BadInput naming it.

    A newline would start a line of its own in the script (a command, or an #SBATCH directive);
    a `%` in a path is expanded by Slurm (--output) and by submitit (its folder), so the files
    would land elsewhere than where they are checked."""
    if _CONTROL.search(value):
        raise BadInput(f"{what} {value!r} contains a newline or other control character; "
                       "it would be written into the job script as it is")
    if path and "%" in value:
        raise BadInput(f"{what} {value!r} contains '%', which Slurm and submitit expand "
                       "(%j, %u ...); choose a folder name without it")
    return value


# -- the Pythons the tool starts -------------------------------------------------------------------
_SAFE_START = ("import sys; sys.path[:1] = [p for p in sys.path[:1] if p]; import runpy; "
               'runpy.run_module("{module}", run_name="__main__", alter_sys=True)')


def python_module_argv(module: str, *, executable: str | None = None,
                       unbuffered: bool = False) -> list[str]:
    """`python [-u] -m MODULE` as an argv, but started so that no working folder is on sys.path.

    `python -m` (and `-c`) put the working folder first on sys.path, so a package planted there
    by another user (an `autograd_check/`, a `runpy.py`) would be imported, and run as you,
    before the tool's own code. `-P` and PYTHONSAFEPATH turn that off only from Python 3.11, and
    `-I` would also drop PYTHONPATH and the user's site-packages (where the tool may be
    installed). So on every version the tool starts `python -c CODE`: `-c` puts '' (the working
    folder) first, CODE's first statement takes it off before anything is imported (`sys` is
    built in; the startup's own imports, site included, ran before '' was added), then runpy runs
    MODULE as `-m` would (`__main__`, sys.argv[0] its file). Nothing changes directory: the
    check itself still runs in the folder it was started from."""
    if not re.fullmatch(r"[A-Za-z_][\w.]*", module):
        raise ValueError(f"not a module name: {module!r}")
    return [executable or sys.executable, *(["-u"] if unbuffered else []),
            "-c", _SAFE_START.format(module=module)]


# -- the way to a folder --------------------------------------------------------------------------
def _mode(st: os.stat_result) -> str:
    return oct(stat.S_IMODE(st.st_mode))[2:]


def _walk(path: Path) -> Iterator[tuple[str, os.stat_result, bool]]:
    """(name, lstat, is it `path` itself) for every existing entry the system passes on the way
    to `path` (absolute): /, each folder, each symbolic link (then the way to its target)."""
    todo = list(reversed(Path(os.path.abspath(path)).parts[1:]))
    current = "/"
    yield current, os.stat(current), not todo
    links = 0
    while todo:
        name = todo.pop()
        if name in ("", "."):
            continue
        if name == "..":
            current = os.path.dirname(current)
            continue
        entry = os.path.join(current, name)
        try:
            st = os.lstat(entry)
        except OSError:
            return  # missing (it will be created, private) or not reachable (mkdir will say)
        yield entry, st, not todo and not stat.S_ISLNK(st.st_mode)
        if stat.S_ISLNK(st.st_mode):
            links += 1
            if links > _MAX_LINKS:
                return
            target = Path(os.readlink(entry))
            if target.is_absolute():
                current = "/"
                todo.extend(reversed(target.parts[1:]))
            else:
                todo.extend(reversed(target.parts))
        else:
            current = entry


def folder_chain_problem(path: Path, *, itself: bool = True) -> str | None:
    """Why another user could change what lies at `path` (None: nobody but you and root can).

    Every folder on the way must belong to you or root and be writable by nobody else, unless it
    is sticky (/tmp: others may add entries but not move yours); a symbolic link on the way must
    be yours or root's. With `itself`, `path` (if it exists) must be yours and writable by you
    alone."""
    me = os.getuid()
    for entry, st, last in _walk(path):
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if last and itself:
            if st.st_uid != me:
                return f"{entry!r} belongs to another user (uid {st.st_uid})"
            if writable:
                return f"{entry!r} can be written by other users (mode {_mode(st)})"
            continue
        if st.st_uid not in (0, me):
            return f"{entry!r} belongs to another user (uid {st.st_uid})"
        if stat.S_ISLNK(st.st_mode):
            continue  # a link's own mode means nothing; the folder holding it was checked
        if writable and not st.st_mode & stat.S_ISVTX:
            return (f"{entry!r} can be written by other users (mode {_mode(st)}, "
                    "without the sticky bit)")
    return None


JOB_RISK = "replace the job's files and run code as you"


def check_folder_chain(path: Path, what: str, *, itself: bool = True,
                       risk: str = JOB_RISK) -> None:
    """BadInput (one line, naming the folder at fault and what to do) when another user could
    replace `path` or what it holds: a job loads pickles from there, and loading a pickle runs
    whatever its writer put in it (`risk` says what else they could do: plant records)."""
    problem = folder_chain_problem(path, itself=itself)
    if problem is not None:
        raise BadInput(
            f"{what} {str(path)!r} is not safe: {problem}, so another user could {risk}. "
            "Use a folder that only you (and root) can change "
            "all the way from /, e.g. under your home directory, or remove the others' write "
            "permission (chmod go-w)"
        )


# -- opening what was checked ---------------------------------------------------------------------
class Unsafe(Exception):
    """open_private's refusal: str() says which entry on the way, and why."""


_DIR_FLAGS = (getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW
              | os.O_CLOEXEC)
"""A folder on the way is opened to look up the next name and to fstat it, nothing else: O_PATH
(Linux) needs only search permission, as the path lookup it replaces (a 0711 /scratch)."""


def _writable_by_others(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def open_private(path: Path) -> int:
    """A descriptor open for reading on `path`, a plain file that nobody but you could have
    written, reached through folders nobody but you and root can change (folder_chain_problem's
    rule; the folder holding the file, and the file, must be yours and writable by you alone).

    Checking paths and then opening the path again leaves a moment in which another user who can
    write a folder on the way swaps a symbolic link in. Here the way is walked with directory
    descriptors: each folder is opened (O_NOFOLLOW) in the one before it and checked with fstat,
    a symbolic link on the way is followed only when it is yours or root's (the folder holding it
    was checked, so nobody else can change it), and the file is opened with O_NOFOLLOW and
    checked with fstat. Read only from the descriptor returned: it is what was checked.
    Raises Unsafe (the entry and why), or OSError when something on the way is missing."""
    me = os.getuid()
    todo = list(reversed(Path(os.path.abspath(path)).parts[1:]))
    if not todo:
        raise Unsafe(f"{str(path)!r} is not a file")
    leaf = todo.pop(0)
    where = "/"
    fd = os.open("/", _DIR_FLAGS)
    try:
        links = 0
        while todo:
            name = todo.pop()
            if name in ("", "."):
                continue
            entry = os.path.normpath(os.path.join(where, name))
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise Unsafe(f"{entry!r} is not a folder") from None
                if st.st_uid not in (0, me):
                    raise Unsafe(f"{entry!r} belongs to another user (uid {st.st_uid})") from None
                links += 1
                if links > _MAX_LINKS:
                    raise Unsafe(f"{entry!r}: too many symbolic links") from None
                target = Path(os.readlink(name, dir_fd=fd))
                todo.extend(reversed(target.parts[1:] if target.is_absolute() else target.parts))
                if target.is_absolute():
                    os.close(fd)
                    fd, where = os.open("/", _DIR_FLAGS), "/"
                continue
            os.close(fd)
            fd, where = child, entry
            st = os.fstat(fd)
            if not todo:  # the folder that holds the file: yours alone
                if st.st_uid != me:
                    raise Unsafe(f"{entry!r} belongs to another user (uid {st.st_uid})")
                if _writable_by_others(st):
                    raise Unsafe(f"{entry!r} can be written by other users (mode {_mode(st)})")
            elif st.st_uid not in (0, me):
                raise Unsafe(f"{entry!r} belongs to another user (uid {st.st_uid})")
            elif _writable_by_others(st) and not st.st_mode & stat.S_ISVTX:
                raise Unsafe(f"{entry!r} can be written by other users (mode {_mode(st)}, "
                             "without the sticky bit)")
        entry = os.path.join(where, leaf)
        try:  # O_NONBLOCK: a FIFO planted under the name must not hang the open
            file = os.open(leaf, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                           dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Unsafe(f"{entry!r} is a symbolic link") from None
            raise
    finally:
        os.close(fd)
    st = os.fstat(file)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = f"{entry!r} is not a plain file"
    elif st.st_uid != me:
        problem = f"{entry!r} belongs to another user (uid {st.st_uid})"
    elif _writable_by_others(st):
        problem = f"{entry!r} can be written by other users (mode {_mode(st)})"
    if problem is not None:
        os.close(file)
        raise Unsafe(problem)
    os.set_blocking(file, True)
    return file


def read_private(path: Path) -> bytes:
    """The bytes of `path`, read from the descriptor open_private checked (Unsafe, OSError)."""
    fd = open_private(path)
    with os.fdopen(fd, "rb") as f:
        return f.read()


# -- what the tool creates ------------------------------------------------------------------------
def make_private_dirs(path: Path) -> None:
    """Create `path` and its missing parents, each 0700 whatever the umask (OSError as mkdir)."""
    missing: list[Path] = []
    here = Path(os.path.abspath(path))
    while not os.path.lexists(here):
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by someone else: the checks that follow judge it
        os.chmod(folder, PRIVATE_DIR)  # mkdir's mode is filtered by the umask


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Umask 077 for the files made inside (submitit's pickles and scripts, and the job's own
    logs and results: sbatch hands the umask to the job)."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


# -- secrets in what is stored --------------------------------------------------------------------
SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASS", "CREDENTIAL", "AUTH", "PRIVATE", "COOKIE")
"""A variable or option whose name holds one of these (any case) has its value masked."""
MASK = "***"
_WORD = r"""(?:"(?:[^"\\]|\\.)*"|'[^']*'|\\.|[^\s;&|'"])+"""
_ASSIGNMENT = re.compile(rf"(?<![\w$])([A-Za-z_][A-Za-z0-9_]*)=({_WORD})?")
_OPTION = re.compile(rf"(?<![\w-])(--?[A-Za-z0-9][A-Za-z0-9_-]*)(=|[ \t]+)(?!-)({_WORD})")
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@", re.IGNORECASE)


def looks_secret(name: str) -> bool:
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS)


def mask_secrets(line: str) -> str:
    """`line` with the values of secret-looking variables (`export HF_TOKEN=abc`), options
    (`--api-key abc`, `--password=abc`) and URL passwords (`https://me:abc@host`) as ***."""

    def assignment(m: re.Match[str]) -> str:
        return f"{m[1]}={MASK}" if looks_secret(m[1]) and m[2] else m[0]

    def option(m: re.Match[str]) -> str:
        return f"{m[1]}{m[2]}{MASK}" if looks_secret(m[1]) else m[0]

    line = _ASSIGNMENT.sub(assignment, line)
    line = _OPTION.sub(option, line)
    return _URL_PASSWORD.sub(rf"\1:{MASK}@", line)


def masked_parameters(params: Mapping[str, Any]) -> dict[str, Any]:
    """Executor parameters as stored (a sweep's manifest): setup lines and sbatch options with
    their secrets masked. The job script itself keeps the real values: it runs them."""
    stored = dict(params)
    if "setup" in stored:
        stored["setup"] = [mask_secrets(str(line)) for line in stored["setup"]]
    extra = stored.get("additional_parameters")
    if isinstance(extra, Mapping):
        stored["additional_parameters"] = {
            key: (MASK if looks_secret(str(key)) else mask_secrets(value))
            if isinstance(value, str) else value
            for key, value in extra.items()
        }
    return stored
