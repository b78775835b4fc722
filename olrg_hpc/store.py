"""The HDF5 result store: one shard per task, written atomically, gathered into one study file.

Layout of a study folder::

    STUDY_DIR/
      config.yaml        the study config as run
      manifest.json      every task of the graph: name, key, function, params, dependencies
      shards/KEY.h5      one finished task (only ever appears complete: temp file + rename)
      failures.json      tasks that failed in the last run, with their errors
      study.h5           all shards gathered (plain HDF5: readable with h5py alone)

A shard holds the task's results as datasets (nested dicts become groups) and its provenance as
attributes of the root group: ``task_name``, ``task_key``, ``function``, ``params`` (JSON), ``seed``,
``host``, ``started``/``finished`` (ISO 8601 UTC), ``compute_seconds``, ``provenance`` (JSON: the run's
``olrg_hpc_version``, ``git_commit``, ``code_hash``, ``version_numpy``/``jax``/``dask``/..., ``study_config`` YAML) and,
written last, ``complete = True``.

Shards are valid when they open, carry ``complete`` and the expected ``task_key``. Anything else
(missing, a truncated copy, a key from other inputs) is recomputed.

Durability: a killed task or worker never leaves a partial file under a shard's name (the rename is the
commit). Task shards are not fsync'd by default: an fsync costs 1-3 ms per task, more than the rest of a
small task's bookkeeping, and a shard damaged by an operating-system crash before the page cache reached
the disk fails the validity check above and is recomputed: the crash costs recomputation, never a wrong
result. ``OLRG_HPC_FSYNC=1`` fsyncs every shard as well (e.g. when recomputing is expensive). Study files
and checkpoints (``durable=True``) are always fsync'd.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

SHARDS = "shards"
STUDY_FILE = "study.h5"
MANIFEST = "manifest.json"
FAILURES = "failures.json"

Result = Mapping[str, Any]


def shard_path(study_dir: Path, key: str) -> Path:
    return Path(study_dir) / SHARDS / f"{key}.h5"


def _write_value(group: h5py.Group, name: str, value: Any) -> None:
    if isinstance(value, Mapping):
        sub = group.create_group(name)
        for k, v in value.items():
            _write_value(sub, str(k), v)
        return
    if isinstance(value, str):
        group.create_dataset(name, data=value, dtype=h5py.string_dtype())
        return
    arr = np.asarray(value)
    if arr.dtype.kind in "US":
        group.create_dataset(name, data=arr.astype(object), dtype=h5py.string_dtype())
    elif arr.ndim >= 2 and arr.size >= 4096:
        group.create_dataset(name, data=arr, chunks=True, compression="gzip", compression_opts=4, shuffle=True)
    else:
        group.create_dataset(name, data=arr)


def _attr(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool, np.integer, np.floating)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def fsync_shards() -> bool:
    """Whether task shards are fsync'd before the rename (``OLRG_HPC_FSYNC=1``; see the module docstring)."""
    return os.environ.get("OLRG_HPC_FSYNC", "0").strip().lower() in ("1", "true", "yes", "on")


def atomic_h5(path: Path, durable: bool = True) -> _AtomicH5:
    """Context manager: an h5py.File on a temporary sibling, renamed onto ``path`` on success (after an
    fsync when ``durable``).

    On any exception the temporary file is removed and ``path`` is untouched, so readers only ever see
    complete files (rename is atomic on POSIX filesystems, NFS and Lustre included).
    """
    return _AtomicH5(Path(path), durable)


class _AtomicH5:
    def __init__(self, path: Path, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.file: h5py.File | None = None

    def __enter__(self) -> h5py.File:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.file = h5py.File(self.tmp, "w")
        return self.file

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self.file is not None
        try:
            self.file.close()
            if exc_type is None:
                if self.durable:
                    fd = os.open(self.tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                os.replace(self.tmp, self.path)
        finally:
            if self.tmp.exists():
                self.tmp.unlink()


def write_shard(path: Path, results: Result, attrs: Mapping[str, Any], durable: bool | None = None) -> float:
    """Write one task's results and provenance atomically; returns the seconds spent writing.

    ``durable``: fsync before the rename; ``None`` follows :func:`fsync_shards` (off unless ``OLRG_HPC_FSYNC=1``).
    """
    import time

    t0 = time.perf_counter()
    with atomic_h5(path, fsync_shards() if durable is None else durable) as f:
        for name, value in results.items():
            _write_value(f, str(name), value)
        for k, v in attrs.items():
            f.attrs[k] = _attr(v)
        f.attrs["complete"] = True
    return time.perf_counter() - t0


def shard_status(path: Path, key: str) -> str:
    """'valid', 'missing', or 'corrupt' (unreadable, incomplete, or written for other inputs)."""
    if not path.exists():
        return "missing"
    try:
        with h5py.File(path, "r") as f:
            ok = bool(f.attrs.get("complete", False)) and f.attrs.get("task_key") == key
            if ok:
                # touch every dataset's metadata so that a truncated file is caught here, not later
                f.visititems(lambda _n, obj: obj.shape if isinstance(obj, h5py.Dataset) else None)
    except Exception:  # noqa: BLE001 - any failure to read means the shard cannot be trusted
        return "corrupt"
    return "valid" if ok else "corrupt"


def _read_group(group: h5py.Group) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, obj in group.items():
        if isinstance(obj, h5py.Group):
            out[name] = _read_group(obj)
        elif obj.dtype.kind == "O" or h5py.check_string_dtype(obj.dtype):
            val = obj.asstr()[()]
            out[name] = val if isinstance(val, str) else np.asarray(val, dtype=object)
        else:
            out[name] = obj[()]
    return out


def read_shard(path: Path) -> dict[str, Any]:
    """Results of a shard as a dict of numpy arrays / scalars (nested for groups)."""
    with h5py.File(path, "r") as f:
        return _read_group(f)


def read_attrs(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def clean_temporaries(study_dir: Path) -> int:
    """Remove temporary files left by killed writers; returns how many."""
    n = 0
    for tmp in (Path(study_dir) / SHARDS).glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)
        n += 1
    return n


def gather(study_dir: Path, tasks: Iterable[Mapping[str, Any]], study_attrs: Mapping[str, Any]) -> Path:
    """Copy every task's shard into ``STUDY_DIR/study.h5`` under ``/tasks/<name>`` (atomic).

    ``tasks`` are manifest entries (``name``, ``key``, ...). Each group keeps its shard's attributes, so
    the study file carries the full provenance. Root attributes: ``study_attrs`` plus ``n_tasks``.
    Readable with plain h5py: ``h5py.File(path)['tasks'][name][dataset][()]``.
    """
    study_dir = Path(study_dir)
    out = study_dir / STUDY_FILE
    tasks = sorted(tasks, key=lambda t: t["name"])
    with atomic_h5(out) as f:
        root = f.create_group("tasks")
        for t in tasks:
            src_path = shard_path(study_dir, t["key"])
            with h5py.File(src_path, "r") as src:
                src.copy(src["/"], root, name=t["name"])  # one H5Ocopy: datasets, groups and attributes
        for k, v in study_attrs.items():
            f.attrs[k] = _attr(v)
        f.attrs["n_tasks"] = len(tasks)
    return out


def write_json_atomic(path: Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)


def remove_study(study_dir: Path) -> None:
    shutil.rmtree(study_dir, ignore_errors=True)


def datasets(path: Path) -> dict[str, Any]:
    """Every dataset of an HDF5 file by its path inside the file: compare two study files with it."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out
