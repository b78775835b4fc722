"""The result store: one shard per task, written atomically, checksummed, gathered into one HDF5 study file.

Layout of a study folder::

    STUDY_DIR/
      .lock              held (fcntl) by the one run or report at work in the folder; says its host and pid
      config.yaml        the study config as run
      manifest.json      every task of the graph: name, key, function, params, dependencies
      shards/KEY.h5      one finished task with results over 64 kB (only ever appears complete: temp file + rename)
      shards/batch-*.jsonl  finished tasks with small results: a compact shard per line (:class:`Shards`)
      failures.json      tasks that failed in the last run, with their errors
      run.log            the runs' log: full tracebacks of failed tasks, Dask's messages
      study.h5           all shards gathered (plain HDF5: readable with h5py alone)

A shard holds the task's results as datasets (nested dicts become groups) and its provenance as
attributes of the root group: ``task_name``, ``task_key``, ``function``, ``params`` (JSON), ``seed``,
``host``, ``started``/``finished`` (ISO 8601 UTC), ``compute_seconds``, ``provenance`` (JSON: the run's
``olrg_hpc_version``, ``git_commit``, ``code_hash``, ``version_numpy``/``jax``/``dask``/..., ``study_config`` YAML),
``pool`` (the worker pool that ran it, when known), ``launch`` (a multi-process task's layout), ``sha256`` (below)
and, written last, ``complete = True``. A compact shard (:mod:`olrg_hpc.records`) holds the same as one JSON
document with the same digests; :class:`Shards` finds a task's shard in either form.

**Checksums.** Every dataset carries an attribute ``sha256``: the SHA-256 of its dtype, shape and data as
h5py reads them back (strings as UTF-8, each prefixed by its length), computed when it is written. A group
that is a unit (a shard's root, a task group of the study file, a checkpoint's root) carries ``sha256`` over
its other attributes (``complete`` aside), its members' names and the digests of its datasets and subgroups,
so an edited, added, removed or renamed dataset or attribute is seen as well. :func:`verify` reads every
dataset and recomputes both; a mismatch raises :class:`CorruptFile`. The digest is computed from the decoded
data, so it catches what HDF5's own ``fletcher32`` filter catches (raw byte damage: a damaged compressed chunk
fails to decode or decodes to other numbers) and what it cannot: an edit made through h5py or any HDF5 tool,
which recomputes fletcher32 with the edit; scalars and small contiguous datasets, which cannot take filters.
So only the digest is stored. SHA-256 runs at ~1 GB/s, below gzip's decompression cost of the same data.

Shards are valid when they open, carry ``complete``, the expected ``task_key`` and pass :func:`verify`.
Anything else (missing, a truncated copy, a key from other inputs, a number changed in place) is recomputed.

Durability: a killed task or worker never leaves a partial file under a shard's name (the rename is the
commit). Task shards are not fsync'd by default: an fsync costs 1-3 ms per task, more than the rest of a
small task's bookkeeping, and a shard damaged by an operating-system crash before the page cache reached
the disk fails the validity check above and is recomputed: the crash costs recomputation, never a wrong
result. ``OLRG_HPC_FSYNC=1`` fsyncs every shard as well (e.g. when recomputing is expensive). Study files
and checkpoints (``durable=True``) are always fsync'd.

**One writer per study folder.** :func:`study_lock` takes an exclusive ``fcntl`` lock on ``STUDY_DIR/.lock``
for a run or a report and writes the holder's host, pid and command into it; a second run is refused in one
line naming them. The lock is released by the kernel when its holder exits, however it exits, so a killed
run never leaves a stale lock. It needs a filesystem with POSIX locks (local disks; NFS with lockd or NFSv4;
Lustre mounted with ``flock``). Temporary files are named ``.NAME.tmp-HOST-PID-RAND``: their writer removes
them, and :func:`clean_temporaries` removes only those whose writer is known to be gone (this host, no such
process) or that nobody touched for an hour (another host).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from olrg_hpc.errors import UserError

SHARDS = "shards"
STUDY_FILE = "study.h5"
MANIFEST = "manifest.json"
FAILURES = "failures.json"
CONFIG = "config.yaml"
LOCK = ".lock"
LOG = "run.log"
DIGEST = "sha256"
#: root attributes left out of a group's digest: the digest itself, and ``complete``, written after it
UNSIGNED = (DIGEST, "complete")
#: a temporary file of another host is left alone unless nobody has written to it for this long
STALE_TMP_S = 3600.0

Result = Mapping[str, Any]


class CorruptFile(Exception):
    """A file or dataset that fails its checksum, lacks one, or cannot be read back; ``path``: the file, ``key``: the
    task whose shard it is, when known."""

    def __init__(self, message: str, path: Path | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.path, self.key = path, key


def shard_path(study_dir: Path, key: str) -> Path:
    return Path(study_dir) / SHARDS / f"{key}.h5"


# ------------------------------------------------------------------------------------------------ checksums


def hash_value(h: Any, value: Any) -> None:
    """Feed ``value`` (an array, scalar or string, as h5py reads it back) into the hash ``h`` canonically."""
    if isinstance(value, (str, bytes)):
        value = np.array([value], dtype=object).reshape(())
    arr = np.asarray(value)
    h.update(f"{arr.dtype.kind}{arr.shape}".encode())
    if arr.dtype.kind in "OUS":
        for item in arr.ravel():
            b = item.encode() if isinstance(item, str) else bytes(item)
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
    else:
        h.update(arr.dtype.str.encode())
        h.update(np.ascontiguousarray(arr).data)


def digest(value: Any) -> str:
    """SHA-256 (hex) of a dataset's content: dtype, shape and data (strings as length-prefixed UTF-8)."""
    h = hashlib.sha256()
    hash_value(h, value)
    return h.hexdigest()


def _read_dataset(ds: h5py.Dataset) -> Any:
    """A dataset's value as the store hands it out: ``str`` or an object array of ``str`` for strings."""
    if ds.dtype.kind == "O" or h5py.check_string_dtype(ds.dtype):
        val = ds.asstr()[()]
        return val if isinstance(val, str) else np.asarray(val, dtype=object)
    return ds[()]


def put(group: h5py.Group, name: str, value: Any, **kwargs: Any) -> h5py.Dataset:
    """Create dataset ``name`` from ``value`` (``kwargs`` to ``create_dataset``) with its ``sha256`` attribute.

    The digest is what :func:`verify` recomputes from the dataset as it reads back: for a number array stored
    with its own dtype, the array in memory (no need to read back, and decompress, what was just written);
    anything else (strings, converted types) is read back first.
    """
    arr = value if isinstance(value, np.ndarray) else None
    ds = group.create_dataset(name, data=value, **kwargs)
    same = arr is not None and arr.dtype.kind in "biufc" and ds.dtype == arr.dtype and ds.shape == arr.shape
    ds.attrs[DIGEST] = digest(arr if same else _read_dataset(ds))
    return ds


def hash_attrs(h: Any, attrs: Mapping[str, Any], skip: tuple[str, ...] = ()) -> None:
    """Feed a group's or dataset's attributes (sorted by name, ``skip`` left out) into the hash ``h``."""
    for k, v in sorted(attrs.items()):
        if k not in skip:
            h.update(f"a{len(k)}:{k}".encode())
            hash_value(h, v)


def _walk(group: h5py.Group, attrs: Mapping[str, Any], out: dict[str, Any] | None, check: bool) -> str:
    """The digest of ``group`` (its ``attrs``, already read, and its members; see the module docstring), reading
    every attribute once. With ``check`` every dataset is read back and compared with its ``sha256`` and every
    sealed subgroup with its digest (:class:`CorruptFile` names the first failure); ``out`` then receives the
    data (nested dicts for groups). Without ``check`` (sealing a group just written) no data is read."""
    h = hashlib.sha256()
    hash_attrs(h, attrs, UNSIGNED)
    for name in sorted(group):
        if not isinstance(group.get(name, getlink=True), h5py.HardLink):
            raise CorruptFile(f"{group.name}/{name}: a link, not data")
        obj = group[name]
        if not check and isinstance(obj, h5py.Group):  # sealing: a sealed subgroup's digest is all it takes
            sealed = obj.attrs.get(DIGEST)
            if sealed is not None:
                h.update(f"g{len(name)}:{name}:{sealed}".encode())
                continue
        own = dict(obj.attrs.items())
        if isinstance(obj, h5py.Dataset):
            want = own.get(DIGEST)
            if want is None:
                raise CorruptFile(f"{obj.name}: no checksum")
            if check:
                val = _read_dataset(obj)
                if digest(val) != str(want):
                    raise CorruptFile(f"{obj.name}: checksum mismatch (the data changed after it was written)")
                if out is not None:
                    out[name] = val
            h.update(f"d{len(name)}:{name}".encode())
            hash_attrs(h, own)
            continue
        sub_out: dict[str, Any] | None = {} if out is not None else None
        sub = _walk(obj, own, sub_out, check) if check or DIGEST not in own else str(own[DIGEST])
        if check and DIGEST in own:
            if sub != str(own[DIGEST]):
                raise CorruptFile(f"{obj.name}: checksum mismatch of its attributes or members")
            sub = str(own[DIGEST])
        if out is not None:
            out[name] = sub_out
        h.update(f"g{len(name)}:{name}:{sub}".encode())
    return h.hexdigest()


def seal(group: h5py.Group, attrs: Mapping[str, Any] | None = None) -> None:
    """Write ``group``'s ``sha256`` over its attributes and members (after everything else is written).

    ``attrs``: the attributes just written, as passed to h5py (``str``, Python or numpy scalars: they hash as
    they read back), to spare reading them back; by default they are read."""
    group.attrs[DIGEST] = _walk(group, dict(group.attrs.items()) if attrs is None else attrs, None, check=False)


def verify(group: h5py.Group, read: bool = False, attrs: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Check every dataset under ``group`` against its ``sha256`` and every sealed group against its digest;
    :class:`CorruptFile` names the first failure. ``read=True`` also returns the data (nested dicts), so a
    reader verifies and reads in one pass; ``attrs``: the group's attributes when the caller has read them.
    The group itself must be sealed."""
    out: dict[str, Any] | None = {} if read else None
    try:
        attrs = dict(group.attrs.items()) if attrs is None else attrs
        if DIGEST not in attrs:
            raise CorruptFile(f"{group.name}: no checksum (not written by this version of olrg-hpc)")
        if _walk(group, attrs, out, check=True) != str(attrs[DIGEST]):
            raise CorruptFile(f"{group.name}: checksum mismatch of its attributes or members")
    except CorruptFile:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged chunk fails in h5py's filters (OSError), among others
        raise CorruptFile(f"{group.name}: unreadable ({_one_line(exc)})") from None
    return out


def _one_line(exc: BaseException, limit: int = 200) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if len(msg) <= limit else msg[: limit - 3] + "..."


def _write_value(group: h5py.Group, name: str, value: Any) -> None:
    if isinstance(value, Mapping):
        sub = group.create_group(name)
        for k, v in value.items():
            _write_value(sub, str(k), v)
        return
    if isinstance(value, str):
        put(group, name, value, dtype=h5py.string_dtype())
        return
    arr = np.asarray(value)
    if arr.dtype.kind in "US" or (arr.dtype.kind == "O" and all(isinstance(x, str) for x in arr.ravel())):
        put(group, name, arr.astype(object), dtype=h5py.string_dtype())
    elif arr.ndim >= 2 and arr.size >= 4096:
        put(group, name, arr, chunks=True, compression="gzip", compression_opts=4, shuffle=True)
    else:
        put(group, name, arr)


def _attr(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (str, int, float, bool, np.integer, np.floating)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def fsync_shards() -> bool:
    """Whether task shards are fsync'd before the rename (``OLRG_HPC_FSYNC=1``; see the module docstring)."""
    return os.environ.get("OLRG_HPC_FSYNC", "0").strip().lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------------------------------------ atomic files


def _tmp_name(path: Path) -> Path:
    """``.NAME.tmp-HOST-PID-RAND`` beside ``path``: its writer is identifiable (:func:`clean_temporaries`)."""
    return path.with_name(f".{path.name}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


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
        self.tmp = _tmp_name(path)
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
    """Write one task's results and provenance atomically, checksummed, as an HDF5 shard; returns the seconds spent.

    ``durable``: fsync before the rename; ``None`` follows :func:`fsync_shards` (off unless ``OLRG_HPC_FSYNC=1``).
    """
    t0 = time.perf_counter()
    with atomic_h5(path, fsync_shards() if durable is None else durable) as f:
        for name, value in results.items():
            _write_value(f, str(name), value)
        written = {k: _attr(v) for k, v in attrs.items()}
        for k, v in written.items():
            f.attrs[k] = v
        seal(f, written)
        f.attrs["complete"] = True
    return time.perf_counter() - t0


def check_shard(path: Path, key: str, read: bool = False) -> dict[str, Any] | None:
    """Open, check and verify an HDF5 shard written under ``key``; :class:`CorruptFile` says what is wrong.

    ``read=True`` returns its results (as :func:`read_shard`), read in the same pass as the verification.
    """
    return _inspect_h5(Path(path), key, read)[1]


def _inspect_h5(path: Path, key: str | None, read: bool) -> tuple[dict[str, Any], dict[str, Any] | None]:
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs.items())
            if key is not None:
                _check_attrs(attrs, key)
            out = verify(f, read=read, attrs=attrs)
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}, out
    except CorruptFile as exc:
        raise CorruptFile(f"{path}: {exc}", path, key) from None
    except Exception as exc:  # noqa: BLE001 - any failure to read means the shard cannot be trusted
        raise CorruptFile(f"{path}: unreadable ({_one_line(exc)})", path, key) from None


def _check_attrs(attrs: Mapping[str, Any], key: str) -> None:
    if not bool(attrs.get("complete", False)):
        raise CorruptFile("incomplete (no 'complete' attribute)")
    if attrs.get("task_key") != key:
        raise CorruptFile(f"written for other inputs (task_key {attrs.get('task_key')!r}, not {key!r})")


def shard_status(path: Path, key: str) -> str:
    """'valid', 'missing', or 'corrupt' for the HDF5 shard ``path`` (unreadable, incomplete, written for other
    inputs, or failing its checksums: every dataset is read back and verified)."""
    if not Path(path).exists():
        return "missing"
    try:
        check_shard(path, key)
    except CorruptFile:
        return "corrupt"
    return "valid"


def read_shard(path: Path, key: str | None = None) -> dict[str, Any]:
    """Results of an HDF5 shard as a dict of numpy arrays / scalars (nested for groups), verified against their
    checksums (:class:`CorruptFile` otherwise); with ``key``, also checked to be written for that key."""
    out = _inspect_h5(Path(path), key, read=True)[1]
    assert out is not None
    return out


def read_attrs(path: Path) -> dict[str, Any]:
    """The attributes of a (verified) HDF5 shard."""
    return _inspect_h5(Path(path), None, read=False)[0]


# ------------------------------------------------------------------------------------------------ a study's shards

BATCH_GLOB = "batch-*.jsonl"


@dataclass(frozen=True)
class Location:
    """Where the shard of task ``key`` is: an HDF5 file, or the record at ``offset`` (``length`` bytes) of a batch
    file (:class:`Shards`)."""

    key: str
    path: Path
    offset: int = -1
    length: int = 0

    @property
    def batched(self) -> bool:
        return self.offset >= 0


def read_location(loc: Location, read: bool = True) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(attrs, results or None)`` of the verified shard at ``loc`` (an HDF5 location whose file does not exist:
    the key's valid shard in that study folder, if any); :class:`CorruptFile` otherwise."""
    from olrg_hpc import records

    if not loc.batched and not loc.path.exists():  # not where it was expected: wherever the study folder has it
        shards = Shards(loc.path.parent.parent)
        status, found, attrs, data = shards.info(loc.key, read)
        if found is None:
            for bad in shards.candidates(loc.key):
                read_location(bad, read)  # raises the error of the first
            raise CorruptFile(f"{loc.path}: missing", loc.path, loc.key)
        return attrs, data
    if not loc.batched:
        return _inspect_h5(loc.path, loc.key, read)
    try:
        with open(loc.path, "rb") as f:
            f.seek(loc.offset)
            raw = f.read(loc.length)
    except OSError as exc:
        raise CorruptFile(f"{loc.path}: unreadable ({exc.strerror or exc})", loc.path, loc.key) from None
    return records.decode(raw, loc.key, read, where=f"{loc.path} (task {loc.key})", path=loc.path)


class Shards:
    """The finished shards of a study folder by task key.

    A task's results are either an HDF5 shard ``shards/KEY.h5`` (written by the worker: results over 64 kB, or of
    a type only HDF5 holds) or a record of a *batch file* ``shards/batch-HOST-PID-N.jsonl``: one line ``KEY<TAB>JSON``
    per task, the JSON being its compact shard (:mod:`olrg_hpc.records`). The driver writes each batch of small
    results that come back together as one batch file, atomically (temporary file + rename), so that thousands of
    tiny tasks cost a few files instead of thousands; each record still verifies, resumes and fails on its own.
    A key may have several records (recomputed after one was damaged): the first valid one counts.
    """

    def __init__(self, study_dir: Path) -> None:
        self.folder = Path(study_dir) / SHARDS
        self.batched: dict[str, list[Location]] = {}
        self._n = 0
        for f in sorted(self.folder.glob(BATCH_GLOB)) if self.folder.is_dir() else []:
            self._index(f, f.read_bytes())

    def _index(self, path: Path, raw: bytes) -> None:
        offset = 0
        for line in raw.splitlines(keepends=True):
            key, tab, _ = line.partition(b"\t")
            if tab:
                start = offset + len(key) + 1
                self.batched.setdefault(key.decode(errors="replace"), []).append(
                    Location(key.decode(errors="replace"), path, start, len(line.rstrip(b"\n")) - len(key) - 1))
            offset += len(line)

    def keys(self) -> set[str]:
        """Every task key with a shard here, valid or not (not verified)."""
        h5 = {p.stem for p in self.folder.glob("*.h5")} if self.folder.is_dir() else set()
        return set(self.batched) | h5

    def candidates(self, key: str) -> list[Location]:
        h5 = shard_path(self.folder.parent, key)
        return [*self.batched.get(key, []), *([Location(key, h5)] if h5.exists() else [])]

    def info(self, key: str, read: bool = False) -> tuple[str, Location | None, dict[str, Any], dict[str, Any] | None]:
        """``(status, location, attrs, results)``: status 'valid' (the first candidate that verifies), 'missing' (none)
        or 'corrupt' (every candidate fails); results only with ``read``."""
        found = self.candidates(key)
        for loc in found:
            try:
                attrs, data = read_location(loc, read)
            except CorruptFile:
                continue
            return "valid", loc, attrs, data
        return ("corrupt" if found else "missing"), None, {}, None

    def status(self, key: str) -> str:
        return self.info(key)[0]

    def add(self, items: Iterable[tuple[str, bytes]], durable: bool | None = None) -> float:
        """Write ``(key, compact shard)`` pairs as one batch file (atomic); returns the seconds spent."""
        t0 = time.perf_counter()
        items = list(items)
        if not items:
            return 0.0
        raw = b"".join(k.encode() + b"\t" + r + b"\n" for k, r in items)
        self._n += 1
        path = self.folder / f"batch-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        write_bytes_atomic(path, raw, fsync_shards() if durable is None else durable)
        self._index(path, raw)
        return time.perf_counter() - t0

    def remove(self, key: str) -> None:
        """Delete every shard of ``key``: its HDF5 file, its records (their batch files rewritten without them)."""
        shard_path(self.folder.parent, key).unlink(missing_ok=True)
        for path in {loc.path for loc in self.batched.pop(key, [])}:
            keep = b"".join(ln for ln in path.read_bytes().splitlines(keepends=True)
                            if ln.partition(b"\t")[0] != key.encode())
            if keep:
                write_bytes_atomic(path, keep)
            else:
                path.unlink(missing_ok=True)
            for other in list(self.batched):  # offsets in the rewritten file moved
                self.batched[other] = [loc for loc in self.batched[other] if loc.path != path]
            if keep:
                self._index(path, keep)

    def files(self) -> list[Path]:
        """Every finished shard file: HDF5 shards and batch files (temporaries left out)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if not p.name.startswith(".") and p.suffix in (".h5", ".jsonl"))


def _writer_gone(tmp: Path) -> bool:
    """Whether the writer of a temporary file ``.NAME.tmp-HOST-PID-RAND`` is known to be gone."""
    try:
        host, pid, _rand = tmp.name.rsplit(".tmp-", 1)[1].rsplit("-", 2)
        pid_n = int(pid)
    except ValueError:  # not ours, or an older naming: judge by age alone
        host, pid_n = "", -1
    if host == socket.gethostname() and pid_n > 0:
        if pid_n == os.getpid():
            return False
        try:
            os.kill(pid_n, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return time.time() - tmp.stat().st_mtime > STALE_TMP_S
    except FileNotFoundError:
        return False


def clean_temporaries(study_dir: Path) -> int:
    """Remove temporary files whose writer is gone (see the module docstring); returns how many."""
    n = 0
    study_dir = Path(study_dir)
    for tmp in [*(study_dir / SHARDS).glob(".*.tmp-*"), *study_dir.glob(".*.tmp-*")]:
        if _writer_gone(tmp):
            tmp.unlink(missing_ok=True)
            n += 1
    return n


def gather(study_dir: Path, tasks: Iterable[Mapping[str, Any]], study_attrs: Mapping[str, Any]) -> Path:
    """Copy every task's shard into ``STUDY_DIR/study.h5`` under ``/tasks/<name>`` (atomic, checksummed); a record
    of a batch file becomes the HDF5 group an HDF5 shard of its results would have been copied to.

    ``tasks`` are manifest entries (``name``, ``key``, ...). Each shard is verified before it is copied
    (:class:`CorruptFile` names the first that fails); each group keeps its shard's attributes, its digest
    among them, so the study file carries the full provenance and every checksum. Root attributes:
    ``study_attrs`` plus ``n_tasks``, sealed. Readable with plain h5py:
    ``h5py.File(path)['tasks'][name][dataset][()]``.
    """
    study_dir = Path(study_dir)
    out = study_dir / STUDY_FILE
    tasks = sorted(tasks, key=lambda t: t["name"])
    with atomic_h5(out) as f:
        root = f.create_group("tasks")
        shards = Shards(study_dir)
        for t in tasks:
            status, loc, attrs, data = shards.info(t["key"], read=True)
            if loc is None:
                bad = shards.candidates(t["key"])
                if bad:  # the error the first one gives
                    read_location(bad[0], read=False)
                raise CorruptFile(f"{shard_path(study_dir, t['key'])}: missing", None, t["key"])
            if loc.batched:  # decoded and verified, written as an HDF5 shard of these results would be
                g = root.create_group(t["name"])
                for name, value in (data or {}).items():
                    _write_value(g, name, value)
                signed = {k: v for k, v in attrs.items() if k not in UNSIGNED}
                for k, v in signed.items():
                    g.attrs[k] = v
                seal(g, signed)
                g.attrs["complete"] = True
                continue
            try:
                with h5py.File(loc.path, "r") as src:
                    src.copy(src["/"], root, name=t["name"])  # one H5Ocopy: datasets, groups and attributes
            except OSError as exc:
                raise CorruptFile(f"{loc.path}: unreadable ({_one_line(exc)})", loc.path, t["key"]) from None
        written = {**{k: _attr(v) for k, v in study_attrs.items()}, "n_tasks": len(tasks)}
        for k, v in written.items():
            f.attrs[k] = v
        seal(f, written)
    return out


def verify_study_file(path: Path) -> None:
    """Verify a study file written by :func:`gather` (every task group and the root); UserError otherwise."""
    try:
        with h5py.File(path, "r") as f:
            verify(f)
    except CorruptFile as exc:
        raise UserError(f"{path}: corrupt ({exc}); rerun the study to gather it again") from None
    except OSError as exc:
        raise UserError(f"{path}: not a readable study file ({_one_line(exc)})") from None


def write_bytes_atomic(path: Path, raw: bytes, durable: bool = False) -> None:
    """``raw`` into ``path`` through a temporary sibling and a rename (fsync'd first when ``durable``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """``data`` as JSON, atomically: a list, and each list value of a mapping, one item per line (json's C encoder,
    which an indented dump cannot use: a 10,000-task manifest in ~0.1 s instead of ~1 s)."""

    def dumps(x: Any) -> str:
        return json.dumps(x, sort_keys=True, default=str)

    def block(items: list[Any]) -> str:
        return "[\n" + ",\n".join(dumps(x) for x in items) + "\n]" if items else "[]"

    if isinstance(data, list):
        text = block(data)
    elif isinstance(data, Mapping):
        text = "{\n" + ",\n".join(f"{dumps(str(k))}: {block(v) if isinstance(v, list) else dumps(v)}"
                                  for k, v in sorted(data.items())) + "\n}"
    else:
        text = dumps(data)
    write_bytes_atomic(path, text.encode())


def datasets(path: Path) -> dict[str, Any]:
    """Every dataset of an HDF5 file by its path inside the file: compare two study files with it."""
    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


# ------------------------------------------------------------------------------------------------ the folder


_HELD: dict[Path, list[Any]] = {}  # study folder -> [lock file descriptor, depth]: re-entrant in one process


def _holder(fd: int) -> str:
    """Who holds the lock, from what they wrote into the lock file (retried: they write right after locking)."""
    for _ in range(20):
        raw = os.pread(fd, 4096, 0)
        try:
            info = json.loads(raw)
            return (f"pid {info['pid']} on {info['host']} ({' '.join(str(info['command']).split())[:80]}, "
                    f"since {info['since']})")
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "a process that did not say who it is"


@contextlib.contextmanager
def study_lock(study_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``study_dir`` (created if needed); one-line UserError when another process
    holds it. Re-entrant within a process (a run that writes its report takes it once)."""
    study_dir = Path(study_dir)
    key = study_dir.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield
        finally:
            _HELD[key][1] -= 1
        return
    path = study_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise UserError(f"{study_dir}: cannot create the lock file {LOCK} ({exc.strerror})") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(f"{study_dir}: in use by another olrg-hpc run, {_holder(fd)}; wait for it to "
                                "finish or stop it") from None
            raise UserError(f"{study_dir}: cannot lock {LOCK} ({exc.strerror}; the filesystem must support POSIX "
                            "locks)") from None
        info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "command": " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        _HELD[key] = [fd, 1]
        try:
            yield
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock


def check_folder(study_dir: Path, study: str) -> None:
    """Refuse (UserError) a study folder that holds another study than ``study`` (by its ``config.yaml``)."""
    import yaml

    study_dir = Path(study_dir)
    cfg = study_dir / CONFIG
    if not cfg.exists():
        if (study_dir / MANIFEST).exists() or (study_dir / STUDY_FILE).exists():
            raise UserError(f"{study_dir}: holds an olrg-hpc study without its {CONFIG}; choose another output "
                            "folder")
        return
    try:
        other = yaml.safe_load(cfg.read_text()).get("study")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        other = None
    if other != study:
        shown = repr(other)[:80] if other is not None else "unknown"
        raise UserError(f"{study_dir}: holds another study ({shown}, see its {CONFIG}), not {study!r}; choose "
                        "another output folder")


def check_writable(study_dir: Path) -> None:
    """Create ``study_dir`` and its shard folder and write a probe file in each, or raise a one-line UserError
    (a file in the way, no permission, a read-only or full filesystem) before any work is done."""
    study_dir = Path(study_dir)
    for d in (study_dir, study_dir / SHARDS):
        try:
            d.mkdir(parents=True, exist_ok=True)
            probe = _tmp_name(d / "probe")
            probe.write_bytes(b"0")
            probe.unlink()
        except FileExistsError:
            raise UserError(f"{d}: exists and is not a folder") from None
        except NotADirectoryError:
            raise UserError(f"{d}: a path component is a file, not a folder") from None
        except OSError as exc:
            raise UserError(f"{d}: cannot write there ({exc.strerror or exc})") from None
