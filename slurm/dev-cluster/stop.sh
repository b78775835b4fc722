#!/usr/bin/env bash
# Stop the SLURM dev cluster started by start.sh: cancel jobs, shut down slurmctld and slurmd,
# then stop munged. Idempotent: does nothing (and exits 0) when nothing runs.
#
# Environment:
#   DEV_SLURM_KEEP_JOBS=1   do not cancel queued/running jobs first (they are kept in the saved state)
#   DEV_SLURM_KEEP_MUNGE=1  leave munged running
#   DEV_SLURM_STOP_TIMEOUT  seconds to wait for each daemon to exit before signalling it (default 30)
set -euo pipefail

RUN_DIR=/run/slurm
MUNGE_PID=/run/munge/munged.pid
TIMEOUT="${DEV_SLURM_STOP_TIMEOUT:-30}"

log() { printf '[dev-cluster/stop] %s\n' "$*"; }
die() { printf '[dev-cluster/stop] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

# alive PID -- the process exists and is not a zombie (a killed daemon lingers as a zombie until PID 1
# reaps it; in containers whose PID 1 never reaps, that would be forever).
alive() {
    local st
    st="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
    [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}

# daemon_pids NAME PIDFILE -- pids of the daemon: from its pid file if that names a live NAME process,
# otherwise the processes whose command is exactly NAME (pid file lost, or started by hand).
daemon_pids() {
    local pid=""
    if [ -s "$2" ]; then
        pid="$(tr -dc '0-9' <"$2")"
        if [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && grep -q "^$1" "/proc/$pid/comm" 2>/dev/null \
            && alive "$pid"; then
            echo "$pid"; return 0
        fi
    fi
    for pid in $(pgrep -x "$1" 2>/dev/null || true); do
        alive "$pid" && echo "$pid"
    done
    return 0
}

# wait_exit NAME PIDS... -- wait up to TIMEOUT s for the pids to exit; TERM, then KILL, the stragglers.
wait_exit() {
    local name="$1"; shift
    local pids=("$@") alive_pids=() i p sig
    [ "${#pids[@]}" -gt 0 ] || return 0
    for sig in none TERM KILL; do
        if [ "$sig" != none ]; then
            alive_pids=()
            for p in "${pids[@]}"; do alive "$p" && alive_pids+=("$p"); done
            [ "${#alive_pids[@]}" -eq 0 ] && return 0
            log "$name (pid ${alive_pids[*]}) still running: sending SIG$sig"
            kill -s "$sig" "${alive_pids[@]}" 2>/dev/null || true
        fi
        for i in $(seq 1 $(( TIMEOUT * 2 ))); do
            alive_pids=()
            for p in "${pids[@]}"; do alive "$p" && alive_pids+=("$p"); done
            [ "${#alive_pids[@]}" -eq 0 ] && return 0
            [ "$sig" = KILL ] && [ "$i" -gt 10 ] && break
            sleep 0.5
        done
    done
    log "WARNING: $name (pid ${alive_pids[*]}) did not exit"
    return 1
}

mapfile -t ctld_pids < <(daemon_pids slurmctld "$RUN_DIR/slurmctld.pid")
slurmd_pids=()
for f in "$RUN_DIR"/slurmd*.pid; do  # one slurmd per node name (slurmd-NODE.pid)
    [ -e "$f" ] && mapfile -t -O "${#slurmd_pids[@]}" slurmd_pids < <(daemon_pids slurmd "$f")
done
[ "${#slurmd_pids[@]}" -gt 0 ] || mapfile -t slurmd_pids < <(daemon_pids slurmd /nonexistent)
mapfile -t slurmd_pids < <(printf '%s\n' "${slurmd_pids[@]}" | sort -u | sed '/^$/d')
mapfile -t munge_pids < <(daemon_pids munged "$MUNGE_PID")

stopped_any=0
if [ "${#ctld_pids[@]}" -gt 0 ] || [ "${#slurmd_pids[@]}" -gt 0 ]; then
    stopped_any=1
    if [ "${#ctld_pids[@]}" -gt 0 ] && command -v scontrol >/dev/null 2>&1; then
        if [ "${DEV_SLURM_KEEP_JOBS:-0}" != 1 ]; then
            mapfile -t jobs < <(timeout 20 squeue -h -o %i 2>/dev/null || true)
            if [ "${#jobs[@]}" -gt 0 ]; then
                log "cancelling ${#jobs[@]} job(s): ${jobs[*]}"
                timeout 20 scancel "${jobs[@]}" 2>/dev/null || true
                for _ in $(seq 1 30); do
                    [ -z "$(timeout 10 squeue -h -o %i 2>/dev/null)" ] && break
                    sleep 0.5
                done
            fi
        fi
        log "scontrol shutdown (slurmctld pid ${ctld_pids[*]:-none}, slurmd pid ${slurmd_pids[*]:-none})"
        timeout 20 scontrol shutdown 2>/dev/null || log "scontrol shutdown failed; signalling the daemons instead"
    fi
    rc=0
    wait_exit slurmd "${slurmd_pids[@]}" || rc=1
    wait_exit slurmctld "${ctld_pids[@]}" || rc=1
    [ "$rc" -eq 0 ] || die "SLURM daemons did not stop"
    rm -f "$RUN_DIR/slurmctld.pid" "$RUN_DIR"/slurmd*.pid
    log "slurmctld and slurmd stopped"
else
    log "slurmctld/slurmd not running"
fi

if [ "${DEV_SLURM_KEEP_MUNGE:-0}" = 1 ]; then
    log "leaving munged running (DEV_SLURM_KEEP_MUNGE=1)"
elif [ "${#munge_pids[@]}" -gt 0 ]; then
    stopped_any=1
    log "stopping munged (pid ${munge_pids[*]})"
    kill -s TERM "${munge_pids[@]}" 2>/dev/null || true
    wait_exit munged "${munge_pids[@]}" || die "munged did not stop"
    rm -f "$MUNGE_PID"
    log "munged stopped"
else
    log "munged not running"
fi

if [ "$stopped_any" -eq 1 ]; then log "OK: dev cluster stopped"; else log "OK: nothing was running"; fi
