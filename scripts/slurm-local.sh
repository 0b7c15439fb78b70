#!/usr/bin/env bash
# slurm-local.sh -- bring up a REAL Slurm cluster on this machine (munge + MariaDB + slurmdbd +
# slurmctld + slurmd) for integration tests: one node (this host), or N nodes in network namespaces.
#
# Usage (as root):
#   scripts/slurm-local.sh up              # install if missing, configure, start, wait (idempotent; accounting ON)
#                                          #   one node: this host (`hostname -s`), slurmd in the host's namespaces
#   scripts/slurm-local.sh up --nodes 2    # the same cluster with 2 compute nodes n1, n2 (2..8 allowed), each slurmd
#                                          #   in its own network + UTS namespace (see below); `up` = `up --nodes 1`
#   scripts/slurm-local.sh accounting off  # AccountingStorageType=accounting_storage/none (sacct fails)
#   scripts/slurm-local.sh accounting on   # back to accounting_storage/slurmdbd
#                                          #   (both keep the running node count unless --nodes N is given too)
#   scripts/slurm-local.sh status          # one line per daemon, the node count, each node; rc 0 only if usable
#   scripts/slurm-local.sh down            # stop all daemons, remove the namespaces/bridge/veths (state kept)
#   scripts/slurm-local.sh purge           # down + delete Slurm state, logs and the accounting DB
#
# Environment knobs (all optional):
#   SLURM_LOCAL_CLUSTER   cluster name            (default: localcluster; with --nodes N>1: that name + N)
#   SLURM_LOCAL_TIMEOUT   seconds to wait for readiness (default: 60)
#   SLURM_LOCAL_MIN_JOB_AGE  MinJobAge in seconds (default: 30)
#   SLURM_LOCAL_MEM_MB    RealMemory of the node  (default: 8000, capped at physical RAM; with --nodes N
#                         each node gets 1/N of it)
#
# Notes:
#  * `up` always (re)establishes accounting ON; `accounting off` is the explicit opt-out.
#  * Daemons are started directly (no systemd needed); pid files live in /run.
#  * `up` makes the RUNNING slurmctld and slurmd use the slurm.conf it writes: when they were
#    started from another configuration (another single-node Slurm already running, a file
#    changed under them), it restarts them. It knows what they loaded from a stamp it writes
#    when it starts them (/run/slurm-local.<daemon>.loaded: pid and sha256 of slurm.conf), and
#    from slurmctld's own comparison (`scontrol show config` HASH_VAL = Match).
#  * --nodes N (N > 1): a bridge slbr0 (10.77.0.1/24) on the host, network namespaces n1..nN
#    (`ip netns`, /run/netns/nK) each joined to it by a veth pair (host end slv-nK, eth0 inside,
#    10.77.0.1K), no default route, no sysctl change: the traffic stays on this machine. Each
#    slurmd -N nK runs in its netns plus its own UTS (hostname nK) and mount namespace (propagation
#    slave: same filesystem, /run/munge included) where /run/slurm-local/hosts is bind-mounted over
#    /etc/hosts (the machine's own /etc/hosts is untouched). slurmctld and slurmdbd stay on the
#    host; slurm.conf names them by the bridge address, the nodes by NodeAddr=. Its own ClusterName
#    (localcluster2) and state folder (/var/spool/slurmctld2) keep job ids apart from the 1-node
#    cluster's. Switching between 1 and N restarts slurmctld; `up` (1 node) removes them again.
#  * Logs: /var/log/slurm/{slurmctld,slurmd,slurmdbd,mariadb,munged}.log (nodes: slurmd-nK.log)
set -euo pipefail

CLUSTER="${SLURM_LOCAL_CLUSTER:-localcluster}"
TIMEOUT="${SLURM_LOCAL_TIMEOUT:-60}"
MIN_JOB_AGE="${SLURM_LOCAL_MIN_JOB_AGE:-30}"
MEM_MB="${SLURM_LOCAL_MEM_MB:-8000}"

CONF_DIR=/etc/slurm
SLURM_CONF_FILE="$CONF_DIR/slurm.conf"
DBD_CONF_FILE="$CONF_DIR/slurmdbd.conf"
LOG_DIR=/var/log/slurm
CTLD_STATE=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
DBD_PID=/run/slurmdbd.pid
MUNGE_PID=/run/munge/munged.pid
MUNGE_SOCK=/run/munge/munge.socket.2
MYSQL_PID=/run/mysqld/mysqld.pid
MYSQL_SOCK=/run/mysqld/mysqld.sock
DB_NAME=slurm_acct_db
DB_USER=slurm
DB_PASS=slurm-local-dbpass
LOCK_FILE=/run/slurm-local.lock
# --nodes N > 1: nodes n1..nN in network namespaces on a bridge of this host
MAX_NODES=8
BRIDGE=slbr0
NET_PREFIX=10.77.0
HOST_ADDR=$NET_PREFIX.1
NODE_RUN=/run/slurm-local
HOSTS_FILE=$NODE_RUN/hosts
NETNS_RECORD=$NODE_RUN/netns
PACKAGES=(slurm-wlm slurm-client munge slurmdbd mariadb-server)

export SLURM_CONF="$SLURM_CONF_FILE"
export DEBIAN_FRONTEND=noninteractive

log()  { echo "[slurm-local] $*" >&2; }
die()  { log "ERROR: $*"; dump_logs; exit 1; }

NODE="$(hostname -s)"
NNODES=1          # node count of the cluster being brought up (set by main)
NODE_NAMES=()     # n1..nN when NNODES > 1
ACTIVE_CLUSTER=$CLUSTER ACTIVE_STATE=$CTLD_STATE  # ClusterName and StateSaveLocation for NNODES

set_nodes() { # set_nodes N: NNODES, NODE_NAMES, and the cluster name and state folder for N nodes
  local i
  NNODES=$1; NODE_NAMES=()
  if ((NNODES > 1)); then
    for ((i = 1; i <= NNODES; i++)); do NODE_NAMES+=("n$i"); done
    ACTIVE_CLUSTER="$CLUSTER$NNODES"; ACTIVE_STATE="$CTLD_STATE$NNODES"
  else
    ACTIVE_CLUSTER=$CLUSTER; ACTIVE_STATE=$CTLD_STATE
  fi
}
all_nodes() { if ((NNODES > 1)); then echo "${NODE_NAMES[*]}"; else echo "$NODE"; fi; }
node_ip() { echo "$NET_PREFIX.$((10 + ${1#n}))"; }       # n1 -> 10.77.0.11
node_pidfile() { echo "/run/slurmd-$1.pid"; }            # SlurmdPidFile=/run/slurmd-%n.pid

dump_logs() {
  local f
  for f in /var/log/munge/munged.log "$LOG_DIR/mariadb.log" "$LOG_DIR/slurmdbd.log" \
           "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" "$LOG_DIR"/slurmd-n*.log; do
    [[ -s "$f" ]] || continue
    echo "----- tail -n 25 $f -----" >&2
    tail -n 25 "$f" >&2 || true
  done
}

# ---------------------------------------------------------------- processes
# pid_alive PIDFILE COMM -> prints pid, rc 0 if a process named COMM owns it
pid_alive() {
  local pidfile=$1 comm=$2 pid
  [[ -r "$pidfile" ]] || return 1
  pid=$(tr -dc '0-9' < "$pidfile" 2>/dev/null || true)
  [[ -n "$pid" ]] && proc_running "$pid" || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$comm" ]] || return 1
  echo "$pid"
}

# find_daemon PIDFILE COMM -> pid via pid file, else via exact process name
find_daemon() {
  local pid
  if pid=$(pid_alive "$1" "$2"); then echo "$pid"; return 0; fi
  for pid in $(pgrep -x "$2" 2>/dev/null || true); do
    proc_running "$pid" && { echo "$pid"; return 0; }
  done
  return 1
}

# proc_running PID -> rc 0 if the process exists and is not a zombie
proc_running() {
  local st
  st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n "$st" && "$st" != Z && "$st" != X ]]
}

# stop_daemon PIDFILE COMM: every process named COMM (the one of PIDFILE first)
stop_daemon() {
  local pidfile=$1 comm=$2 pids
  pids=$( { pid_alive "$pidfile" "$comm" || true; pgrep -x "$comm" 2>/dev/null || true; } | sort -u)
  # shellcheck disable=SC2086
  stop_pids $pids
  rm -f "$pidfile"
}

# stop_pids PID... : SIGTERM, up to 10 s, then SIGKILL
stop_pids() {
  local p i live=""
  for p in "$@"; do proc_running "$p" && live+=" $p"; done
  [[ -n "$live" ]] || return 0
  # shellcheck disable=SC2086
  kill -TERM $live 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    local alive=""
    for p in $live; do proc_running "$p" && alive+=" $p"; done
    [[ -z "$alive" ]] && break
    sleep 0.1
  done
  for p in $live; do proc_running "$p" && { kill -KILL "$p" 2>/dev/null || true; }; done
  return 0
}

wait_for() { # wait_for SECONDS DESCRIPTION CMD... ; polls every 0.2s
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  while ! "$@" >/dev/null 2>&1; do
    (( SECONDS >= end )) && die "timed out after ${secs}s waiting for: $what"
    sleep 0.2
  done
}

# ---------------------------------------------------------------- install
ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing: ${missing[*]}"
  if ! timeout 600 apt-get install -y -q "${missing[@]}" >/tmp/slurm-local-apt.log 2>&1; then
    log "apt-get install failed; running apt-get update and retrying"
    timeout 300 apt-get update -q >>/tmp/slurm-local-apt.log 2>&1 || true
    timeout 600 apt-get install -y -q "${missing[@]}" >>/tmp/slurm-local-apt.log 2>&1 \
      || { tail -n 30 /tmp/slurm-local-apt.log >&2; die "apt-get install ${missing[*]} failed"; }
  fi
}

# ---------------------------------------------------------------- configs
gen_slurm_conf() { # $1 = on|off; the nodes of NNODES
  local acct_type ncpu mem phys
  ncpu=$(nproc)
  phys=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
  mem=$MEM_MB
  (( phys > 0 && mem > phys )) && mem=$phys
  if [[ $1 == on ]]; then acct_type=accounting_storage/slurmdbd; else acct_type=accounting_storage/none; fi
  # one node: this host, everything on 127.0.0.1 (the configuration as it always was)
  local header="(accounting=$1)" ctld_addr=127.0.0.1 acct_host=localhost
  local slurmd_pid=$SLURMD_PID spool=$SLURMD_SPOOL slurmd_log=$LOG_DIR/slurmd.log
  local nodes="NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$mem State=UNKNOWN" part=$NODE
  if ((NNODES > 1)); then
    # N nodes in network namespaces: there 127.0.0.1 is the node itself, so the host is the
    # bridge address; one slurmd per node, its files told apart by %n (its node name)
    local n
    header="(accounting=$1, nodes=$NNODES)" ctld_addr=$HOST_ADDR acct_host=$HOST_ADDR
    slurmd_pid=/run/slurmd-%n.pid spool=$SLURMD_SPOOL-%n slurmd_log=$LOG_DIR/slurmd-%n.log
    nodes="" part=$(IFS=,; echo "${NODE_NAMES[*]}")
    for n in "${NODE_NAMES[@]}"; do
      nodes+="${nodes:+$'\n'}NodeName=$n NodeAddr=$(node_ip "$n") CPUs=$ncpu RealMemory=$((mem / NNODES)) State=UNKNOWN"
    done
  fi
  cat <<EOF
# Generated by scripts/slurm-local.sh -- do not edit $header
ClusterName=$ACTIVE_CLUSTER
SlurmctldHost=$NODE($ctld_addr)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
ReturnToService=2
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$slurmd_pid
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$ACTIVE_STATE
SlurmdSpoolDir=$spool
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$slurmd_log
SlurmctldDebug=info
SlurmdDebug=info
# timers
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10
InactiveLimit=0
KillWait=5
MinJobAge=$MIN_JOB_AGE
Waittime=0
OverTimeLimit=0
# scheduling
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MaxArraySize=1001
MaxJobCount=20000
# accounting
AccountingStorageType=$acct_type
AccountingStorageHost=$acct_host
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# nodes / partitions
$nodes
PartitionName=debug Nodes=$part Default=YES MaxTime=60 State=UP
EOF
}

gen_dbd_conf() {
  cat <<EOF
# Generated by scripts/slurm-local.sh -- do not edit
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$LOG_DIR/slurmdbd.log
PidFile=$DBD_PID
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
}

# write_if_changed FILE MODE CONTENT -> rc 0 if written (changed), 1 if identical
write_if_changed() {
  local f=$1 mode=$2 content=$3
  if [[ -f "$f" ]] && [[ "$(cat "$f")" == "$content" ]]; then
    chmod "$mode" "$f"; return 1
  fi
  mkdir -p "$(dirname "$f")"
  printf '%s\n' "$content" > "$f.tmp.$$"
  chmod "$mode" "$f.tmp.$$"
  mv -f "$f.tmp.$$" "$f"
  return 0
}

# ---------------------------------------------------------------- loaded configuration
# What the running slurmctld/slurmd read at start-up: a stamp "PID SHA256" written right after
# this script starts one. A daemon started by anything else has no stamp of its own pid.
conf_sha() { sha256sum "$SLURM_CONF_FILE" 2>/dev/null | cut -d' ' -f1; }
stamp_file() { echo "/run/slurm-local.$1.loaded"; }

record_loaded() { # record_loaded COMM PIDFILE (just after starting it from $SLURM_CONF_FILE)
  local comm=$1 pidfile=$2 pid
  wait_for 15 "$comm pid" find_daemon "$pidfile" "$comm"
  pid=$(find_daemon "$pidfile" "$comm")
  printf '%s %s\n' "$pid" "$(conf_sha)" > "$(stamp_file "$comm")"
}

loaded_ok() { # loaded_ok COMM PIDFILE -> rc 0 if the running daemon was started from slurm.conf as it is now
  local comm=$1 pidfile=$2 pid stamp
  pid=$(find_daemon "$pidfile" "$comm") || return 1
  stamp=$(cat "$(stamp_file "$comm")" 2>/dev/null) || return 1
  [[ "$stamp" == "$pid $(conf_sha)" ]]
}

node_loaded_ok() { # node_loaded_ok NODE -> the same for the slurmd of a node in its namespace
  local pid stamp
  pid=$(node_slurmd_pid "$1") || return 1
  stamp=$(cat "$(stamp_file "slurmd-$1")" 2>/dev/null) || return 1
  [[ "$stamp" == "$pid $(conf_sha)" ]]
}

slurmds_loaded_ok() { # every slurmd of the NNODES cluster runs slurm.conf as it is now
  local n
  if ((NNODES > 1)); then
    for n in "${NODE_NAMES[@]}"; do node_loaded_ok "$n" || return 1; done
  else
    loaded_ok slurmd "$SLURMD_PID"
  fi
}

ctld_hash_ok() { # slurmctld's own check: the hash of the slurm.conf it loaded equals ours
  [[ "$(timeout 5 scontrol show config 2>/dev/null | awk -F' = ' '/^HASH_VAL/ {print $2}')" == Match ]]
}

# running_conf_ok -> rc 0 if slurmctld and slurmd both run the configuration in $SLURM_CONF_FILE
running_conf_ok() {
  loaded_ok slurmctld "$CTLD_PID" && slurmds_loaded_ok && ctld_hash_ok
}

current_mode() { # mode recorded in the live slurm.conf
  if grep -q '^AccountingStorageType=accounting_storage/none' "$SLURM_CONF_FILE" 2>/dev/null; then echo off; else echo on; fi
}

current_nodes() { # node count of the live slurm.conf (1 without one)
  local c
  c=$(grep -c '^NodeName=' "$SLURM_CONF_FILE" 2>/dev/null || true)
  if [[ "$c" =~ ^[0-9]+$ ]] && ((c > 1)); then echo "$c"; else echo 1; fi
}

ensure_dirs() {
  local n
  mkdir -p "$LOG_DIR" "$ACTIVE_STATE" "$SLURMD_SPOOL" /run/munge /run/mysqld /var/spool/slurm
  chmod 755 "$LOG_DIR" "$ACTIVE_STATE" "$SLURMD_SPOOL"
  for n in "${NODE_NAMES[@]}"; do mkdir -p "$SLURMD_SPOOL-$n"; chmod 755 "$SLURMD_SPOOL-$n"; done
  chown munge:munge /run/munge; chmod 755 /run/munge
  chown mysql:mysql /run/mysqld
  # a cluster-name change would make slurmctld refuse the old state
  if [[ -f "$ACTIVE_STATE/clustername" ]] && [[ "$(cat "$ACTIVE_STATE/clustername")" != "$ACTIVE_CLUSTER" ]]; then
    log "cluster name changed; wiping $ACTIVE_STATE"
    rm -rf "${ACTIVE_STATE:?}"/*
  fi
}

# ---------------------------------------------------------------- nodes in network namespaces
# --nodes N > 1: bridge $BRIDGE ($HOST_ADDR/24) on the host; per node nK a network namespace nK
# (/run/netns/nK), a veth pair slv-nK (host, on the bridge) / eth0 (in nK, 10.77.0.1K/24), lo up.
# slurmd -N nK runs there in its own UTS and mount namespace (see start_node_slurmd).

# node_slurmd_pid NODE -> pid of the slurmd running in NODE's network namespace
node_slurmd_pid() {
  local n=$1 want pid
  want=$(stat -L -c %i "/run/netns/$n" 2>/dev/null) || return 1
  want="net:[$want]"
  if pid=$(pid_alive "$(node_pidfile "$n")" slurmd) \
     && [[ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" == "$want" ]]; then
    echo "$pid"; return 0
  fi
  for pid in $(pgrep -x slurmd 2>/dev/null || true); do
    if proc_running "$pid" && [[ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" == "$want" ]]; then
      echo "$pid"; return 0
    fi
  done
  return 1
}

host_slurmd_pids() { # slurmd processes in this host's own network namespace (the 1-node slurmd)
  local here pid
  here=$(readlink /proc/$$/ns/net)
  for pid in $(pgrep -x slurmd 2>/dev/null || true); do
    [[ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" == "$here" ]] && echo "$pid"
  done
  return 0
}

netns_names() { # the namespaces this script made: recorded, or found by their host-side veth
  { cat "$NETNS_RECORD" 2>/dev/null || true
    ip -o link show type veth 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | sed -n 's/^slv-//p'
  } | grep -E '^n[0-9]+$' | sort -u || true
}

network_present() { # anything left of --nodes N: the bridge, a namespace, a veth
  ip link show dev "$BRIDGE" >/dev/null 2>&1 || [[ -n "$(netns_names)" ]]
}

gen_hosts() { # /etc/hosts inside the nodes: each name -> its bridge address (gloo needs its own)
  local n
  echo "# Generated by scripts/slurm-local.sh -- /etc/hosts of the nodes (bind-mounted in their mount namespaces)"
  echo "127.0.0.1 localhost"
  echo "::1 localhost ip6-localhost ip6-loopback"
  echo "$HOST_ADDR $NODE"
  for n in "${NODE_NAMES[@]}"; do echo "$(node_ip "$n") $n"; done
}

network_ok() { # the bridge, namespaces, veths, addresses and hosts file of NNODES are all there (cheap)
  local n links
  ip -o -4 addr show dev "$BRIDGE" 2>/dev/null | grep -q " $HOST_ADDR/24 " || return 1
  ip -o link show dev "$BRIDGE" 2>/dev/null | grep -q '[<,]UP[,>]' || return 1
  links=$(ip -o link show master "$BRIDGE" 2>/dev/null) || return 1
  [[ "$(netns_names | tr '\n' ' ')" == "$(printf '%s\n' "${NODE_NAMES[@]}" | sort -u | tr '\n' ' ')" ]] || return 1
  for n in "${NODE_NAMES[@]}"; do
    [[ -e "/run/netns/$n" && "$links" == *": slv-$n@"* ]] || return 1
    ip -n "$n" -o -4 addr show dev eth0 2>/dev/null | grep -q " $(node_ip "$n")/24 " || return 1
  done
  [[ -f "$HOSTS_FILE" && "$(cat "$HOSTS_FILE")" == "$(gen_hosts)" ]]
}

remove_node_netns() { # remove_node_netns NODE: whatever runs in it (slurmd, jobs), the veth, the namespace
  local n=$1 pids
  if [[ -e "/run/netns/$n" ]]; then
    pids=$(ip netns pids "$n" 2>/dev/null || true)
    # shellcheck disable=SC2086
    stop_pids $pids
    ip netns del "$n" 2>/dev/null || log "WARNING: could not delete network namespace $n"
  fi
  if ip link show dev "slv-$n" >/dev/null 2>&1; then ip link del "slv-$n" 2>/dev/null || true; fi
  rm -f "$(node_pidfile "$n")" "$(stamp_file "slurmd-$n")"
  if [[ -f "$NETNS_RECORD" ]]; then sed -i "/^$n\$/d" "$NETNS_RECORD"; fi
}

teardown_network() { # everything --nodes N made: namespaces, veths, bridge, hosts file
  local n names
  names=$(netns_names)
  network_present || return 0
  log "removing network namespaces ${names//$'\n'/ }, their veths and bridge $BRIDGE"
  for n in $names; do remove_node_netns "$n"; done
  if ip link show dev "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" || log "WARNING: could not delete bridge $BRIDGE"; fi
  rm -rf "$NODE_RUN"
}

ensure_network() { # the bridge and a namespace per node of NODE_NAMES (idempotent)
  local n ip
  mkdir -p "$NODE_RUN"
  write_if_changed "$HOSTS_FILE" 644 "$(gen_hosts)" || true
  for n in $(netns_names); do # nodes of a larger node count brought up before
    [[ " ${NODE_NAMES[*]} " == *" $n "* ]] || remove_node_netns "$n"
  done
  if ! ip link show dev "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge || die "could not create bridge $BRIDGE"
  fi
  if ! ip -o -4 addr show dev "$BRIDGE" | grep -q " $HOST_ADDR/24 "; then
    ip addr add "$HOST_ADDR/24" dev "$BRIDGE" || die "could not give $BRIDGE the address $HOST_ADDR/24"
  fi
  ip link set "$BRIDGE" up
  for n in "${NODE_NAMES[@]}"; do
    ip=$(node_ip "$n")
    grep -qx "$n" "$NETNS_RECORD" 2>/dev/null || echo "$n" >> "$NETNS_RECORD"
    if [[ ! -e "/run/netns/$n" ]]; then
      ip netns add "$n" || die "ip netns add $n failed"
    fi
    if ! ip -n "$n" link show dev eth0 >/dev/null 2>&1 || ! ip link show dev "slv-$n" >/dev/null 2>&1; then
      ip -n "$n" link del eth0 2>/dev/null || true   # a half pair (or one into a namespace deleted since)
      ip link del "slv-$n" 2>/dev/null || true
      ip link add "slv-$n" type veth peer name eth0 netns "$n" || die "could not create the veth pair of $n"
    fi
    ip link set "slv-$n" master "$BRIDGE" up
    ip -n "$n" link set lo up
    if ! ip -n "$n" -o -4 addr show dev eth0 | grep -q " $ip/24 "; then
      ip -n "$n" addr add "$ip/24" dev eth0 || die "could not give $n the address $ip/24"
    fi
    ip -n "$n" link set eth0 up
  done
}

# start_node_slurmd NODE: slurmd -N NODE in NODE's network namespace, plus its own UTS namespace
# (hostname NODE) and mount namespace (propagation slave: the host's mounts, /run/munge included,
# stay visible) with the nodes' hosts file over /etc/hosts. (Not `ip netns exec`: it remounts /sys
# and hides the cgroup mounts slurmd needs.)
start_node_slurmd() {
  local n=$1
  rm -f "$(node_pidfile "$n")"
  log "starting slurmd $n (network namespace $n, $(node_ip "$n"))"
  # shellcheck disable=SC2016
  nsenter --net="/run/netns/$n" unshare --uts --mount --propagation slave \
    sh -c 'mount --bind "$1" /etc/hosts && hostname "$2" && exec slurmd -N "$2"' sh "$HOSTS_FILE" "$n" 9>&- \
    || die "slurmd $n failed to start"
  wait_for 15 "slurmd $n pid" node_slurmd_pid "$n"
  printf '%s %s\n' "$(node_slurmd_pid "$n")" "$(conf_sha)" > "$(stamp_file "slurmd-$n")"
}

# ---------------------------------------------------------------- daemons
munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
ensure_munge() {
  munge_ok && return 0
  stop_daemon "$MUNGE_PID" munged
  rm -f "$MUNGE_SOCK" "$MUNGE_SOCK.lock"
  if [[ ! -s /etc/munge/munge.key ]]; then
    log "creating munge key"
    if command -v mungekey >/dev/null; then mungekey --create --force >/dev/null 2>&1 || true; fi
    [[ -s /etc/munge/munge.key ]] || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  log "starting munged"
  runuser -u munge -- munged --force --pid-file="$MUNGE_PID" 9>&- \
    || munged --force --pid-file="$MUNGE_PID" 9>&- \
    || die "munged failed to start"
  wait_for 15 "munge credential round-trip" munge_ok
}

mysql_ok() { mariadb-admin --socket="$MYSQL_SOCK" --connect-timeout=2 ping >/dev/null 2>&1; }
ensure_mariadb() {
  if ! mysql_ok; then
    stop_daemon "$MYSQL_PID" mariadbd
    rm -f "$MYSQL_SOCK"
    if [[ ! -d /var/lib/mysql/mysql ]]; then
      log "initialising MariaDB datadir"
      mariadb-install-db --user=mysql --datadir=/var/lib/mysql >"$LOG_DIR/mariadb-install.log" 2>&1 \
        || { cat "$LOG_DIR/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    log "starting mariadb"
    setsid -f mariadbd --user=mysql --datadir=/var/lib/mysql --socket="$MYSQL_SOCK" \
      --pid-file="$MYSQL_PID" --log-error="$LOG_DIR/mariadb.log" --bind-address=127.0.0.1 \
      --innodb-lock-wait-timeout=900 --innodb-buffer-pool-size=128M \
      </dev/null >/dev/null 2>&1 9>&-
    wait_for 30 "mariadb ping" mysql_ok
  fi
  # idempotent DB user/grants (cheap; skipped when the user can already log in)
  if ! mariadb --socket="$MYSQL_SOCK" -u"$DB_USER" -p"$DB_PASS" -e "USE $DB_NAME" >/dev/null 2>&1; then
    log "creating database $DB_NAME and user $DB_USER"
    mariadb --socket="$MYSQL_SOCK" -uroot <<SQL || die "could not create slurm DB user"
CREATE DATABASE IF NOT EXISTS $DB_NAME;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'localhost';
FLUSH PRIVILEGES;
SQL
  fi
}

dbd_ok() { timeout 10 sacctmgr -n -P list cluster format=cluster >/dev/null 2>&1; }
ensure_slurmdbd() { # $1 = restart|""
  if [[ "${1:-}" == restart ]] || ! find_daemon "$DBD_PID" slurmdbd >/dev/null; then
    stop_daemon "$DBD_PID" slurmdbd
    log "starting slurmdbd"
    slurmdbd 9>&- || die "slurmdbd failed to start"
  fi
  wait_for 45 "slurmdbd answering sacctmgr" dbd_ok
  if ! timeout 10 sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$ACTIVE_CLUSTER"; then
    log "registering cluster $ACTIVE_CLUSTER"
    timeout 20 sacctmgr -i add cluster "$ACTIVE_CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
  fi
  # 'add cluster' creates account 'root' with user root; add a default account
  # for ordinary users as well so AccountingStorageEnforce could be turned on.
  if ! timeout 10 sacctmgr -n -P list assoc cluster="$ACTIVE_CLUSTER" account=default format=account 2>/dev/null \
       | grep -qx default; then
    timeout 20 sacctmgr -i add account default Cluster="$ACTIVE_CLUSTER" Description=tests Organization=tests >/dev/null 2>&1 || true
  fi
}

ctld_ok() { timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { timeout 5 sinfo -h -N -n "${1:-$NODE}" -o '%t' 2>/dev/null | head -n1; }
nodes_ok() { # every node of the NNODES cluster usable
  local n
  for n in $(all_nodes); do [[ "$(node_state "$n")" =~ ^(idle|mix|alloc|comp)$ ]] || return 1; done
}

restart_slurm() { # restart slurmctld and slurmd (needed after slurm.conf changes)
  stop_daemon "$SLURMD_PID" slurmd   # every slurmd: the host's and the nodes' in their namespaces
  stop_daemon "$CTLD_PID" slurmctld
  start_slurm
}

start_slurm() {
  local n
  if ! find_daemon "$CTLD_PID" slurmctld >/dev/null; then
    rm -f "$CTLD_PID"
    log "starting slurmctld"
    slurmctld 9>&- || die "slurmctld failed to start"
    record_loaded slurmctld "$CTLD_PID"
  fi
  wait_for 30 "slurmctld responding (scontrol ping)" ctld_ok
  if ((NNODES > 1)); then
    for n in "${NODE_NAMES[@]}"; do
      node_slurmd_pid "$n" >/dev/null || start_node_slurmd "$n"
    done
  elif ! find_daemon "$SLURMD_PID" slurmd >/dev/null; then
    rm -f "$SLURMD_PID"
    log "starting slurmd"
    slurmd 9>&- || die "slurmd failed to start"
    record_loaded slurmd "$SLURMD_PID"
  fi
}

wait_nodes() {
  local end=$((SECONDS + TIMEOUT)) n st pending resumed=" "
  while :; do
    pending=""
    for n in $(all_nodes); do
      st=$(node_state "$n" || true)
      [[ "$st" =~ ^(idle|mix|alloc|comp)$ ]] && continue
      pending+=" $n: ${st:-?}"
      if [[ "$st" =~ ^(drain|drng|down|fail)$ && "$resumed" != *" $n "* ]]; then
        # stale DOWN/DRAIN from an earlier run: try to resume once slurmd is registered
        if timeout 5 scontrol update nodename="$n" state=resume >/dev/null 2>&1; then resumed+="$n "; fi
      fi
    done
    [[ -z "$pending" ]] && return 0
    (( SECONDS >= end )) && { timeout 5 scontrol show node >&2 || true; die "node(s) not usable after ${TIMEOUT}s (state:$pending)"; }
    sleep 0.25
  done
}

sacct_ok() { timeout 10 sacct -n -X -S now-1minutes -o jobid >/dev/null 2>&1; }

# ---------------------------------------------------------------- actions
fast_ok() { # everything already in the wanted state? (must stay cheap)
  local mode=$1 n
  [[ -f "$SLURM_CONF_FILE" && "$(cat "$SLURM_CONF_FILE")" == "$(gen_slurm_conf "$mode")" ]] || return 1
  pid_alive "$CTLD_PID" slurmctld >/dev/null || return 1
  if ((NNODES > 1)); then
    network_ok || return 1
    for n in "${NODE_NAMES[@]}"; do node_slurmd_pid "$n" >/dev/null || return 1; done
    [[ -z "$(host_slurmd_pids)" ]] || return 1
  else
    pid_alive "$SLURMD_PID" slurmd >/dev/null || return 1
    ! network_present || return 1
  fi
  munge_ok || return 1
  # ... and the daemons must run that file, not a configuration they were started with before
  running_conf_ok || return 1
  if [[ $mode == on ]]; then
    [[ -f "$DBD_CONF_FILE" && "$(cat "$DBD_CONF_FILE")" == "$(gen_dbd_conf)" ]] || return 1
    pid_alive "$DBD_PID" slurmdbd >/dev/null && pid_alive "$MYSQL_PID" mariadbd >/dev/null || return 1
  fi
  # the running slurmctld must have the wanted accounting plugin loaded
  local live
  live=$(timeout 5 scontrol show config 2>/dev/null | awk -F' = ' '/^AccountingStorageType/ {print $2}')
  if [[ $mode == on ]]; then [[ "$live" == accounting_storage/slurmdbd ]] || return 1
  else [[ "$live" == accounting_storage/none ]] || return 1; fi
  nodes_ok || return 1
  if [[ $mode == on ]]; then sacct_ok || return 1; fi
  return 0
}

ensure_cluster() { # $1 = on|off; NNODES nodes
  local mode=$1 conf_changed=0 dbd_changed=0 live what=$1 n
  ((NNODES > 1)) && what+=", $NNODES nodes"
  if fast_ok "$mode"; then log "cluster already up (accounting $what)"; return 0; fi
  ((NNODES > 1)) && PACKAGES+=(iproute2)
  ensure_packages
  ensure_dirs
  # switching the node count restarts slurmctld on another state folder: the jobs running now are
  # cut off (their completion reaches the other controller; when switched back, an allocation
  # without steps shows RUNNING until its time limit: scancel it)
  local before running
  before=$(current_nodes)
  if [[ -f "$SLURM_CONF_FILE" ]] && ((before != NNODES)) && ctld_ok; then
    running=$(timeout 5 squeue -h -t R,CG,CF -o %i 2>/dev/null | tr '\n' ' ' || true)
    [[ -z "${running// /}" ]] || log "WARNING: switching from $before to $NNODES node(s) cuts off the running job(s) $running"
  fi
  write_if_changed "$DBD_CONF_FILE" 600 "$(gen_dbd_conf)" && dbd_changed=1
  write_if_changed "$SLURM_CONF_FILE" 644 "$(gen_slurm_conf "$mode")" && conf_changed=1
  # the nodes' network: namespaces + bridge for N nodes (and no slurmd on the host itself),
  # none of it for one node
  if ((NNODES > 1)); then
    # shellcheck disable=SC2046
    stop_pids $(host_slurmd_pids); rm -f "$SLURMD_PID"
    ensure_network
  else
    teardown_network
  fi
  ensure_munge
  if [[ $mode == on ]]; then
    ensure_mariadb
    if ((dbd_changed)); then ensure_slurmdbd restart; else ensure_slurmdbd; fi
  fi
  # restart slurmctld/slurmd if the config changed, the live plugin differs, or the running
  # daemons were started from another configuration than the one just written. (A restart,
  # not `scontrol reconfigure`: changes to nodes need one in 22.05.)
  if find_daemon "$CTLD_PID" slurmctld >/dev/null && ctld_ok; then
    live=$(timeout 5 scontrol show config 2>/dev/null | awk -F' = ' '/^AccountingStorageType/ {print $2}')
    local want=accounting_storage/none; [[ $mode == on ]] && want=accounting_storage/slurmdbd
    if ((conf_changed)) || [[ "$live" != "$want" ]]; then
      log "slurm.conf changed; restarting slurmctld and slurmd"
      restart_slurm
    elif ! running_conf_ok; then
      log "slurmctld/slurmd are not running slurm.conf as written (started from another configuration or by another tool); restarting them"
      restart_slurm
    fi
  else
    # stale/unresponsive controller: kill leftovers so a clean start happens
    stop_daemon "$CTLD_PID" slurmctld
    if ((conf_changed)) || ! slurmds_loaded_ok; then stop_daemon "$SLURMD_PID" slurmd; fi
  fi
  start_slurm
  wait_nodes
  if [[ $mode == on ]]; then
    wait_for "$TIMEOUT" "sacct answering" sacct_ok
  fi
  if ((NNODES > 1)); then
    local states=""
    for n in "${NODE_NAMES[@]}"; do states+="${states:+, }$n $(node_state "$n")"; done
    log "cluster up (accounting $what): $states ($(nproc) CPUs each; network namespaces on bridge $BRIDGE $HOST_ADDR/24; cluster $ACTIVE_CLUSTER)"
  else
    log "cluster up (accounting $mode): $(node_state) node $NODE, $(nproc) CPUs"
  fi
}

do_down() {
  stop_daemon "$SLURMD_PID" slurmd   # every slurmd, the nodes' in namespaces too
  stop_daemon "$CTLD_PID" slurmctld
  stop_daemon "$DBD_PID" slurmdbd
  if find_daemon "$MYSQL_PID" mariadbd >/dev/null; then
    mariadb-admin --socket="$MYSQL_SOCK" shutdown >/dev/null 2>&1 || true
    stop_daemon "$MYSQL_PID" mariadbd
  fi
  stop_daemon "$MUNGE_PID" munged
  teardown_network
  log "all daemons stopped"
}

do_status() {
  local ok=0 mode pid st n
  mode=$(current_mode)
  line() { printf '%-10s %s\n' "$1" "$2"; }
  if munge_ok; then line munged "running (pid $(find_daemon "$MUNGE_PID" munged || echo ?))"; else line munged "NOT running"; ok=1; fi
  for d in "mariadbd:$MYSQL_PID" "slurmdbd:$DBD_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
    local name=${d%%:*} pf=${d#*:}
    if [[ $name == slurmd ]] && ((NNODES > 1)); then
      for n in "${NODE_NAMES[@]}"; do
        if pid=$(node_slurmd_pid "$n"); then line slurmd "$n running (pid $pid, network namespace $n, $(node_ip "$n"))"
        else line slurmd "$n NOT running"; ok=1; fi
      done
      continue
    fi
    if pid=$(find_daemon "$pf" "$name"); then line "$name" "running (pid $pid)"
    else
      if [[ $mode == off && ( $name == mariadbd || $name == slurmdbd ) ]]; then line "$name" "not running (not needed: accounting off)"
      else line "$name" "NOT running"; ok=1; fi
    fi
  done
  if ((NNODES > 1)); then
    if network_ok; then line nodes "$NNODES ($(all_nodes): network namespaces on bridge $BRIDGE $HOST_ADDR/24; cluster $ACTIVE_CLUSTER)"
    else line nodes "$NNODES ($(all_nodes)) but their namespaces/bridge/veths are incomplete (run: $0 up --nodes $NNODES)"; ok=1; fi
  else
    local extra=""
    network_present && extra="; left over from --nodes: network namespaces/bridge (removed by: $0 up)"
    line nodes "1 ($NODE: this host; cluster $CLUSTER$extra)"
  fi
  if ctld_ok; then
    for n in $(all_nodes); do
      st=$(node_state "$n")
      line node "$n: ${st:-unknown}"; [[ "$st" =~ ^(idle|mix|alloc|comp)$ ]] || ok=1
    done
    st=reachable
  else
    st="unreachable"; ok=1
    for n in $(all_nodes); do line node "$n: $st"; done
  fi
  if [[ "$st" != unreachable ]]; then
    if running_conf_ok; then line config "slurmctld and slurmd run $SLURM_CONF_FILE"
    else line config "slurmctld/slurmd may run another configuration than $SLURM_CONF_FILE (run: $0 up)"; ok=1; fi
  fi
  if [[ $mode == on ]]; then
    if sacct_ok; then line accounting "on (sacct OK)"; else line accounting "on (sacct FAILING)"; ok=1; fi
  else
    line accounting "off (accounting_storage/none)"
  fi
  return $ok
}

usage() { awk 'NR > 1 && /^set -euo pipefail/ {exit} NR > 1' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

main() {
  [[ $(id -u) -eq 0 ]] || { echo "must run as root" >&2; exit 2; }
  local cmd=${1:-} nodes="" args=()
  (($#)) && shift
  while (($#)); do
    case "$1" in
      --nodes) (($# >= 2)) || usage; nodes=$2; shift 2 ;;
      --nodes=*) nodes=${1#--nodes=}; shift ;;
      *) args+=("$1"); shift ;;
    esac
  done
  if [[ -n "$nodes" ]]; then
    [[ "$cmd" == up || "$cmd" == accounting ]] || { echo "--nodes goes with up or accounting" >&2; exit 2; }
    if ! [[ "$nodes" =~ ^[1-9][0-9]*$ ]] || ((nodes > MAX_NODES)); then
      echo "--nodes: a node count from 1 to $MAX_NODES, not '$nodes'" >&2; exit 2
    fi
  fi
  case "$cmd" in
    up|accounting|down|purge)
      exec 9>"$LOCK_FILE"
      flock -w 300 9 || die "could not get lock $LOCK_FILE";;
  esac
  case "$cmd" in
    up) set_nodes "${nodes:-1}"; ensure_cluster on ;;
    accounting)
      set_nodes "${nodes:-$(current_nodes)}"   # keeps the running node count
      case "${args[0]:-}" in
        on|off) ensure_cluster "${args[0]}" ;;
        *) echo "usage: $0 accounting on|off [--nodes N]" >&2; exit 2 ;;
      esac ;;
    down) set_nodes "$(current_nodes)"; do_down ;;
    purge)
      set_nodes "$(current_nodes)"
      do_down
      rm -rf "${CTLD_STATE:?}" "${CTLD_STATE:?}"[0-9] "${SLURMD_SPOOL:?}" "${SLURMD_SPOOL:?}"-n[0-9] "${LOG_DIR:?}"/*
      rm -f /run/slurm-local.slurmd-n[0-9].loaded
      set_nodes 1
      if [[ -d /var/lib/mysql/$DB_NAME ]]; then
        ensure_dirs
        # drop the accounting DB with a temporary mariadb
        setsid -f mariadbd --user=mysql --datadir=/var/lib/mysql --socket="$MYSQL_SOCK" \
          --pid-file="$MYSQL_PID" --log-error="$LOG_DIR/mariadb.log" </dev/null >/dev/null 2>&1 9>&-
        wait_for 30 "mariadb ping" mysql_ok
        mariadb --socket="$MYSQL_SOCK" -uroot -e "DROP DATABASE IF EXISTS $DB_NAME; DROP USER IF EXISTS '$DB_USER'@'localhost';" || true
        mariadb-admin --socket="$MYSQL_SOCK" shutdown >/dev/null 2>&1 || true
        stop_daemon "$MYSQL_PID" mariadbd
      fi
      rm -f "$SLURM_CONF_FILE" "$DBD_CONF_FILE"
      log "purged state, logs, configs and accounting DB" ;;
    status) set_nodes "$(current_nodes)"; do_status ;;
    *) usage ;;
  esac
}

main "$@"
