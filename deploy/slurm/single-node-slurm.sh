#!/bin/bash
# A private single-node Slurm (slurmctld + slurmd + munged on this host, loopback only) to
# try the argonic Slurm scripts without a cluster. Needs root and the Debian packages
# slurm-wlm and munge. Everything lives in one directory; nothing is installed as a service.
#
#   deploy/slurm/single-node-slurm.sh start DIR   # prints: export SLURM_CONF=DIR/slurm.conf
#   SLURM_CONF=DIR/slurm.conf sbatch ...          # use it
#   deploy/slurm/single-node-slurm.sh stop DIR
set -euo pipefail
action=${1:?usage: single-node-slurm.sh start|stop DIR}
dir=$(mkdir -p "${2:?usage: single-node-slurm.sh start|stop DIR}" && cd "$2" && pwd)
ctld_port=${SLURMCTLD_PORT:-16817}
slurmd_port=${SLURMD_PORT:-16818}
node=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))

stop() {
    local pids=()
    for name in slurmd slurmctld munged; do
        if [[ -s "$dir/$name.pid" ]]; then
            pid=$(<"$dir/$name.pid")
            kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" && pids+=("$pid")
            rm -f "$dir/$name.pid"
        fi
    done
    for pid in "${pids[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    done
    return 0
}

if [[ $action == stop ]]; then
    stop
    exit 0
fi

mkdir -p "$dir/spool/slurmd" "$dir/spool/slurmctld" "$dir/munge" "$dir/munge-key"
chmod 755 "$dir" "$dir/munge"        # munged wants its socket reachable by every user
chmod 700 "$dir/munge-key"
if [[ ! -s "$dir/munge-key/munge.key" ]]; then
    dd if=/dev/urandom of="$dir/munge-key/munge.key" bs=1024 count=1 status=none
    chmod 400 "$dir/munge-key/munge.key"
fi
cat > "$dir/slurm.conf" <<CONF
ClusterName=argonic-test
SlurmctldHost=$node
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/spool/slurmctld
SlurmdSpoolDir=$dir/spool/slurmd
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
KillWait=10
InactiveLimit=0
MinJobAge=60
SchedulerParameters=sched_interval=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
cat > "$dir/cgroup.conf" <<CONF
# Slurm 22.05 always loads a cgroup plugin; proctrack/linuxproc and task/none use no cgroups.
CgroupPlugin=cgroup/v1
CgroupAutomount=no
CONF

munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge-key/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge-key/munge.seed"
export SLURM_CONF=$dir/slurm.conf
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
    if sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        echo "export SLURM_CONF=$SLURM_CONF"
        exit 0
    fi
    sleep 0.2
done
echo "single-node-slurm: node not idle; see $dir/slurmctld.log and $dir/slurmd.log" >&2
sinfo -N -l >&2 || true
stop
exit 1
