"""Issue 10, item 6: one sweep into a DIR at a time, across every host that shares DIR
(DIR/.running: host, pid, the pid's start time), and a stale claim told from a live one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from autograd_check.base.errors import BadInput
from autograd_check.base.process import process_start
from autograd_check.sweep.claim import RUNNING, Owner, claim

HANGS = textwrap.dedent("""\
    import time


    class Hangs:
        def loss(self, predicted, real):
            time.sleep(1000)

        def manual_grad(self, predicted, real):
            return 2 * (predicted - real)
""")


def write_owner(root: Path, **fields: object) -> None:
    root.mkdir(parents=True, exist_ok=True)
    doc = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-01-01T00:00:00",
           "proc_start": process_start(os.getpid()), "boot_id": None, "mode": "local", **fields}
    (root / RUNNING).write_text(json.dumps(doc))


class TestClaim:
    def test_claims_and_releases(self, tmp_path: Path) -> None:
        held = claim(tmp_path, "local")
        doc = json.loads((tmp_path / RUNNING).read_text())
        assert doc["host"] == socket.gethostname() and doc["pid"] == os.getpid()
        assert (tmp_path / RUNNING).stat().st_mode & 0o777 == 0o600
        held.release()
        assert not (tmp_path / RUNNING).exists()

    def test_another_host_is_refused_with_its_host_pid_and_the_way_out(
        self, tmp_path: Path
    ) -> None:
        write_owner(tmp_path, host="login2", pid=4242)
        with pytest.raises(BadInput) as caught:
            claim(tmp_path, "local")
        message = str(caught.value)
        assert "login2" in message and "4242" in message
        assert f"rm {tmp_path / RUNNING}" in message
        assert json.loads((tmp_path / RUNNING).read_text())["host"] == "login2", "left alone"

    def test_a_live_process_on_this_host_is_refused(self, tmp_path: Path) -> None:
        other = subprocess.Popen(["sleep", "30"])
        try:
            write_owner(tmp_path, pid=other.pid, proc_start=process_start(other.pid))
            with pytest.raises(BadInput, match=f"pid {other.pid}"):
                claim(tmp_path, "local")
        finally:
            other.kill()
            other.wait()

    def test_a_dead_pid_is_taken_over(self, tmp_path: Path) -> None:
        gone = subprocess.Popen(["true"])
        gone.wait()
        write_owner(tmp_path, pid=gone.pid, proc_start="1")
        notes: list[str] = []
        held = claim(tmp_path, "local", notes.append)
        assert held.owner.pid == os.getpid()
        assert notes and "is not running" in notes[0]

    def test_a_reused_pid_is_taken_over(self, tmp_path: Path) -> None:
        # pid 1 lives, but it is not the process that wrote the claim (another start time)
        write_owner(tmp_path, pid=1, proc_start="123456789")
        notes: list[str] = []
        claim(tmp_path, "local", notes.append)
        assert notes and "now another process" in notes[0]

    def test_another_boot_is_taken_over(self, tmp_path: Path) -> None:
        write_owner(tmp_path, pid=1, proc_start=process_start(1), boot_id="not-this-boot")
        if Owner.me("local").boot_id is None:
            pytest.skip("no boot id here")
        notes: list[str] = []
        claim(tmp_path, "local", notes.append)
        assert notes and "rebooted" in notes[0]

    def test_a_release_leaves_someone_elses_claim(self, tmp_path: Path) -> None:
        held = claim(tmp_path, "local")
        write_owner(tmp_path, host="login2", pid=4242)
        held.release()
        assert (tmp_path / RUNNING).exists()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) to fake a second host")
def test_a_second_host_is_refused_while_a_sweep_runs(tmp_path: Path) -> None:
    """Two login nodes, one DIR: a sweep runs on this host; the same sweep started under another
    hostname (unshare -u) must refuse, naming this host and pid, and run nothing."""
    target = tmp_path / "hangs.py"
    target.write_text(HANGS)
    out = tmp_path / "out"
    args = ["sweep", "--local", "--seeds", "0-1", "--target", f"{target}:Hangs", "--out",
            str(out), "--case-timeout", "0"]
    first = subprocess.Popen([sys.executable, "-m", "autograd_check", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             # SIGTERM ends it, even if this process inherited it ignored
                             preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while not (out / RUNNING).exists():
            assert first.poll() is None, first.stderr.read() if first.stderr else ""
            assert time.monotonic() < deadline, "the first sweep never claimed DIR"
            time.sleep(0.1)
        command = " ".join(["hostname other-login && exec", sys.executable, "-m",
                            "autograd_check", *args])
        second = subprocess.run(["unshare", "-u", "sh", "-c", command], capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert f"on host {socket.gethostname()} (pid {first.pid}" in second.stderr
        assert "rm " in second.stderr
        assert first.poll() is None, "the first sweep must be left running"
        manifest = json.loads((out / "manifest.json").read_text())
        assert [s["host"] for s in manifest["submissions"]] == [socket.gethostname()]
    finally:
        first.terminate()
        try:
            first.wait(timeout=60)
        except subprocess.TimeoutExpired:
            first.kill()
            first.wait()
            raise
    assert not (out / RUNNING).exists(), "an interrupted sweep gives its claim back"
