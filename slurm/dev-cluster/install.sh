#!/usr/bin/env bash
# Install the Debian packages for the single-node dev SLURM cluster (slurm-wlm, munge).
# Idempotent: does nothing when the binaries are already there. Needs root (or sudo) and apt.
set -euo pipefail

log() { printf '[dev-cluster/install] %s\n' "$*"; }
die() { printf '[dev-cluster/install] ERROR: %s\n' "$*" >&2; exit 1; }

pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

need=()
if ! command -v slurmctld >/dev/null 2>&1 || ! command -v slurmd >/dev/null 2>&1 \
    || ! command -v sinfo >/dev/null 2>&1 || ! pkg_installed slurm-wlm; then
    need+=(slurm-wlm)
fi
if ! command -v munged >/dev/null 2>&1 || ! pkg_installed munge; then
    need+=(munge)
fi

if [ "${#need[@]}" -eq 0 ]; then
    log "slurm-wlm and munge already installed ($(slurmctld -V 2>/dev/null || echo 'slurm ?'))"
    exit 0
fi

command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install ${need[*]} with your package manager"

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: cannot install ${need[*]}"
    SUDO=(sudo)
fi

export DEBIAN_FRONTEND=noninteractive

# apt-get update only when the package lists are missing or the candidates are unknown.
need_update=0
for p in "${need[@]}"; do
    apt-cache policy "$p" 2>/dev/null | grep -q 'Candidate: [0-9]' || need_update=1
done
if [ "$need_update" -eq 1 ]; then
    log "package lists do not know ${need[*]}: running apt-get update"
    "${SUDO[@]}" apt-get update -qq
fi

log "installing: ${need[*]}"
if ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; then
    log "install failed; retrying after apt-get update"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

command -v slurmctld >/dev/null 2>&1 || die "slurmctld still missing after install"
command -v munged >/dev/null 2>&1 || die "munged still missing after install"
log "installed $(slurmctld -V)"
