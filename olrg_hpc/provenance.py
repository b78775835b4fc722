"""Provenance: what ran, where, from which code, with which library versions."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
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


def _source_roots() -> list[tuple[str, Path]]:
    """(package name, directory) of the package's own source: ``olrg_hpc`` and, if importable, ``workflows``."""
    roots = [("olrg_hpc", Path(__file__).resolve().parent)]
    try:
        spec = importlib.util.find_spec("workflows")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin and spec.origin.endswith("__init__.py"):  # not a stray namespace package
        roots.append(("workflows", Path(spec.origin).resolve().parent))
    return roots


@functools.cache
def code_hash() -> str:
    """sha256 over the sorted relative paths and bytes of every ``*.py`` file of ``olrg_hpc`` and ``workflows``.

    Identifies the code that ran without needing git (installed copies have none); computed once per process.
    """
    files = sorted((f"{name}/{f.relative_to(root).as_posix()}", f)
                   for name, root in _source_roots() for f in root.rglob("*.py") if f.is_file())
    h = hashlib.sha256()
    for rel, f in files:
        data = f.read_bytes()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def run_provenance() -> dict[str, str]:
    """Fields recorded once per run by the driver and copied into every shard."""
    prov = {"olrg_hpc_version": __version__, "git_commit": git_commit(), "code_hash": code_hash()}
    prov.update({f"version_{k}": v for k, v in library_versions().items()})
    return prov


def host() -> str:
    return socket.gethostname()
