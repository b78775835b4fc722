"""Provenance: what ran, where, from which code, with which library versions."""

from __future__ import annotations

import functools
import socket
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from olrg_hpc import __version__

TRACKED = ("numpy", "scipy", "jax", "jaxlib", "dask", "distributed", "h5py")


def now() -> str:
    """Current time, ISO 8601 in UTC with microseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


@functools.cache
def library_versions() -> dict[str, str]:
    """Installed versions of the libraries whose numerics or scheduling shape the results (no imports)."""
    out = {}
    for name in TRACKED:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


@functools.cache
def git_commit(path: str | None = None) -> str:
    """Commit of the source tree (with '-dirty' when it has uncommitted changes), or 'unknown'."""
    where = Path(path) if path else Path(__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def run_provenance() -> dict[str, str]:
    """Fields recorded once per run by the driver and copied into every shard."""
    prov = {"olrg_hpc_version": __version__, "git_commit": git_commit()}
    prov.update({f"version_{k}": v for k, v in library_versions().items()})
    return prov


def host() -> str:
    return socket.gethostname()
