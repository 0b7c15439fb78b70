#!/usr/bin/env bash
# slurm-local.sh -- bring up a REAL single-node Slurm cluster on this machine
# (munge + MariaDB + slurmdbd + slurmctld + slurmd) for integration tests.
#
# Usage (as root):
#   scripts/slurm-local.sh up              # install if missing, configure, start, wait (idempotent; accounting ON)
#   scripts/slurm-local.sh accounting off  # AccountingStorageType=accounting_storage/none (sacct fails)
#   scripts/slurm-local.sh accounting on   # back to accounting_storage/slurmdbd
#   scripts/slurm-local.sh status          # one line per daemon; rc 0 only if cluster usable
#   scripts/slurm-local.sh down            # stop all daemons (state kept)
#   scripts/slurm-local.sh purge           # down + delete Slurm state, logs and the accounting DB
#
# Environment knobs (all optional):
#   SLURM_LOCAL_CLUSTER   cluster name            (default: localcluster)
#   SLURM_LOCAL_TIMEOUT   seconds to wait for readiness (default: 60)
#   SLURM_LOCAL_MIN_JOB_AGE  MinJobAge in seconds (default: 30)
#   SLURM_LOCAL_MEM_MB    RealMemory of the node  (default: 8000, capped at physical RAM)
#
# Notes:
#  * `up` always (re)establishes accounting ON; `accounting off` is the explicit opt-out.
#  * Daemons are started directly (no systemd needed); pid files live in /run.
#  * `up` makes the RUNNING slurmctld and slurmd use the slurm.conf it writes: when they were
#    started from another configuration (another single-node Slurm already running, a file
#    changed under them), it restarts them. It knows what they loaded from a stamp it writes
#    when it starts them (/run/slurm-local.<daemon>.loaded: pid and sha256 of slurm.conf), and
#    from slurmctld's own comparison (`scontrol show config` HASH_VAL = Match).
#  * Logs: /var/log/slurm/{slurmctld,slurmd,slurmdbd,mariadb,munged}.log
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
PACKAGES=(slurm-wlm slurm-client munge slurmdbd mariadb-server)

export SLURM_CONF="$SLURM_CONF_FILE"
export DEBIAN_FRONTEND=noninteractive

log()  { echo "[slurm-local] $*" >&2; }
die()  { log "ERROR: $*"; dump_logs; exit 1; }

NODE="$(hostname -s)"

dump_logs() {
  local f
  for f in /var/log/munge/munged.log "$LOG_DIR/mariadb.log" "$LOG_DIR/slurmdbd.log" \
           "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log"; do
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

# stop_daemon PIDFILE COMM
stop_daemon() {
  local pidfile=$1 comm=$2 pids i
  pids=$( { pid_alive "$pidfile" "$comm" || true; pgrep -x "$comm" 2>/dev/null || true; } | sort -u)
  local p live=""
  for p in $pids; do proc_running "$p" && live+=" $p"; done
  pids=$live
  if [[ -n "$pids" ]]; then
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      local alive=""
      for p in $pids; do proc_running "$p" && alive+=" $p"; done
      [[ -z "$alive" ]] && break
      sleep 0.1
    done
    for p in $pids; do proc_running "$p" && { kill -KILL "$p" 2>/dev/null || true; }; done
  fi
  rm -f "$pidfile"
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
gen_slurm_conf() { # $1 = on|off
  local acct_type ncpu mem phys
  ncpu=$(nproc)
  phys=$(awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo)
  mem=$MEM_MB
  (( phys > 0 && mem > phys )) && mem=$phys
  if [[ $1 == on ]]; then acct_type=accounting_storage/slurmdbd; else acct_type=accounting_storage/none; fi
  cat <<EOF
# Generated by scripts/slurm-local.sh -- do not edit (accounting=$1)
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
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
SlurmdPidFile=$SLURMD_PID
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
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
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
JobCompType=jobcomp/none
# nodes / partitions
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$ncpu RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=60 State=UP
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

ctld_hash_ok() { # slurmctld's own check: the hash of the slurm.conf it loaded equals ours
  [[ "$(timeout 5 scontrol show config 2>/dev/null | awk -F' = ' '/^HASH_VAL/ {print $2}')" == Match ]]
}

# running_conf_ok -> rc 0 if slurmctld and slurmd both run the configuration in $SLURM_CONF_FILE
running_conf_ok() {
  loaded_ok slurmctld "$CTLD_PID" && loaded_ok slurmd "$SLURMD_PID" && ctld_hash_ok
}

current_mode() { # mode recorded in the live slurm.conf
  if grep -q '^AccountingStorageType=accounting_storage/none' "$SLURM_CONF_FILE" 2>/dev/null; then echo off; else echo on; fi
}

ensure_dirs() {
  mkdir -p "$LOG_DIR" "$CTLD_STATE" "$SLURMD_SPOOL" /run/munge /run/mysqld /var/spool/slurm
  chmod 755 "$LOG_DIR" "$CTLD_STATE" "$SLURMD_SPOOL"
  chown munge:munge /run/munge; chmod 755 /run/munge
  chown mysql:mysql /run/mysqld
  # a cluster-name change would make slurmctld refuse the old state
  if [[ -f "$CTLD_STATE/clustername" ]] && [[ "$(cat "$CTLD_STATE/clustername")" != "$CLUSTER" ]]; then
    log "cluster name changed; wiping $CTLD_STATE"
    rm -rf "${CTLD_STATE:?}"/*
  fi
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
  if ! timeout 10 sacctmgr -n -P list cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; then
    log "registering cluster $CLUSTER"
    timeout 20 sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed"
  fi
  # 'add cluster' creates account 'root' with user root; add a default account
  # for ordinary users as well so AccountingStorageEnforce could be turned on.
  if ! timeout 10 sacctmgr -n -P list account format=account 2>/dev/null | grep -qx default; then
    timeout 20 sacctmgr -i add account default Cluster="$CLUSTER" Description=tests Organization=tests >/dev/null 2>&1 || true
  fi
}

ctld_ok() { timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; }
node_state() { timeout 5 sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | head -n1; }
node_ok() { [[ "$(node_state)" =~ ^(idle|mix|alloc|comp)$ ]]; }

restart_slurm() { # restart slurmctld and slurmd (needed after slurm.conf changes)
  stop_daemon "$SLURMD_PID" slurmd
  stop_daemon "$CTLD_PID" slurmctld
  start_slurm
}

start_slurm() {
  if ! find_daemon "$CTLD_PID" slurmctld >/dev/null; then
    rm -f "$CTLD_PID"
    log "starting slurmctld"
    slurmctld 9>&- || die "slurmctld failed to start"
    record_loaded slurmctld "$CTLD_PID"
  fi
  wait_for 30 "slurmctld responding (scontrol ping)" ctld_ok
  if ! find_daemon "$SLURMD_PID" slurmd >/dev/null; then
    rm -f "$SLURMD_PID"
    log "starting slurmd"
    slurmd 9>&- || die "slurmd failed to start"
    record_loaded slurmd "$SLURMD_PID"
  fi
}

wait_node() {
  local end=$((SECONDS + TIMEOUT)) st resumed=0
  while :; do
    st=$(node_state || true)
    [[ "$st" =~ ^(idle|mix|alloc|comp)$ ]] && return 0
    if [[ "$st" =~ ^(drain|drng|down|fail)$ && $resumed -eq 0 ]]; then
      # stale DOWN/DRAIN from an earlier run: try to resume once slurmd is registered
      timeout 5 scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 && resumed=1 || true
    fi
    (( SECONDS >= end )) && { timeout 5 scontrol show node "$NODE" >&2 || true; die "node $NODE not usable after ${TIMEOUT}s (state: ${st:-?})"; }
    sleep 0.25
  done
}

sacct_ok() { timeout 10 sacct -n -X -S now-1minutes -o jobid >/dev/null 2>&1; }

# ---------------------------------------------------------------- actions
fast_ok() { # everything already in the wanted state? (must stay cheap)
  local mode=$1
  [[ -f "$SLURM_CONF_FILE" && "$(cat "$SLURM_CONF_FILE")" == "$(gen_slurm_conf "$mode")" ]] || return 1
  pid_alive "$SLURMD_PID" slurmd >/dev/null && pid_alive "$CTLD_PID" slurmctld >/dev/null || return 1
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
  node_ok || return 1
  if [[ $mode == on ]]; then sacct_ok || return 1; fi
  return 0
}

ensure_cluster() { # $1 = on|off
  local mode=$1 conf_changed=0 dbd_changed=0 live
  if fast_ok "$mode"; then log "cluster already up (accounting $mode)"; return 0; fi
  ensure_packages
  ensure_dirs
  write_if_changed "$DBD_CONF_FILE" 600 "$(gen_dbd_conf)" && dbd_changed=1
  write_if_changed "$SLURM_CONF_FILE" 644 "$(gen_slurm_conf "$mode")" && conf_changed=1
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
    if ((conf_changed)) || ! loaded_ok slurmd "$SLURMD_PID"; then stop_daemon "$SLURMD_PID" slurmd; fi
  fi
  start_slurm
  wait_node
  if [[ $mode == on ]]; then
    wait_for "$TIMEOUT" "sacct answering" sacct_ok
  fi
  log "cluster up (accounting $mode): $(node_state) node $NODE, $(nproc) CPUs"
}

do_down() {
  stop_daemon "$SLURMD_PID" slurmd
  stop_daemon "$CTLD_PID" slurmctld
  stop_daemon "$DBD_PID" slurmdbd
  if pid=$(find_daemon "$MYSQL_PID" mariadbd); then
    mariadb-admin --socket="$MYSQL_SOCK" shutdown >/dev/null 2>&1 || true
    stop_daemon "$MYSQL_PID" mariadbd
  fi
  stop_daemon "$MUNGE_PID" munged
  log "all daemons stopped"
}

do_status() {
  local ok=0 mode pid st
  mode=$(current_mode)
  line() { printf '%-10s %s\n' "$1" "$2"; }
  if munge_ok; then line munged "running (pid $(find_daemon "$MUNGE_PID" munged || echo ?))"; else line munged "NOT running"; ok=1; fi
  for d in "mariadbd:$MYSQL_PID" "slurmdbd:$DBD_PID" "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
    local name=${d%%:*} pf=${d#*:}
    if pid=$(find_daemon "$pf" "$name"); then line "$name" "running (pid $pid)"
    else
      if [[ $mode == off && ( $name == mariadbd || $name == slurmdbd ) ]]; then line "$name" "not running (not needed: accounting off)"
      else line "$name" "NOT running"; ok=1; fi
    fi
  done
  if ctld_ok; then st=$(node_state); else st="unreachable"; fi
  line node "$NODE: ${st:-unknown}"; [[ "$st" =~ ^(idle|mix|alloc|comp)$ ]] || ok=1
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

main() {
  [[ $(id -u) -eq 0 ]] || { echo "must run as root" >&2; exit 2; }
  local cmd=${1:-}
  case "$cmd" in
    up|accounting|down|purge)
      exec 9>"$LOCK_FILE"
      flock -w 300 9 || die "could not get lock $LOCK_FILE";;
  esac
  case "$cmd" in
    up) ensure_cluster on ;;
    accounting)
      case "${2:-}" in
        on|off) ensure_cluster "$2" ;;
        *) echo "usage: $0 accounting on|off" >&2; exit 2 ;;
      esac ;;
    down) do_down ;;
    purge)
      do_down
      rm -rf "${CTLD_STATE:?}" "${SLURMD_SPOOL:?}" "${LOG_DIR:?}"/*
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
    status) do_status ;;
    *) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
  esac
}

main "$@"
