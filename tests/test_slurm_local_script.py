"""scripts/slurm-local.sh against the real cluster: `up` makes the RUNNING slurmctld and slurmd use
the slurm.conf it writes, whatever configuration they were running before."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "scripts" / "slurm-local.sh"
SLURM_CONF = Path("/etc/slurm/slurm.conf")
OURS_LIMIT = " MaxTime=60"  # the script's partition line: debug, MaxTime=60 (minutes)

pytestmark = [pytest.mark.slurm, pytest.mark.usefixtures("slurm_cluster")]


def script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(CLUSTER_SCRIPT), *args], capture_output=True, text=True,
                          timeout=300)


def slurm(*args: str, conf: Path = SLURM_CONF) -> subprocess.CompletedProcess[str]:
    """A Slurm client command reading `conf`, outside any allocation."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30,
                          env={**env, "SLURM_CONF": str(conf)})


def max_time(conf: Path = SLURM_CONF) -> str:
    shown = slurm("scontrol", "show", "partition", "debug", conf=conf)
    found = re.search(r"\bMaxTime=(\S+)", shown.stdout)
    assert found, shown.stdout + shown.stderr
    return found[1]


def hash_val() -> str:
    """slurmctld's comparison of the slurm.conf it loaded with /etc/slurm/slurm.conf."""
    shown = slurm("scontrol", "show", "config").stdout
    found = re.search(r"^HASH_VAL\s+= (.*)$", shown, re.M)
    assert found, shown
    return found[1]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def node_idle(conf: Path) -> bool:
    return slurm("sinfo", "-h", "-N", "-o", "%t", conf=conf).stdout.strip() == "idle"


def reconfigure_with(foreign: str) -> None:
    """The daemons load `foreign` from /etc/slurm/slurm.conf (scontrol reconfigure)."""
    SLURM_CONF.write_text(foreign)
    done = slurm("scontrol", "reconfigure")
    assert done.returncode == 0, done.stderr
    wait_for(lambda: max_time() == "UNLIMITED", 30, "the reconfigured partition")


def restart_from(conf: Path) -> None:
    """Another single-node Slurm: slurmctld and slurmd shut down through Slurm, then started from
    `conf` by hand (`-f`), as a cluster set up by some other tool would be."""
    pids = [int(Path(f"/run/{d}.pid").read_text()) for d in ("slurmctld", "slurmd")]
    assert slurm("scontrol", "shutdown").returncode == 0
    wait_for(lambda: not any(running(pid) for pid in pids), 30, "slurmctld and slurmd to exit")
    for daemon in ("slurmctld", "slurmd"):
        subprocess.run([daemon, "-f", str(conf)], check=True, timeout=30,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        if daemon == "slurmctld":
            wait_for(lambda: "is UP" in slurm("scontrol", "ping", conf=conf).stdout, 30,
                     "the hand-started slurmctld to answer")
    wait_for(lambda: node_idle(conf), 30, "the node of the hand-started cluster")


@pytest.mark.parametrize(
    "foreign_setup",
    ["slurm.conf and daemons", "daemons only", "another cluster's daemons"],
)
def test_up_makes_the_running_cluster_use_its_configuration(
    tmp_path: Path, foreign_setup: str
) -> None:
    """A partition without MaxTime runs (the script's has MaxTime=60); `up` brings the script's
    configuration into the running daemons, whether slurm.conf itself is foreign ("slurm.conf and
    daemons"), was already put back while the daemons kept the foreign one ("daemons only"), or
    the daemons were started by hand from another file ("another cluster's daemons")."""
    ours = SLURM_CONF.read_text()
    assert OURS_LIMIT in ours and max_time() == "01:00:00", "the script's cluster to start from"
    foreign = ours.replace(OURS_LIMIT, "")
    try:
        if foreign_setup == "slurm.conf and daemons":
            reconfigure_with(foreign)
        elif foreign_setup == "daemons only":
            reconfigure_with(foreign)
            SLURM_CONF.write_text(ours)
        else:
            other = tmp_path / "slurm.conf"
            other.write_text(foreign)
            restart_from(other)
            assert max_time(other) == "UNLIMITED"
        assert max_time() == "UNLIMITED"  # the foreign configuration is what runs

        start = time.monotonic()
        up = script("up")
        assert up.returncode == 0, up.stderr
        assert "restarting" in up.stderr and "cluster up (accounting on)" in up.stderr, up.stderr
        assert time.monotonic() - start < 30

        assert SLURM_CONF.read_text() == ours
        assert max_time() == "01:00:00" and hash_val() == "Match"
        status = script("status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"config     slurmctld and slurmd run {SLURM_CONF}\n" in status.stdout
        again = script("up")  # now nothing to do
        assert again.returncode == 0 and "cluster already up (accounting on)" in again.stderr
    finally:
        restored = script("up")
        assert restored.returncode == 0, restored.stderr


# `up --nodes 2`: nodes n1, n2 in network namespaces on the bridge slbr0 (10.77.0.1/24), a veth
# slv-nK from the bridge into each.
NODE_ADDRS = {"n1": "10.77.0.11", "n2": "10.77.0.12"}
BRIDGE = "slbr0"
# Each task (one per node): its own name and the other node's resolve to their bridge addresses
# (gloo needs its own), and the two talk over TCP; prints "me my-addr other-addr heard node".
PEERS = """
import os, socket, time
me = socket.gethostname(); other = {"n1": "n2", "n2": "n1"}[me]
server = socket.create_server((socket.gethostbyname(me), 29517))
deadline = time.monotonic() + 15
while True:
    try:
        out = socket.create_connection((other, 29517), timeout=2); break
    except OSError:
        if time.monotonic() > deadline: raise
        time.sleep(0.1)
out.sendall(me.encode()); out.close()
conn, _ = server.accept(); heard = conn.recv(16).decode()
print(me, socket.gethostbyname(me), socket.gethostbyname(other), heard,
      os.environ["SLURMD_NODENAME"])
"""


def left_of_two_nodes() -> list[str]:
    """What `up --nodes 2` makes and is still there: its namespaces, the bridge, the veths."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    names = [line.split(": ")[1].split("@")[0] for line in links.stdout.splitlines()]
    return ([f"netns {line.split()[0]}" for line in netns.stdout.splitlines()
             if line.split()[0] in NODE_ADDRS]
            + [f"link {name}" for name in names if name == BRIDGE or name.startswith("slv-")])


def nodes() -> list[str]:
    return sorted(slurm("sinfo", "-h", "-N", "-o", "%N %t").stdout.splitlines())


def this_host() -> str:
    shown = subprocess.run(["hostname", "-s"], capture_output=True, text=True, check=True)
    return shown.stdout.strip()


def test_up_nodes_2_runs_two_nodes_in_namespaces_and_up_goes_back_to_one() -> None:
    hosts = Path("/etc/hosts").read_text()
    try:
        start = time.monotonic()
        up = script("up", "--nodes", "2")
        assert up.returncode == 0, up.stderr
        assert "cluster up (accounting on, 2 nodes)" in up.stderr, up.stderr
        assert time.monotonic() - start < 30
        again = script("up", "--nodes", "2")  # nothing to do
        assert again.returncode == 0
        assert "cluster already up (accounting on, 2 nodes)" in again.stderr, again.stderr
        status = script("status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert "nodes      2 (n1 n2: network namespaces" in status.stdout, status.stdout

        assert nodes() == ["n1 idle", "n2 idle"]
        names = slurm("srun", "-N", "2", "-n", "2", "hostname")
        assert sorted(names.stdout.split()) == ["n1", "n2"], names.stdout + names.stderr
        peers = slurm("srun", "-N", "2", "-n", "2", sys.executable, "-c", PEERS)
        assert sorted(peers.stdout.splitlines()) == [
            "n1 10.77.0.11 10.77.0.12 n2 n1", "n2 10.77.0.12 10.77.0.11 n1 n2",
        ], peers.stdout + peers.stderr
        assert sorted(left_of_two_nodes()) == [
            f"link {BRIDGE}", "link slv-n1", "link slv-n2", "netns n1", "netns n2",
        ]
        assert Path("/etc/hosts").read_text() == hosts  # the nodes' hosts file is their own

        start = time.monotonic()
        back = script("up")
        assert back.returncode == 0, back.stderr
        assert "cluster up (accounting on):" in back.stderr, back.stderr
        assert time.monotonic() - start < 30
        assert left_of_two_nodes() == []
        assert nodes() == [f"{this_host()} idle"]
        assert "nodes      1 (" in script("status").stdout
    finally:
        restored = script("up")
        assert restored.returncode == 0, restored.stderr


def test_down_after_nodes_2_removes_the_namespaces_bridge_and_veths() -> None:
    try:
        up = script("up", "--nodes", "2")
        assert up.returncode == 0, up.stderr
        assert left_of_two_nodes()
        down = script("down")
        assert down.returncode == 0, down.stderr
        assert left_of_two_nodes() == []
        assert subprocess.run(["pgrep", "-x", "slurmd"], capture_output=True).returncode == 1
    finally:
        restored = script("up")
        assert restored.returncode == 0, restored.stderr
    assert nodes() == [f"{this_host()} idle"]
