"""Tasks: the nodes of a study's graph, their content-hash keys, and how a worker executes one.

A :class:`Task` names a library function (importable at module level, so workers unpickle it by
reference), its JSON-able keyword parameters and the names of the tasks it depends on. The runner gives
each task a *key*: a hash of the function's path, the parameters, the package version, a content hash of
the source the function can run (:func:`olrg_hpc.provenance.module_code_hash`: its module and every module of
``olrg_hpc`` and ``workflows`` that module imports, so a change there without a version bump does not reuse old
shards, while a change elsewhere, say to a report, keeps them), the task's seed (from the study seed and the
task's name, :func:`task_seed`) and the keys of its dependencies.
A shard written under that key is valid for exactly those inputs.

The function returns a mapping of names to arrays/scalars/strings (nested mappings become HDF5 groups).
If it has a ``seed`` parameter it receives the task seed; if it has a ``deps`` parameter it receives the
results of its dependencies as ``{task_name: results}`` (read back from their shards, or decoded from the compact
shards that came with their outcomes, and verified against their checksums either way, so a dependency finished
in an earlier run serves as well as one computed now, and a damaged one fails the task instead of feeding it).

**Finite results.** Before a shard is written every floating-point (and complex) result is checked: ``inf``
is never a result, and ``NaN`` only where the task declares it, in :attr:`Task.nan_ok` (patterns of result
paths, ``fnmatch`` style, ``/`` between nested names), as the marker of a value that was not measured (a
ratio to a baseline that the study did not run, a window with no data). Anything else non-finite fails the
task with one line naming the result, so an overflow or a diverged fit never lands in a shard as a number.

**Timings and devices.** Each shard records ``compute_seconds`` (wall clock of the task function) and
``cpu_seconds`` (CPU time of the worker process meanwhile, every thread of it: XLA's and BLAS's pools included).
Another job on the machine stretches the wall clock but hardly the CPU time, so a cost compared across runs reads
``cpu_seconds``; with ``threads_per_worker > 1`` it also counts the tasks running beside it in the same process.
A task that used JAX records its backend and devices (``jax_backend``, ``jax_devices``:
:func:`olrg_hpc.provenance.jax_devices`).

**Bounded graphs.** :func:`bounded_graph` counts the tasks a workflow creates while it builds its graph and
stops at :data:`MAX_TASKS`: a size in a config such as ``replicas: 1000000000`` fails in a fraction of a second
with one line instead of filling the driver's memory.
"""

from __future__ import annotations

import contextlib
import contextvars
import fnmatch
import hashlib
import inspect
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from olrg_hpc import __version__
from olrg_hpc.errors import UserError
from olrg_hpc.provenance import host, jax_devices, module_code_hash, now
from olrg_hpc.store import CorruptFile, Location, fsync_shards, read_location, write_shard

#: Most tasks one study graph may hold. The driver keeps every task's spec, future and manifest entry (~2 kB)
#: and the Dask scheduler spends ~1 ms per task, so 10^5 tasks cost ~0.2 GB and minutes of scheduling
#: overhead alone: a study larger than that is better split, and a config that asks for more is a mistake
#: (``replicas: 1000000000``) to be reported, not attempted.
MAX_TASKS = 100_000
_BUILT: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("olrg_hpc_built", default=None)

TaskFn = Callable[..., Mapping[str, Any]]
#: environment variable that names the worker pool of a worker process (set by the cluster; the shard records it)
POOL_ENV = "OLRG_HPC_POOL"


@dataclass(frozen=True)
class Resources:
    """What a task needs from the cluster. Not part of its key: where and how it runs does not change its inputs.

    ``accelerator``: run on a pool with accelerators when the cluster profile has one (training), else on a pool
    without (solvers, ensembles; the default). ``processes``: run as one multi-process JAX program of this many
    processes (``jax.distributed``; :mod:`olrg_hpc.launch`) inside the allocation of the worker that takes the task,
    the function being called in every process and process 0 writing the shard; ``None`` runs it in the worker
    itself. ``devices``: devices per process of such a program (on CPU nodes that many emulated devices; ``None``:
    what the node gives each process).
    """

    accelerator: bool = False
    processes: int | None = None
    devices: int | None = None

    def __post_init__(self) -> None:
        for name in ("processes", "devices"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ValueError(f"Resources.{name}: a positive integer or None (got {v!r})")


@dataclass(frozen=True)
class Task:
    """One node of a study graph."""

    name: str
    fn: TaskFn
    params: Mapping[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    #: result paths (fnmatch patterns) whose NaN entries mean "not measured" (module docstring)
    nan_ok: tuple[str, ...] = ()
    #: what it needs from the cluster (:class:`Resources`)
    resources: Resources = Resources()

    def __post_init__(self) -> None:
        count = _BUILT.get()
        if count is not None:
            count[0] += 1
            if count[0] > MAX_TASKS:
                raise UserError(f"task graph: more than {MAX_TASKS} tasks (a size in the config is too large?)")

    @property
    def function(self) -> str:
        return f"{self.fn.__module__}:{self.fn.__qualname__}"


@contextlib.contextmanager
def bounded_graph() -> Iterator[None]:
    """While active, creating more than :data:`MAX_TASKS` tasks raises a one-line UserError."""
    token = _BUILT.set([0])
    try:
        yield
    finally:
        _BUILT.reset(token)


def dep_label(task_name: str, dep_name: str) -> str:
    """The name under which a task receives a dependency's results in ``deps``.

    Tasks of a suite part are named ``part:name``; a dependency in the same part is handed over under its
    own name (``eval-nrg-D8``, not ``olrg:eval-nrg-D8``), so a workflow's task functions work unchanged
    inside a suite.
    """
    part, sep, _ = task_name.partition(":")
    return dep_name.removeprefix(part + sep) if sep else dep_name


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same inputs always hash the same."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def task_seed(study_seed: int, task: Task) -> int:
    """A 63-bit seed from the study seed and the task's full name (``part:name`` inside a suite).

    Not from the parameters: a key added to one task's parameters leaves every other task's random stream as it
    was, and two tasks of equal parameters (two suite parts of the same content, replicas) draw different
    streams. A task's key still hashes its parameters (:func:`task_key`), so a changed parameter recomputes it.
    """
    h = hashlib.sha256(canonical_json([study_seed, task.name]).encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


def task_key(task: Task, seed: int, dep_keys: list[str]) -> str:
    """Content hash of everything that determines the task's result."""
    payload = canonical_json({"fn": task.function, "params": task.params, "version": __version__,
                              "code": module_code_hash(task.fn.__module__), "seed": seed, "deps": sorted(dep_keys)})
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class TaskSpec:
    """What a worker needs to run one task: everything resolved, nothing to look up."""

    name: str
    key: str
    fn: TaskFn
    params: Mapping[str, Any]
    seed: int
    shard: Path
    #: where each dependency's shard is (by the name the task receives it under); one computed in the same run
    #: comes with its outcome instead when small (:func:`execute`)
    dep_shards: Mapping[str, Location]
    #: the run's provenance as JSON text (the shard attribute ``provenance``)
    provenance: str
    nan_ok: tuple[str, ...] = ()
    resources: Resources = Resources()


class NonFiniteResult(ValueError):
    """A task result holds inf, or NaN where the task did not declare it (:attr:`Task.nan_ok`)."""


class CorruptDependency(RuntimeError):
    """A dependency's shard failed its checksum when the task read it: the task did not run."""


def check_finite(results: Mapping[str, Any], nan_ok: tuple[str, ...] = (), prefix: str = "") -> None:
    """Raise :class:`NonFiniteResult` naming the first result that holds inf, or NaN outside ``nan_ok``."""
    for name, value in results.items():
        path = f"{prefix}{name}"
        if isinstance(value, Mapping):
            check_finite(value, nan_ok, prefix=path + "/")
            continue
        if isinstance(value, str):
            continue
        arr = np.asarray(value)
        if arr.dtype.kind not in "fc":
            continue
        finite = np.isfinite(arr)
        if finite.all():
            continue
        n_inf = int(np.isinf(arr).sum())  # complex: either part infinite
        n_nan = int((~finite).sum()) - n_inf
        if n_inf == 0 and any(fnmatch.fnmatchcase(path, pat) for pat in nan_ok):
            continue
        what = ", ".join(f"{n} {w}" for n, w in ((n_inf, "inf"), (n_nan, "NaN")) if n)
        first = np.argwhere(~finite)[0] if arr.ndim else ()
        where = f" (first at index {tuple(int(i) for i in first)})" if arr.ndim else ""
        hint = "" if n_inf else " and the task does not declare it as 'not measured' (Task.nan_ok)"
        raise NonFiniteResult(f"result {path!r} holds {what} of {arr.size} values{where}{hint}")


def call(spec: TaskSpec,
         inline: Mapping[str, bytes] | None = None) -> tuple[Mapping[str, Any], str, float, float]:
    """Run the task's function (its seed and dependencies passed when it takes them) and check its results;
    returns ``(results, started, wall seconds, CPU seconds)``. ``inline``: compact shards of dependencies by key,
    as they came back from their workers in this run (verified as when read from disk)."""
    from olrg_hpc import records

    started = now()
    t0, cpu0 = time.perf_counter(), time.process_time()
    kwargs = dict(spec.params)
    sig = inspect.signature(spec.fn).parameters
    if "seed" in sig:
        kwargs["seed"] = spec.seed
    if "deps" in sig:
        deps = {}
        for name, loc in spec.dep_shards.items():
            try:
                raw = (inline or {}).get(loc.key)
                deps[name] = (records.decode(raw, loc.key, read=True, where=f"result of {name!r}")[1] if raw
                              else read_location(loc)[1])
            except CorruptFile as exc:
                raise CorruptDependency(f"dependency {name!r}: {exc}") from None
        kwargs["deps"] = deps
    result = spec.fn(**kwargs)
    if not isinstance(result, Mapping):
        raise TypeError(f"task {spec.name}: {spec.fn.__qualname__} returned {type(result).__name__}, not a mapping")
    check_finite(result, spec.nan_ok)
    return result, started, time.perf_counter() - t0, time.process_time() - cpu0


def store_result(spec: TaskSpec, result: Mapping[str, Any], started: str, compute_s: float, cpu_s: float,
                 **extra: Any) -> dict[str, Any]:
    """The outcome of a finished task: timings, its pool and, for small results, their compact shard (``record``,
    written by the driver with its batch); larger results are written here as an HDF5 shard."""
    from olrg_hpc import records

    t0 = time.perf_counter()
    pool = os.environ.get(POOL_ENV, "")
    # per-task facts as separate attributes; the run's provenance (package version, git commit, library
    # versions, study config) as one JSON attribute
    attrs = dict(task_name=spec.name, task_key=spec.key, function=f"{spec.fn.__module__}:{spec.fn.__qualname__}",
                 params=dict(spec.params), seed=spec.seed, host=host(), pool=pool, started=started, finished=now(),
                 compute_seconds=compute_s, cpu_seconds=cpu_s, **jax_devices(), **extra,
                 provenance=spec.provenance)
    raw = records.encode(result, attrs)
    if raw is None:
        write_shard(spec.shard, result, attrs, fsync_shards())
    return {"name": spec.name, "key": spec.key, "compute_s": compute_s, "cpu_s": cpu_s,
            "write_s": time.perf_counter() - t0, "pool": pool, "record": raw}


def execute(spec: TaskSpec, *upstream: Any) -> dict[str, Any]:
    """Run one task on a worker; returns its outcome (:func:`store_result`): small results travel back to the
    driver as a compact shard, larger ones stay on disk. A task that asks for processes runs as a multi-process
    program (:func:`olrg_hpc.launch.run_launched`).

    ``upstream`` holds the outcomes of dependencies computed in the same run: passing them makes Dask order the
    tasks, and the compact shards among them are this task's inputs (the others are read from disk).
    """
    inline = {u["key"]: u["record"] for u in upstream if isinstance(u, Mapping) and u.get("record")}
    if spec.resources.processes is not None:
        from olrg_hpc.launch import run_launched

        return run_launched(spec, inline)
    return store_result(spec, *call(spec, inline))


def noop(i: int = 0) -> dict[str, Any]:
    """A task that does nothing but return its index: measures the runner's own overhead."""
    return {"i": i}
