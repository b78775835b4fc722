#!/usr/bin/env bash
# Show the state of the SLURM dev cluster. Exit 0 when the node is usable, 1 otherwise.
set -euo pipefail

RUN_DIR=/run/slurm

daemon() {  # daemon NAME PIDFILE -- "running (pid N)" or "not running"
    local pid st
    if [ -s "$2" ]; then
        pid="$(tr -dc '0-9' <"$2")"
        st="$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)"
        if [ -n "$pid" ] && [ -n "$st" ] && [ "$st" != Z ] && grep -q "^$1" "/proc/$pid/comm" 2>/dev/null; then
            echo "running (pid $pid)"; return 0
        fi
    fi
    echo "not running"
}

printf '%-10s %s\n' munged "$(daemon munged /run/munge/munged.pid)"
printf '%-10s %s\n' slurmctld "$(daemon slurmctld "$RUN_DIR/slurmctld.pid")"
for f in "$RUN_DIR"/slurmd-*.pid; do
    [ -e "$f" ] || { printf '%-10s %s\n' slurmd "not running"; break; }
    n="$(basename "$f" .pid)"
    printf '%-10s %s\n' "${n}" "$(daemon slurmd "$f")"
done

if ! command -v sinfo >/dev/null 2>&1; then
    echo "SLURM client not installed (bash slurm/dev-cluster/install.sh)"; exit 1
fi
if ! timeout 10 sinfo >/dev/null 2>&1; then
    echo "controller not reachable (start it with: bash slurm/dev-cluster/start.sh)"; exit 1
fi
echo
timeout 10 sinfo -N -o '%N %P %T %c %m %E'
echo
timeout 10 squeue
state="$(timeout 10 sinfo -h -o %T | head -n 1)"
case "$state" in idle|mix|mixed|alloc|allocated|completing) exit 0 ;; *) exit 1 ;; esac
