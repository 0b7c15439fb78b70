#!/usr/bin/env python3
"""Regenerate every console block of README.md and docs/*.md from real commands.

A generated block is a fenced block right after a marker comment:

    <!-- docs.py -->
    ```console
    $ autograd-check run --shape 3x0
    (output: rewritten by this script)
    ```

The `$ ` lines of the block are the commands (a line ending in `\\` continues on the next one);
everything else in the block is output, and is replaced by what the commands print now (stdout
and stderr together, as a terminal shows them), followed by `[exit N]` when a command exits
non-zero. Marker options (shell words after `docs.py`):

    slurm            needs the local Slurm cluster (`scripts/slurm-local.sh up`); run with --slurm
    measured         benchmark figures: regenerated only with --measured, never compared by --check
    file=NAME        not a command block: its text is written to NAME in the page's work folder
                     before the page's commands run (a fixture the page shows, e.g. my_loss.py)
    filter=CMD       a shell filter applied to each command's output (an excerpt; say so in prose)
    sub=RE=>TEXT     one more normalisation for this block (regular expression, repeatable)
    timeout=SECONDS  per command (default 300)

Each page runs in its own fresh work folder, which is also $HOME (so the default Slurm log folder
lands there too) and holds links to the repository's examples/, configs/, jobs/, benchmarks/
and scripts/.
Blocks of a page run in order (a later block may use files an earlier one wrote); pages run in
parallel, except with --slurm or --only-slurm (one page's job would hold the node another waits
for). Commands run with COLUMNS=100, NO_COLOR=1, TERM=dumb, under bash with pipefail.

Volatile details are normalised (see `Normaliser`): this host's name, CPU model, Python and torch
versions and paths become the CANONICAL values below; durations become `n.n s`; dates become
`YYYY-MM-DDTHH:MM:SS`; Slurm job ids become 101, 102, ... in order of appearance on the page (a
command may name such an id, e.g. `autograd-check status 101`: it is run with the real one).
Lines of Rich boxes keep their width after a replacement.

    python scripts/docs.py                 rewrite the non-Slurm blocks in place
    python scripts/docs.py --slurm         ... and the Slurm blocks (cluster must be up)
    python scripts/docs.py --only-slurm    only the Slurm blocks
    python scripts/docs.py --measured      ... and re-measure the benchmark blocks (minutes)
    python scripts/docs.py --measure-only bench_api docs/api.md   ... only those benchmarks
    python scripts/docs.py --check         compare instead of writing; exit 1 listing the diffs
    python scripts/docs.py docs/check.md   only these pages
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import os
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/*.md"]
LINKED = ["examples", "configs", "jobs", "benchmarks", "scripts"]
WIDTH = 100

# What the docs show in place of this machine's details (the reference machine's values).
CANONICAL = {
    "home": "/home/you",
    "repo": "/home/you/autograd-check",
    "python_exe": "/home/you/.venv/bin/python",
    "host": "vm",
    "cpu": "AMD EPYC",
    "python": "3.11.7",
    "torch": "2.13.0+cpu",
}

MARKER = re.compile(r"^<!-- docs\.py(?P<opts>(?:\s.*?)?)\s*-->\s*$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")


@dataclass
class Block:
    page: Path
    start: int  # index of the first line inside the fence
    end: int  # index of the closing fence
    lang: str
    body: list[str]
    slurm: bool = False
    measured: bool = False
    file: str | None = None
    filters: list[str] = field(default_factory=list)
    subs: list[tuple[str, str]] = field(default_factory=list)
    timeout: float = 300.0

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.start}"

    def commands(self) -> list[str]:
        """The block's `$ ` commands, each with its continuation lines, as written."""
        out: list[str] = []
        lines = iter(self.body)
        for line in lines:
            if not line.startswith("$ "):
                continue
            cmd = [line]
            while cmd[-1].endswith("\\"):
                nxt = next(lines, None)
                if nxt is None:
                    break
                cmd.append(nxt)
            out.append("\n".join(cmd))
        return out


def parse(page: Path) -> tuple[list[str], list[Block]]:
    lines = page.read_text().split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = MARKER.match(lines[i])
        if not m:
            i += 1
            continue
        f = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
        if not f:
            raise SystemExit(f"{page}:{i + 1}: a docs.py marker must be followed by a ``` fence")
        j = i + 2
        while j < len(lines) and lines[j] != "```":
            j += 1
        if j == len(lines):
            raise SystemExit(f"{page}:{i + 2}: unclosed fence")
        block = Block(page, i + 2, j, f["lang"], lines[i + 2 : j])
        for word in shlex.split(m["opts"]):
            key, _, value = word.partition("=")
            if word == "slurm":
                block.slurm = True
            elif word == "measured":
                block.measured = True
            elif key == "file":
                block.file = value
            elif key == "filter":
                block.filters.append(value)
            elif key == "sub":
                pattern, _, repl = value.partition("=>")
                block.subs.append((pattern, repl))
            elif key == "timeout":
                block.timeout = float(value)
            else:
                raise SystemExit(f"{page}:{i + 1}: unknown docs.py option {word!r}")
        if block.file is None and not block.commands():
            raise SystemExit(f"{block.where}: a generated block needs at least one `$ ` command")
        blocks.append(block)
        i = j + 1
    return lines, blocks


# --- normalisation ------------------------------------------------------------------------------

JOB_CONTEXT = re.compile(
    r"(?P<pre>(?:\b(?:[Jj]ob|JOB|array|allocation|scancel|status|result|StepId=|check-)"
    r"|-j|job_id\":\s?\"|slurm/|logs/)\s?)(?P<id>\d+)(?!\d)"
)
# Lines whose presence depends only on how busy the cluster was: dropped.
TIMING_ONLY = re.compile(
    r"^salloc: (?:Pending job allocation|job \d+ queued and waiting|job \d+ has been allocated"
    r"|Job allocation \d+ has been revoked)"
    r"|^autograd-check: Slurm job \d+: COMPLETING"
)
# `submit --wait`'s lines for the states a job passes through: which of them a poll catches
# depends on how soon the scheduler starts the job. Kept in the page, left out of the comparison.
PASSING_STATE = re.compile(
    r"^autograd-check: (?:step of )?Slurm job \d+: (?:PENDING|CONFIGURING|RUNNING)\b[^,]*, n\.n s$"
)
JOB_TASK = r"(?<![\d.x])(?P<task>\d+)(?=_(?:\d|\[))"
"""A job id before `_N` or `_[` (a task's log file, an array task): only when already seen."""
JOB_IDS = re.compile(f"{JOB_CONTEXT.pattern}|{JOB_TASK}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


class Normaliser:
    """Turns one page's real output into stable text (one per page: job ids are per page)."""

    def __init__(self, work: Path) -> None:
        self.jobs: dict[str, str] = {}  # real id -> shown id
        exe = Path(sys.executable)
        pairs = [
            (str(work.resolve()), CANONICAL["home"]),
            (str(work), CANONICAL["home"]),
            (str(ROOT), CANONICAL["repo"]),
            (str(exe.resolve()), CANONICAL["python_exe"]),
            (str(exe), CANONICAL["python_exe"]),
            (str(exe.parent), str(Path(CANONICAL["python_exe"]).parent)),
            (_cpu_name(), CANONICAL["cpu"]),
        ]
        torch = _version("torch")
        if torch:
            pairs.append((torch, CANONICAL["torch"]))
        self.literal = [(a, b) for a, b in pairs if a and a != b]
        self.literal.sort(key=lambda p: -len(p[0]))
        host = socket.gethostname().split(".")[0]
        self.regex: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
            (re.compile(rf"(?<![\w.-]){re.escape(host)}(?![\w-])"), CANONICAL["host"]),
            (re.compile(rf"(?<=slurmstepd-){re.escape(host)}\b"), CANONICAL["host"]),
            (re.compile(rf"\b{re.escape(platform.python_version())}\b"), CANONICAL["python"]),
            (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:[+-]\d\d:\d\d)?"),
             "YYYY-MM-DDTHH:MM:SS"),
            (re.compile(r"\b\d+(?:\.\d+)? s\b(?! of)"), "n.n s"),
            (re.compile(r"(elapsed\s+)\d\d:\d\d:\d\d"), r"\g<1>00:00:nn"),
            (re.compile(r"\b\d+:\d\d elapsed"), "m:ss elapsed"),
            (re.compile(r"\bpid \d+"), "pid N"),
            (re.compile(r"\bPENDING \(\w+\),"), "PENDING,"),
            (re.compile(r"\bat 0x[0-9a-f]+"), "at 0x7f0000000000"),
            (re.compile(r"(this host has )[\d.]+ ([KMGT]i?B)"), r"\g<1>NN.N \g<2>"),
            (re.compile(r"(\"\w+_s\": )-?[\d.e+-]+"), r"\g<1>0.0"),
            (re.compile(r"/tmp/tmp[\w-]+"), "/tmp/tmpdir"),
        ]

    def job(self, real: str) -> str:
        if real not in self.jobs:
            self.jobs[real] = str(101 + len(self.jobs))
        return self.jobs[real]

    def command(self, cmd: str) -> str:
        """The command to run: shown job ids replaced by the real ones."""
        real_of = {shown: real for real, shown in self.jobs.items()}
        # `106.out` and `106_0_log.err` name job 106; `0.5` and `64x64` name no job.
        return re.sub(
            r"(?<![\w.])(\d+)(?![0-9A-Za-z]|\.\d)", lambda m: real_of.get(m[1], m[1]), cmd
        )

    def line(self, text: str) -> str:
        for a, b in self.literal:
            text = text.replace(a, b)
        for pattern, repl in self.regex:
            text = pattern.sub(repl, text)
        # One pass for both patterns: a second pass would take an id already shown (101...) for
        # a real one when the cluster's real ids reach that range.
        def shown(m: re.Match[str]) -> str:
            if m["id"] is not None:
                return m["pre"] + self.job(m["id"])
            return self.job(m["task"]) if m["task"] in self.jobs else m["task"]

        return JOB_IDS.sub(shown, text)

    def output(self, text: str, subs: list[tuple[str, str]]) -> list[str]:
        out: list[str] = []
        for raw in text.split("\n"):
            if TIMING_ONLY.match(raw):
                continue
            new = self.line(raw)
            for pattern, repl in subs:
                new = re.sub(pattern, repl, new)
            out.append(_keep_width(raw.rstrip(), new.rstrip()))
        while out and not out[-1].strip():
            out.pop()
        return _collapse_progress(out)


def _keep_width(old: str, new: str) -> str:
    """A Rich box line keeps its width when a replacement made it longer or shorter."""
    if len(new) == len(old) or len(new) < 2:
        return new
    delta = len(old) - len(new)
    if new.endswith("│") and "│" in new[:-1]:
        body = new[:-1].rstrip(" ")
        pad = len(new) - 1 - len(body) + delta
        return body + " " * max(pad, 1) + "│"
    m = re.match(r"^(.*?)(─+)([╮╯])$", new)
    if m and ("╭" in new or "╰" in new):
        return m[1] + "─" * max(len(m[2]) + delta, 1) + m[3]
    return new


_TASK_COUNTS = re.compile(r"\b\d+ (pending|running|done|failed)\b|(?<=records )\d+(?=/)")


def _collapse_progress(lines: list[str]) -> list[str]:
    """A sweep's live `array:` lines vary run to run: keep the first, its counts as `n` (how many
    tasks have started by then depends on the machine), then one `array: ...`."""
    out: list[str] = []
    for line in lines:
        if line.startswith("array: ") and out and out[-1].startswith("array: "):
            if out[-1] != "array: ...":
                out.append("array: ...")
            continue
        if line.startswith("array: "):
            line = _TASK_COUNTS.sub(lambda m: f"n {m[1]}" if m[1] else "n", line)
        out.append(line)
    return out


def same_but_timing(page: list[str], now: list[str]) -> bool:
    """The block prints what the page shows, but for which passing job states a poll caught."""
    def kept(lines: list[str]) -> list[str]:
        return [line for line in lines if not PASSING_STATE.match(line)]

    return kept(page) == kept(now)


# --- running ------------------------------------------------------------------------------------


def _env(work: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "AUTOGRAD_CHECK_"))
        and k not in ("FORCE_COLOR", "PY_COLORS", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR")
        # A user's terminal, not CI's: pytest (docs/pytest-plugin.md) stops shortening its
        # summary lines when it sees CI or BUILD_NUMBER.
        and k not in ("CI", "BUILD_NUMBER", "GITHUB_ACTIONS")
        # Nor the test suite's: tests/test_docs.py runs this script from a pytest(-xdist)
        # worker, whose variables would tell a page's own pytest that it is one too.
        and not k.startswith(("PYTEST_XDIST_", "PYTEST_CURRENT_TEST"))
    }
    if "SLURM_CONF" in os.environ:
        env["SLURM_CONF"] = os.environ["SLURM_CONF"]
    env.update(
        HOME=str(work),
        COLUMNS=str(WIDTH),
        TERMINAL_WIDTH=str(WIDTH),
        LINES="50",
        NO_COLOR="1",
        TERM="dumb",
        PYTHONUNBUFFERED="1",
        PYTHONHASHSEED="0",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def cancel_jobs_from(work: Path) -> list[str]:
    """scancel every job still queued whose working folder is under work (a page's commands
    may queue one that never starts, as docs/cluster.md's plain sbatch does): a docs run leaves
    nothing of its own in the queue. The ids cancelled (none where Slurm is not here)."""
    if shutil.which("squeue") is None:
        return []
    listed = subprocess.run(["squeue", "-h", "-o", "%i %Z"], capture_output=True, text=True,
                            timeout=60)
    ours = [job for job, _, folder in (line.partition(" ") for line in listed.stdout.splitlines())
            if folder == str(work) or folder.startswith(f"{work}/")]
    if ours:
        subprocess.run(["scancel", *ours], capture_output=True, timeout=60)
    return ours


def run_page(page: Path, blocks: list[Block], normaliser_work: Path) -> dict[int, list[str]]:
    """Run one page's selected blocks in order; the new body of each, by block start line. What
    the page queued and left is cancelled at the end (cancel_jobs_from)."""
    try:
        return _run_blocks(blocks, normaliser_work)
    finally:
        cancel_jobs_from(normaliser_work)


def _run_blocks(blocks: list[Block], normaliser_work: Path) -> dict[int, list[str]]:
    work = normaliser_work
    for name in LINKED:
        (work / name).symlink_to(ROOT / name)
    for block in blocks:
        if block.file:
            (work / block.file).write_text("\n".join(block.body) + "\n")
    norm = Normaliser(work)
    env = _env(work)
    results: dict[int, list[str]] = {}
    for block in blocks:
        if block.file:
            continue
        body: list[str] = []
        for shown in block.commands():
            body.extend(shown.split("\n"))
            cmd = norm.command(shown[2:].replace("\\\n", " "))
            pipeline = " | ".join([f"{{ {cmd}\n}} 2>&1", *block.filters]) if block.filters else (
                f"{{ {cmd}\n}} 2>&1"
            )
            try:
                proc = subprocess.run(
                    ["bash", "-c", f"set -o pipefail\n{pipeline}"],
                    cwd=work,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    text=True,
                    timeout=block.timeout,
                )
                text, rc = proc.stdout, proc.returncode
            except subprocess.TimeoutExpired as exc:
                out = exc.stdout
                text = out.decode() if isinstance(out, bytes) else (out or "")
                rc = 124
                text += f"\n(docs.py: timed out after {block.timeout:g} s)"
            if block.measured:  # figures are the point: only trailing blanks go
                body.extend(line.rstrip() for line in text.rstrip().split("\n"))
            else:
                body.extend(norm.output(text, block.subs))
            if rc != 0:
                body.append(f"[exit {rc}]")
        results[block.start] = body
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pages", nargs="*", type=Path, help="pages (default: README.md docs/*.md)")
    ap.add_argument("--check", action="store_true", help="compare, write nothing; exit 1 on a diff")
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--slurm", action="store_true", help="also the Slurm blocks")
    group.add_argument("--only-slurm", action="store_true", help="only the Slurm blocks")
    ap.add_argument("--measured", action="store_true", help="also re-measure the benchmark blocks")
    ap.add_argument("--measure-only", metavar="TEXT",
                    help="re-measure only the benchmark blocks whose command holds TEXT "
                         "(e.g. bench_api); implies --measured")
    ap.add_argument("-j", "--jobs", type=int, default=2,
                    help="pages run at once (default 2; with --slurm or --only-slurm, one)")
    ap.add_argument("--keep", action="store_true", help="keep the work folders (printed)")
    args = ap.parse_args(argv)
    args.measured = args.measured or args.measure_only is not None
    if args.check and args.measured:
        ap.error("--check never compares measured blocks; leave out --measured")

    pages = [p.resolve() for p in args.pages] or sorted(
        {p for pattern in PAGES for p in ROOT.glob(pattern)}
    )

    def wanted(block: Block) -> bool:
        if block.file:
            return True
        if block.measured:
            if args.measure_only is not None and not any(
                    args.measure_only in command for command in block.commands()):
                return False
            return args.measured and (not block.slurm or args.slurm or args.only_slurm)
        if args.only_slurm:
            return block.slurm
        return args.slurm or not block.slurm

    parsed = {page: parse(page) for page in pages}
    todo = {
        page: [b for b in blocks if wanted(b)]
        for page, (_, blocks) in parsed.items()
        if any(wanted(b) and not b.file for b in blocks)
    }
    started = time.monotonic()
    base = Path(tempfile.mkdtemp(prefix="docs-py-"))

    def one(page: Path) -> dict[int, list[str]]:
        work = base / re.sub(r"\W", "_", str(page.relative_to(ROOT)))
        work.mkdir()
        return run_page(page, todo[page], work)

    try:
        # Pages with Slurm blocks one at a time: a job of one page holds the node's CPUs while
        # another page's job waits (PENDING where the page shows RUNNING, up/alloc for up/idle)
        workers = 1 if args.slurm or args.only_slurm else max(1, args.jobs)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            done = dict(zip(todo, pool.map(one, todo), strict=True))
    finally:
        if args.keep:
            print(f"work folders kept in {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)

    differ = 0
    for page, new_bodies in done.items():
        lines, blocks = parsed[page]
        before = differ
        for block in reversed(blocks):
            if block.start not in new_bodies:
                continue
            new = new_bodies[block.start]
            if new == block.body or same_but_timing(block.body, new):
                continue
            differ += 1
            if args.check:
                diff = difflib.unified_diff(
                    block.body, new, f"{block.where} (in the page)", "(what the code prints now)",
                    lineterm="",
                )
                print("\n".join(diff))
            lines[block.start : block.end] = new
        if not args.check and differ > before:
            page.write_text("\n".join(lines))
    n = sum(1 for blocks in todo.values() for b in blocks if not b.file)
    took = time.monotonic() - started
    verb = "differ" if args.check else "rewritten"
    print(f"docs.py: {n} block(s) run on {len(todo)} page(s) in {took:.1f} s; {differ} {verb}",
          file=sys.stderr)
    return 1 if args.check and differ else 0


if __name__ == "__main__":
    sys.exit(main())
