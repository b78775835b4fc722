"""Tasks: the nodes of a study's graph, their content-hash keys, and how a worker executes one.

A :class:`Task` names a library function (importable at module level, so workers unpickle it by
reference), its JSON-able keyword parameters and the names of the tasks it depends on. The runner gives
each task a *key*: a hash of the function's path, the parameters, the package version, a content hash of
the source the function can run (:func:`olrg_hpc.provenance.module_code_hash`: its module and every module of
``olrg_hpc`` and ``workflows`` that module imports, so a change there without a version bump does not reuse old
shards, while a change elsewhere, say to a report, keeps them), the task's seed and the keys of its dependencies.
A shard written under that key is valid for exactly those inputs.

The function returns a mapping of names to arrays/scalars/strings (nested mappings become HDF5 groups).
If it has a ``seed`` parameter it receives the task seed; if it has a ``deps`` parameter it receives the
results of its dependencies as ``{task_name: results}`` (read back from their shards, so a dependency
finished in an earlier run serves as well as one computed now).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from olrg_hpc import __version__
from olrg_hpc.provenance import host, module_code_hash, now
from olrg_hpc.store import read_shard, write_shard

TaskFn = Callable[..., Mapping[str, Any]]


@dataclass(frozen=True)
class Task:
    """One node of a study graph."""

    name: str
    fn: TaskFn
    params: Mapping[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()

    @property
    def function(self) -> str:
        return f"{self.fn.__module__}:{self.fn.__qualname__}"


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
    """A 63-bit seed from the study seed, the function and the parameters (not the task's display name)."""
    h = hashlib.sha256(canonical_json([study_seed, task.function, task.params]).encode()).digest()
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
    dep_shards: Mapping[str, Path]
    provenance: Mapping[str, Any]


def execute(spec: TaskSpec, *_upstream: Any) -> dict[str, Any]:
    """Run one task on a worker and write its shard; returns timings (the data stays on disk).

    ``_upstream`` holds the outcomes of dependencies computed in the same run: passing them makes Dask
    order the tasks; the data itself is read from the dependencies' shards.
    """
    started = now()
    t0 = time.perf_counter()
    kwargs = dict(spec.params)
    sig = inspect.signature(spec.fn).parameters
    if "seed" in sig:
        kwargs["seed"] = spec.seed
    if "deps" in sig:
        kwargs["deps"] = {name: read_shard(path) for name, path in spec.dep_shards.items()}
    result = spec.fn(**kwargs)
    if not isinstance(result, Mapping):
        raise TypeError(f"task {spec.name}: {spec.fn.__qualname__} returned {type(result).__name__}, not a mapping")
    compute_s = time.perf_counter() - t0
    # per-task facts as separate attributes; the run's provenance (package version, git commit, library
    # versions, study config) as one JSON attribute: a shard write costs ~0.15 ms per attribute
    attrs = dict(task_name=spec.name, task_key=spec.key, function=f"{spec.fn.__module__}:{spec.fn.__qualname__}",
                 params=dict(spec.params), seed=spec.seed, host=host(), started=started, finished=now(),
                 compute_seconds=compute_s, provenance=dict(spec.provenance))
    write_s = write_shard(spec.shard, result, attrs)
    return {"name": spec.name, "key": spec.key, "compute_s": compute_s, "write_s": write_s}


def noop(i: int = 0) -> dict[str, Any]:
    """A task that does nothing but return its index: measures the runner's own overhead."""
    return {"i": i}
