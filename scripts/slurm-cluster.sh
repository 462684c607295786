#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for testing the SLURM profile (tests/test_slurm.py).
#
#   scripts/slurm-cluster.sh up       install (apt) if missing, start munged, slurmctld, slurmd;
#                                     returns when sinfo shows the node idle. Idempotent.
#   scripts/slurm-cluster.sh down     stop what `up` started (by the PID files it wrote) and
#                                     remove the /etc/slurm/slurm.conf it wrote. Idempotent.
#   scripts/slurm-cluster.sh status   exit 0 if the cluster is up and the node is usable.
#
# Needs root on Debian/Ubuntu (Debian 12: SLURM 22.05). No systemd needed. Everything lives
# under $SLURM_CLUSTER_DIR (default /tmp/quantinit-slurm): slurm.conf, state, spool, logs,
# PID files. The partition is called $SLURM_CLUSTER_PARTITION (default "debug").
# The config is also copied to /etc/slurm/slurm.conf: SLURM_CONF alone is not enough, the
# `srun` a job runs inside its allocation does not see it ("Could not establish a
# configuration source"). An /etc/slurm/slurm.conf that this script did not write is never
# touched: `up` refuses to run instead.
#
# Exit codes: 0 ok; 1 failure; 2 SLURM is not installed and cannot be (not root, no apt-get,
# apt-get failed); 3 (`status` only) the cluster is not up.
set -euo pipefail

DIR=${SLURM_CLUSTER_DIR:-/tmp/quantinit-slurm}
PARTITION=${SLURM_CLUSTER_PARTITION:-debug}
ETC_CONF=/etc/slurm/slurm.conf
MARKER="# written by quantinit scripts/slurm-cluster.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)
WAIT_S=${SLURM_CLUSTER_WAIT_S:-90}

log() { echo "slurm-cluster: $*" >&2; }
die() { log "$*"; exit 1; }

# --- processes we started, by PID file --------------------------------------------------------

# alive PIDFILE NAME: the PID in PIDFILE is a running process called NAME
alive() {
    local pid
    [[ -s $1 ]] || return 1
    pid=$(<"$1")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$2" ]]
}

# stop PIDFILE NAME: SIGTERM, then SIGKILL after 10 s; only if the PID is still NAME
stop() {
    local pid i
    if alive "$1" "$2"; then
        pid=$(<"$1")
        log "stopping $2 (pid $pid)"
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive "$1" "$2" || break
            sleep 0.1
        done
        if alive "$1" "$2"; then
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$1"
}

munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

node_state() { sinfo -h -N -o %T 2>/dev/null | head -n1; }

# --- install ----------------------------------------------------------------------------------

install_packages() {
    local missing=0 cmd
    for cmd in slurmctld slurmd munged sinfo squeue sbatch scontrol; do
        command -v "$cmd" >/dev/null || missing=1
    done
    ((missing)) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        log "SLURM is not installed and installing it needs root"
        exit 2
    fi
    if ! command -v apt-get >/dev/null; then
        log "SLURM is not installed and there is no apt-get to install it"
        exit 2
    fi
    log "installing ${PACKAGES[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } \
        </dev/null >"/tmp/slurm-cluster-apt.log" 2>&1; then
        tail -n 20 /tmp/slurm-cluster-apt.log >&2
        log "apt-get could not install ${PACKAGES[*]} (log: /tmp/slurm-cluster-apt.log)"
        exit 2
    fi
}

# --- configuration ----------------------------------------------------------------------------

write_config() {
    local host node_line
    host=$(hostname -s)
    # the node's real CPUs and memory as slurmd sees them: a larger RealMemory would
    # make slurmctld mark the node invalid
    node_line=$(slurmd -C | head -n1)
    [[ $node_line == NodeName=* ]] || die "slurmd -C printed no node line: $node_line"
    node_line="NodeName=$host ${node_line#NodeName=* }"
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    cat >"$DIR/slurm.conf" <<EOF
$MARKER
# A one-node test cluster on localhost; state under $DIR.
ClusterName=quantinit
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# keep finished jobs visible to squeue for 10 minutes (no accounting database here)
MinJobAge=600
ReturnToService=2
KillWait=5
InactiveLimit=0
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.slurm.pid
SlurmdPidFile=$DIR/slurmd.slurm.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
$node_line State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ -e $ETC_CONF ]] && ! grep -qxF "$MARKER" "$ETC_CONF"; then
        die "$ETC_CONF exists and was not written by this script; not replacing a real SLURM config"
    fi
    mkdir -p "$(dirname "$ETC_CONF")"
    cp "$DIR/slurm.conf" "$ETC_CONF"
}

# --- up / down / status -----------------------------------------------------------------------

start_munge() {
    # a munged that is already running (ours or the system's) will do
    munge_works && return 0
    stop "$DIR/munged.pid" munged
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge "$DIR/munge"
    chown munge:munge /run/munge "$DIR/munge"
    chmod 755 /run/munge
    log "starting munged"
    runuser -u munge -- munged --force --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" </dev/null >>"$DIR/log/munged.out" 2>&1 ||
        die "munged did not start: $(tail -n 5 "$DIR/munge/munged.log" 2>/dev/null)"
    local i
    for ((i = 0; i < 50; i++)); do
        [[ -s $DIR/munge/munged.pid ]] && break
        sleep 0.1
    done
    cp "$DIR/munge/munged.pid" "$DIR/munged.pid"
    munge_works || die "munge does not work: $(tail -n 5 "$DIR/munge/munged.log")"
}

# start_daemon NAME: run NAME -D in the background, detached, its PID in $DIR/NAME.pid
start_daemon() {
    alive "$DIR/$1.pid" "$1" && return 0
    log "starting $1"
    setsid "$1" -D -f "$ETC_CONF" </dev/null >>"$DIR/log/$1.out" 2>&1 &
    echo $! >"$DIR/$1.pid"
    sleep 0.5
    alive "$DIR/$1.pid" "$1" || die "$1 exited at once: $(tail -n 20 "$DIR/log/$1.out" "$DIR/log/$1.log" 2>/dev/null)"
}

wait_idle() {
    local i state=""
    for ((i = 0; i < WAIT_S * 2; i++)); do
        state=$(node_state || true)
        case $state in
            idle | mixed | allocated) return 0 ;;
            down* | drain* | fail*)
                # a node that came back with an old state: resume it
                scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true
                ;;
        esac
        sleep 0.5
    done
    log "node not idle after ${WAIT_S}s (state: '${state:-none}'); logs:"
    tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 2>/dev/null || true
    return 1
}

up() {
    install_packages
    [[ $(id -u) -eq 0 ]] || { log "the test cluster runs as root (SlurmUser=root)"; exit 2; }
    if alive "$DIR/slurmctld.pid" slurmctld && alive "$DIR/slurmd.pid" slurmd && munge_works; then
        wait_idle || die "cluster is running but its node is not usable"
        log "already up: $(sinfo -h -o '%P %D %T %C')"
        return 0
    fi
    # a partial cluster from an earlier run: stop our part of it and start from scratch
    stop "$DIR/slurmd.pid" slurmd
    stop "$DIR/slurmctld.pid" slurmctld
    rm -rf "$DIR/state" "$DIR/spool"
    mkdir -p "$DIR/log"
    write_config
    start_munge
    start_daemon slurmctld
    start_daemon slurmd
    wait_idle || die "the node did not become idle"
    log "up: $(sinfo -h -o '%P %D %T %C')  (config $ETC_CONF, files in $DIR)"
}

down() {
    stop "$DIR/slurmd.pid" slurmd
    stop "$DIR/slurmctld.pid" slurmctld
    stop "$DIR/munged.pid" munged
    if [[ -e $ETC_CONF ]] && grep -qxF "$MARKER" "$ETC_CONF"; then
        rm -f "$ETC_CONF"
    fi
    log "down"
}

status() {
    local name ok=0
    for name in munged slurmctld slurmd; do
        if alive "$DIR/$name.pid" "$name"; then
            echo "$name: running (pid $(<"$DIR/$name.pid"))"
        else
            echo "$name: not running (from this script)"
            [[ $name == munged ]] && munge_works || ok=3
        fi
    done
    if ((ok == 0)) && command -v sinfo >/dev/null; then
        sinfo -N -o '%N %P %T %C %m' || ok=3
    fi
    return $ok
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *)
        echo "usage: $0 up|down|status" >&2
        exit 64
        ;;
esac
