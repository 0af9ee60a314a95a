#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on this machine (for tests/test_slurm.py and CI).
#
#   sudo .ci/slurm-up.sh            # install (if needed), configure, start, wait for idle
#   SLURM_UP_TIMEOUT=120 .ci/slurm-up.sh
#
# Idempotent: re-running it with the daemons already up only checks that the node is idle.
# Installs slurm-wlm + munge with apt (Debian/Ubuntu), starts munged as the `munge` user,
# writes /etc/slurm/slurm.conf (one node = this host, partition `debug`, no accounting),
# starts slurmctld then slurmd and waits until `sinfo` reports the node idle.
# Exits non-zero with a message on stderr if any step fails.
set -euo pipefail

TIMEOUT="${SLURM_UP_TIMEOUT:-60}"
PARTITION="${SLURM_UP_PARTITION:-debug}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"

die() { echo "slurm-up: ERROR: $*" >&2; exit 1; }
log() { echo "slurm-up: $*"; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs packages and starts daemons)"

# --- 1. packages ------------------------------------------------------------------------------
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
if ! have slurmctld || ! have slurmd || ! have munged || ! have sinfo; then
    command -v apt-get >/dev/null 2>&1 || die "slurm not installed and apt-get not available"
    log "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq slurm-wlm munge >/dev/null || die "apt-get install slurm-wlm munge failed"
else
    log "slurm-wlm and munge already installed"
fi
MUNGED=$(command -v munged || echo /usr/sbin/munged)
SLURMCTLD=$(command -v slurmctld || echo /usr/sbin/slurmctld)
SLURMD=$(command -v slurmd || echo /usr/sbin/slurmd)

# --- 2. munge ---------------------------------------------------------------------------------
if [ ! -s /etc/munge/munge.key ]; then
    log "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null 2>&1; then
        mungekey --create --keyfile=/etc/munge/munge.key
    else
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    fi
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already running"
else
    log "starting munged"
    su -s /bin/sh munge -c "$MUNGED" || die "could not start munged"
    for _ in $(seq 1 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.5
    done
    munge -n | unmunge >/dev/null 2>&1 || die "munge -n | unmunge fails: munged not working"
fi

# --- 3. slurm.conf ----------------------------------------------------------------------------
HOST=$(hostname -s)
CPUS=$(nproc)
TOTAL_MB=$(free -m | awk '/^Mem:/ {print $2}')
# leave a margin for the OS and the daemons (10%, at least 512 MB)
MARGIN=$(( TOTAL_MB / 10 )); [ "$MARGIN" -lt 512 ] && MARGIN=512
MEM_MB=$(( TOTAL_MB - MARGIN )); [ "$MEM_MB" -lt 256 ] && MEM_MB=256

mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
NEW_CONF=$(cat <<CONFEOF
# Written by .ci/slurm-up.sh -- single-node test cluster
ClusterName=glocal
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
CONFEOF
)
CONF_CHANGED=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEW_CONF" ]; then
    log "writing $CONF (node $HOST, CPUs=$CPUS, RealMemory=${MEM_MB}MB, partition $PARTITION)"
    printf '%s\n' "$NEW_CONF" > "$CONF"
    CONF_CHANGED=1
fi

# --- 4. daemons -------------------------------------------------------------------------------
running() { pgrep -x "$1" >/dev/null 2>&1; }
if [ "$CONF_CHANGED" -eq 1 ]; then
    # the configuration changed: restart whatever is running so that it is read
    for d in slurmd slurmctld; do
        if running "$d"; then
            log "restarting $d (configuration changed)"
            pid=$(pgrep -x "$d" | head -1); kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do running "$d" || break; sleep 0.5; done
        fi
    done
fi
if ! running slurmctld; then
    log "starting slurmctld"
    "$SLURMCTLD" || die "slurmctld failed to start (see /var/log/slurm/slurmctld.log)"
fi
if ! running slurmd; then
    log "starting slurmd"
    "$SLURMD" || die "slurmd failed to start (see /var/log/slurm/slurmd.log)"
fi

# --- 5. wait for an idle node -----------------------------------------------------------------
log "waiting up to ${TIMEOUT}s for node $HOST to be idle"
deadline=$(( $(date +%s) + TIMEOUT ))
state=""
while :; do
    state=$(sinfo -h -n "$HOST" -o '%t' 2>/dev/null | head -1 || true)
    case "$state" in
        idle|mix|alloc) break ;;
        down*|drain*|fail*)
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    [ "$(date +%s)" -ge "$deadline" ] && break
    sleep 1
done
case "$state" in
    idle|mix|alloc) ;;
    *) sinfo >&2 || true
       die "node $HOST not idle after ${TIMEOUT}s (state: '${state:-unknown}'); see /var/log/slurm/" ;;
esac
log "cluster up:"
sinfo
