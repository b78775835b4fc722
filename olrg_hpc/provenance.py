"""Provenance: what ran, where, from which code, with which library versions."""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import socket
import subprocess
import sys
from collections import Counter
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
    return _hash_files({f"{name}/{f.relative_to(root).as_posix()}": f
                        for name, root in _source_roots() for f in root.rglob("*.py") if f.is_file()})


def _hash_files(files: dict[str, Path]) -> str:
    """sha256 over ``label, length, bytes`` of every file, in the order of the sorted labels."""
    h = hashlib.sha256()
    for label in sorted(files):
        data = files[label].read_bytes()
        h.update(f"{label}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def _own_module_file(name: str) -> Path | None:
    """Source file of module ``name`` when it belongs to :func:`_source_roots` (a package's ``__init__.py``)."""
    for pkg, root in _source_roots():
        if name == pkg or name.startswith(pkg + "."):
            base = root.joinpath(*name.split(".")[1:])
            for f in (base / "__init__.py", base.with_suffix(".py")):
                if f.is_file():
                    return f
    return None


def _imported_names(source: bytes, module: str, is_package: bool) -> set[str]:
    """Every module name an import statement of ``source`` may load, anywhere in the file (imports inside
    functions too); ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a submodule)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def module_sources(module: str) -> dict[str, Path]:
    """Source files, by module name, of ``module`` and of every module of ``olrg_hpc`` / ``workflows`` it imports,
    directly or not: static import statements anywhere in a file (inside functions too), and the ``__init__`` of
    every parent package. Imports by computed names (``importlib.import_module(name)``) are not seen."""
    files: dict[str, Path] = {}
    if _own_module_file(module) is None:  # a module of its own (a test's, a user's) that may import ours
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            files[module] = Path(spec.origin)
    todo = [module]
    done: set[str] = set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ first
            sub = ".".join(parts[:i])
            if sub in done:
                continue
            done.add(sub)
            f = files.get(sub) or _own_module_file(sub)
            if f is None:
                continue
            files[sub] = f
            todo.extend(_imported_names(f.read_bytes(), sub, f.name == "__init__.py"))
    return files


@functools.cache
def module_code_hash(module: str) -> str:
    """sha256 over the names and bytes of :func:`module_sources` of ``module``; computed once per process.

    A task's key uses this instead of :func:`code_hash`, so that editing code a task never imports (a report,
    another workflow) does not make every finished task of a long study run again; task modules must therefore
    not import the package's own modules by computed names.
    """
    return _hash_files(module_sources(module))


def run_provenance() -> dict[str, str]:
    """Fields recorded once per run by the driver and copied into every shard."""
    prov = {"olrg_hpc_version": __version__, "git_commit": git_commit(), "code_hash": code_hash()}
    prov.update({f"version_{k}": v for k, v in library_versions().items()})
    return prov


def host() -> str:
    return socket.gethostname()


def jax_devices() -> dict[str, str]:
    """``{"jax_backend": "gpu", "jax_devices": "4 x gpu (NVIDIA H100 80GB HBM3)"}`` for this process when JAX
    is already imported, ``{}`` otherwise (recording it must not start a backend a task never used).

    The backend is what JAX runs on by default (``cpu``, ``gpu``, ``tpu``); the devices are counted by platform
    and kind. A GPU node whose JAX reports ``cpu`` runs the CPU build of jaxlib, or sees no GPU
    (:mod:`olrg_hpc.devices`).
    """
    jax = sys.modules.get("jax")
    if jax is None or not hasattr(jax, "devices"):
        return {}
    try:
        devices = jax.devices()
    except RuntimeError as exc:  # no usable backend (e.g. JAX_PLATFORMS names one that is absent)
        return {"jax_backend": "none", "jax_devices": " ".join(str(exc).split())[:200]}
    kinds = Counter((d.platform, str(d.device_kind)) for d in devices)
    return {"jax_backend": str(jax.default_backend()),
            "jax_devices": ", ".join(f"{n} x {p}" + (f" ({k})" if k.lower() != p else "")
                                     for (p, k), n in kinds.items())}
