#!/usr/bin/env bash
# A throwaway single-node Slurm for the integration tests (tests/queue/test_slurm.py), started by .ci/run.
#
#   bash scripts/slurm_ci.sh start     # install if missing, start, wait until the node is idle (~15 s)
#   source /tmp/cmba-slurm-ci/env      # SLURM_CONF + CMBA_SLURM_NETNS: how the tests and the executor reach it
#   bash scripts/slurm_ci.sh status    # exit 0 when the cluster answers
#   bash scripts/slurm_ci.sh stop      # cancel its jobs, stop every process it started, remove the namespace
#
# What runs: munged, MariaDB (bound to 127.0.0.1) + slurmdbd (accounting, so `sacct` knows job states),
# slurmctld and `slurmd -N localhost`, all inside the network namespace "$CMBA_SLURM_NETNS" (default ci) that
# has only a loopback interface (127.0.0.1 and 127.0.0.2: glibc's AI_ADDRCONFIG needs a second address), so no
# daemon listens beyond this machine. Slurm commands therefore run as `ip netns exec ci sbatch ...`; the
# executor does that when CMBA_SLURM_NETNS is set (see toolkit/slurm.py). The node has 2 CPUs and two fake GPUs
# (character devices listed in gres.conf), so Slurm sets CUDA_VISIBLE_DEVICES per job and queues a third
# 1-GPU job. cgroup.conf constrains nothing (cgroup autodetection fails in this sandbox). State, spool, logs,
# pid files and the database live in $CMBA_SLURM_CI_DIR (default /tmp/cmba-slurm-ci).
#
# Idempotent: `start` on a running cluster only rewrites the env file; `stop` stops only what `start` started
# (pid files, and the processes inside the namespace it created).
set -euo pipefail

DIR=${CMBA_SLURM_CI_DIR:-/tmp/cmba-slurm-ci}
NS=${CMBA_SLURM_NETNS:-ci}
CONF=$DIR/etc/slurm.conf
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
export SLURM_CONF=$CONF

say() { echo "slurm-ci: $*" >&2; }
nsexec() { ip netns exec "$NS" "$@"; }
alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_until() {  # wait_until SECONDS WHAT COMMAND...
    local deadline=$((SECONDS + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            say "timed out waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

install() {
    command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null &&
        command -v munged >/dev/null && command -v sbatch >/dev/null && return 0
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
        say "Slurm is not installed and cannot be installed here (needs root and apt-get): ${PACKAGES[*]}"
        return 1
    fi
    say "installing ${PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q "${PACKAGES[@]}" >"$DIR/apt.log" 2>&1; then
        apt-get update -q >>"$DIR/apt.log" 2>&1 || true
        apt-get install -y -q "${PACKAGES[@]}" >>"$DIR/apt.log" 2>&1 || { tail -5 "$DIR/apt.log" >&2; return 1; }
    fi
}

write_configs() {
    mkdir -p "$DIR"/{etc,state,spool,log,run,dev}
    chmod 755 "$DIR"
    for i in 0 1; do  # fake GPUs: character devices (major 1, minor 3 = /dev/null) for gres.conf
        [[ -c $DIR/dev/fakegpu$i ]] || mknod "$DIR/dev/fakegpu$i" c 1 3
    done
    cat >"$CONF" <<EOF
ClusterName=cmbaci
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
JobRequeue=1
KillWait=5
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 RealMemory=8000 Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/etc/cgroup.conf" <<EOF
CgroupPlugin=cgroup/v1
CgroupAutomount=no
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=no
ConstrainSwapSpace=no
EOF
    cat >"$DIR/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=localhost Name=gpu File=$DIR/dev/fakegpu[0-1]
EOF
    cat >"$DIR/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=3306
StorageUser=slurm
StoragePass=ci-only
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DIR/etc/slurmdbd.conf"
}

start_netns() {
    if ! ip netns list | grep -qw "$NS"; then
        ip netns add "$NS"
        touch "$DIR/run/netns.created"
    fi
    ip -n "$NS" link set lo up
    ip -n "$NS" addr add 127.0.0.2/8 dev lo 2>/dev/null || true
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0  # a munged already serves this machine
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge
    chmod 755 /run/munge
    [[ -s /etc/munge/munge.key ]] || { runuser -u munge -- /usr/sbin/mungekey --create 2>/dev/null ||
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
    cp /run/munge/munged.pid "$DIR/run/munged.pid"
    wait_until 10 munged bash -c 'munge -n | unmunge'
}

start_mariadb() {
    alive "$DIR/run/mysql.pid" && return 0
    if [[ ! -d $DIR/mysql/mysql ]]; then
        mariadb-install-db --user=root --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
            --skip-test-db >"$DIR/log/mysql-install.log" 2>&1
    fi
    nsexec setsid mariadbd --user=root --datadir="$DIR/mysql" --socket="$DIR/run/mysql.sock" \
        --pid-file="$DIR/run/mysql.pid" --bind-address=127.0.0.1 --port=3306 --skip-name-resolve \
        --innodb-buffer-pool-size=32M --log-error="$DIR/log/mysql.err" </dev/null >/dev/null 2>&1 &
    wait_until 60 MariaDB mariadb --socket="$DIR/run/mysql.sock" -e 'SELECT 1'
    mariadb --socket="$DIR/run/mysql.sock" <<'EOF'
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'ci-only';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
EOF
}

start_slurm() {
    if ! alive "$DIR/run/slurmdbd.pid"; then
        nsexec slurmdbd
        wait_until 30 slurmdbd nsexec sacctmgr -n list cluster
    fi
    if ! nsexec sacctmgr -n -P list cluster format=cluster | grep -qx cmbaci; then
        nsexec sacctmgr -i add cluster cmbaci >/dev/null
    fi
    if ! alive "$DIR/run/slurmctld.pid"; then
        nsexec slurmctld -f "$CONF"
    fi
    if ! alive "$DIR/run/slurmd.pid"; then
        wait_until 30 slurmctld nsexec scontrol ping
        nsexec slurmd -f "$CONF" -N localhost
    fi
    wait_until 60 "the node to be idle" bash -c "ip netns exec '$NS' sinfo -h -o %T | grep -Eq '^(idle|mixed|allocated)$'"
}

write_env() {
    cat >"$DIR/env" <<EOF
export SLURM_CONF=$CONF
export CMBA_SLURM_NETNS=$NS
EOF
}

cluster_up() {
    [[ -f $CONF ]] && ip netns list 2>/dev/null | grep -qw "$NS" &&
        nsexec sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mixed|allocated)$'
}

start() {
    mkdir -p "$DIR"
    if cluster_up && alive "$DIR/run/slurmdbd.pid"; then
        write_env
        say "already running ($DIR/env)"
        return 0
    fi
    local t0=$SECONDS
    install
    write_configs
    start_netns
    start_munge
    start_mariadb
    start_slurm
    write_env
    say "ready in $((SECONDS - t0)) s: source $DIR/env"
}

stop_pid() {  # stop_pid PIDFILE: SIGTERM, then SIGKILL after 10 s
    local file=$1 pid
    alive "$file" || { rm -f "$file"; return 0; }
    pid=$(cat "$file")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$file"
}

stop() {
    [[ -d $DIR ]] || return 0
    if cluster_up; then
        nsexec scancel --full --signal=KILL --user=root 2>/dev/null || true
    fi
    for daemon in slurmd slurmctld slurmdbd mysql munged; do
        stop_pid "$DIR/run/$daemon.pid"
    done
    if [[ -f $DIR/run/netns.created ]]; then
        # whatever is still inside the namespace was started by this script (job steps, stray daemons)
        for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$NS" 2>/dev/null || true
        rm -f "$DIR/run/netns.created"
    fi
    rm -f "$DIR/env"
    say "stopped"
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) cluster_up ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
