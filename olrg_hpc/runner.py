"""The workflow runner: a study's task graph onto a Dask client, with resume, progress and failures.

``run_tasks`` (1) checks the graph (unique names, known dependencies, no cycles), (2) gives every task
its seed and content key, (3) writes the manifest, (4) sorts tasks into *valid* shards (skipped) and
*missing* or *corrupt* ones (recomputed), (5) submits the latter with their dependencies as Dask futures
(``retries`` per task; a killed worker's tasks are rescheduled by Dask; with ``pools``, each task asks for the Dask
resource of the pool it belongs on, :func:`olrg_hpc.cluster.placement`), (6) shows a progress bar over
the graph, (7) names every failed task with its error in one line (tasks downstream of a failure are reported
as not run; the full traceback goes to the logger ``olrg_hpc.runner``, which the command line writes to
``STUDY_DIR/run.log``), and (8) gathers all shards into ``study.h5`` once every task is valid, verifying each
against its checksums on the way. A ``check`` callable, called about every 0.1 s while tasks run, may raise to
stop the run (the cluster's health: worker jobs that cannot start). The summary counts the tasks each pool ran
(every shard records its pool).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import sys
import time
import traceback
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from olrg_hpc import store
from olrg_hpc.errors import UserError
from olrg_hpc.launch import LAUNCH_DIR
from olrg_hpc.provenance import now, run_provenance
from olrg_hpc.tasks import Task, TaskSpec, dep_label, execute, task_key, task_seed

if TYPE_CHECKING:
    from olrg_hpc.cluster import Pool

log = logging.getLogger(__name__)

#: small results are written as one batch file per this many, or per this many seconds, whichever comes first
FLUSH_RECORDS, FLUSH_S = 2000, 1.0
#: longest error text of one failed task on the terminal (the full one is in the log)
ERROR_CHARS = 300


def one_line(text: str, limit: int = ERROR_CHARS) -> str:
    """``text`` on one line (whitespace runs collapsed), cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


@dataclass
class RunSummary:
    n_tasks: int
    skipped: int = 0
    missing: int = 0
    corrupt: int = 0
    computed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    study_file: Path | None = None
    seconds: float = 0.0
    compute_seconds: float = 0.0
    write_seconds: float = 0.0
    #: the tasks each worker pool ran (as their shards record it; "" when the worker did not say)
    pools: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        out = [f"{self.n_tasks} tasks: {self.skipped} skipped (valid shard), {self.missing + self.corrupt} to run "
               f"({self.missing} missing, {self.corrupt} partial or corrupt), {self.computed} computed, "
               f"{len(self.failed)} failed, in {self.seconds:.1f} s"]
        if self.computed:
            out.append(f"shard writes: {self.write_seconds / self.computed * 1e3:.2f} ms per task "
                       f"({self.write_seconds:.2f} s of {self.compute_seconds + self.write_seconds:.2f} s task time)")
        if self.pools:
            out.append("pools: " + "; ".join(pool_line(p or "-", names) for p, names in sorted(self.pools.items())))
        out += [f"FAILED {name}: {err}" for name, err in self.failed]
        if self.study_file:
            out.append(f"study file: {self.study_file}")
        return out


def pool_line(pool: str, names: Sequence[str], show: int = 6) -> str:
    """``pool ran N tasks`` and, for a few, their names."""
    listed = f" ({', '.join(sorted(names))})" if len(names) <= show else ""
    return f"{pool} ran {len(names)} task{'s' * (len(names) != 1)}{listed}"


def topological_order(tasks: Sequence[Task]) -> list[Task]:
    """Tasks ordered so that each comes after its dependencies; UserError on duplicates, unknowns, cycles."""
    by_name: dict[str, Task] = {}
    for t in tasks:
        if t.name in by_name:
            raise UserError(f"task graph: duplicate task name {one_line(repr(t.name), 120)}")
        if "/" in t.name or not t.name.isprintable() or not t.name or len(t.name) > 200:
            raise UserError(f"task graph: task name {one_line(repr(t.name), 120)} must be 1 to 200 printable "
                            "characters without '/'")
        by_name[t.name] = t
    order: list[Task] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            raise UserError(f"task graph: dependency cycle {' -> '.join(path + (name,))}")
        state[name] = 1
        for d in by_name[name].deps:
            if d not in by_name:
                raise UserError(f"task graph: task {name!r} depends on unknown task {d!r}")
            visit(d, path + (name,))
        state[name] = 2
        order.append(by_name[name])

    for t in tasks:
        visit(t.name, ())
    return order


def _h5(study_dir: Path, key: str) -> store.Location:
    return store.Location(key, store.shard_path(study_dir, key))


def plan(tasks: Sequence[Task], study_dir: Path, study_seed: int,
         study_config: str = "") -> tuple[list[Task], list[TaskSpec]]:
    """Order the graph and resolve each task to a TaskSpec (seed, key, shard paths, run provenance)."""
    ordered = topological_order(tasks)
    # the run's provenance, encoded once: every shard stores it as this JSON text
    prov = json.dumps({**run_provenance(), "study_config": study_config}, sort_keys=True, default=str)
    keys: dict[str, str] = {}
    specs = []
    for t in ordered:
        seed = task_seed(study_seed, t)
        key = task_key(t, seed, [keys[d] for d in t.deps])
        keys[t.name] = key
        specs.append(TaskSpec(name=t.name, key=key, fn=t.fn, params=dict(t.params), seed=seed,
                              shard=store.shard_path(study_dir, key),
                              dep_shards={dep_label(t.name, d): _h5(study_dir, keys[d]) for d in t.deps},
                              provenance=prov, nan_ok=tuple(t.nan_ok), resources=t.resources))
    return ordered, specs


def manifest_entries(ordered: Sequence[Task], specs: Sequence[TaskSpec]) -> list[dict[str, Any]]:
    return [{"name": s.name, "key": s.key, "function": t.function, "params": s.params, "seed": s.seed,
             "deps": list(t.deps)} for t, s in zip(ordered, specs, strict=True)]


def run_tasks(tasks: Sequence[Task], study_dir: Path, client: Any, *, study_seed: int = 0, retries: int = 1,
              study_attrs: Mapping[str, Any] | None = None, progress: bool = True,
              gather_results: bool = True, check: Callable[[], None] | None = None,
              pools: Sequence[Pool] = ()) -> RunSummary:
    """Run (or resume) a study graph on ``client`` and gather its study file. See the module docstring.

    ``pools``: the cluster's worker pools (:func:`olrg_hpc.cluster.pools_of`); none: tasks go to any worker. The
    caller holds the study folder's lock (:func:`olrg_hpc.store.study_lock`).
    """
    from tqdm import tqdm

    from olrg_hpc.cluster import placement

    t_start = time.perf_counter()
    study_dir = Path(study_dir)
    (study_dir / store.SHARDS).mkdir(parents=True, exist_ok=True)
    ordered, specs = plan(tasks, study_dir, study_seed, str((study_attrs or {}).get("study_config", "")))
    entries = manifest_entries(ordered, specs)
    store.write_json_atomic(study_dir / store.MANIFEST, {"created": now(), "seed": study_seed, "tasks": entries})
    store.clean_temporaries(study_dir)
    shutil.rmtree(study_dir / LAUNCH_DIR, ignore_errors=True)  # working folders of launches a killed run left

    summary = RunSummary(n_tasks=len(specs))
    shards = store.Shards(study_dir)
    found: dict[str, store.Location] = {}  # valid shards of this graph's tasks
    todo: list[TaskSpec] = []
    for spec in specs:
        status, loc, _, _ = shards.info(spec.key)
        if status == "valid" and loc is not None:
            summary.skipped += 1
            found[spec.key] = loc
            continue
        if status == "corrupt":
            summary.corrupt += 1
            shards.remove(spec.key)
        else:
            summary.missing += 1
        todo.append(spec)
    # dependencies finished earlier are read where they are (a record of a batch file, or an HDF5 shard)
    todo = [dataclasses.replace(s, dep_shards={n: found.get(loc.key, loc) for n, loc in s.dep_shards.items()})
            for s in todo]

    futures: dict[str, Any] = {}
    # Dask keys unique to this run: two studies (or two runs) with identical tasks must not share results,
    # since each writes its shards into its own folder
    run_token = uuid.uuid4().hex[:8]

    def dask_key(s: TaskSpec) -> str:
        return f"{s.name}-{s.key[:10]}-{run_token}"

    wants: dict[str, dict[str, float] | None] = {}  # Dask resources of each task's pool
    for s in todo:
        try:
            wants[s.name] = placement(s.resources, pools)[1]
        except ValueError as exc:
            raise UserError(f"task {s.name}: {exc}") from None
    deps_of = {t.name: t.deps for t in ordered}
    # independent tasks go in one client.map call per pool (one scheduler message each); the rest follow their deps
    todo_names = {s.name for s in todo}
    groups: dict[tuple[tuple[str, float], ...], list[TaskSpec]] = defaultdict(list)
    for s in todo:
        if not any(d in todo_names for d in deps_of[s.name]):
            groups[tuple(sorted((wants[s.name] or {}).items()))].append(s)
    first_names = {s.name for group in groups.values() for s in group}
    for want, group in groups.items():
        for s, fut in zip(group, client.map(execute, group, key=[dask_key(s) for s in group], retries=retries,
                                            pure=False, resources=dict(want) or None), strict=True):
            futures[s.name] = fut
    for s in todo:
        if s.name in first_names:
            continue
        upstream = [futures[d] for d in deps_of[s.name] if d in futures]
        futures[s.name] = client.submit(execute, s, *upstream, key=dask_key(s), retries=retries,
                                        pure=False, resources=wants[s.name])

    errors: dict[str, str] = {}
    name_of = {f.key: n for n, f in futures.items()}
    pending: list[tuple[str, bytes]] = []  # small results not yet in a batch file
    since = 0.0

    def flush() -> None:
        summary.write_seconds += shards.add(pending)
        pending.clear()

    bar = tqdm(total=len(futures), desc="tasks", unit="task", disable=not progress or not futures,
               file=sys.stderr, dynamic_ncols=True)
    try:
        # completions are watched without their results: the futures' states, every 0.1 s (a scan costs ~0.1 ms
        # per 1,000 tasks and no callbacks); each batch's outcomes (timings, pool, small results) come in one
        # gather, and their futures are released. Small results are written together: one batch file per
        # FLUSH_RECORDS results or FLUSH_S seconds (the dependents computed in this run got them with the outcomes
        # already). Between batches the caller's check runs (it may raise to stop the run).
        waiting = list(futures.values())
        while waiting:
            states = [f.done() for f in waiting]
            batch = [f for f, d in zip(waiting, states, strict=True) if d]
            waiting = [f for f, d in zip(waiting, states, strict=True) if not d]
            if batch:
                finished = [f for f in batch if f.status == "finished"]
                outcomes = client.gather(finished) if finished else []
                if not pending and any(r.get("record") for r in outcomes):
                    since = time.monotonic()
                pending.extend((r["key"], r["record"]) for r in outcomes if r.get("record"))
                for fut, res in zip(finished, outcomes, strict=True):
                    summary.computed += 1
                    summary.compute_seconds += res["compute_s"]
                    summary.write_seconds += res["write_s"]
                    summary.pools.setdefault(res.get("pool", ""), []).append(name_of[fut.key])
                for fut in batch:
                    name = name_of[fut.key]
                    if fut.status != "finished":
                        exc = fut.exception()
                        errors[name] = one_line(f"{type(exc).__name__}: {exc}")
                        tb = "".join(traceback.format_exception(type(exc), exc, fut.traceback()))
                        log.error("task %s failed (key %s):\n%s", name, fut.key, tb.rstrip())
                    futures.pop(name, None)
                bar.update(len(batch))
            if pending and (len(pending) >= FLUSH_RECORDS or time.monotonic() - since >= FLUSH_S):
                flush()
            if check is not None:
                check()
            if waiting:
                time.sleep(0.1)
    finally:
        flush()  # also after an error or Ctrl-C: finished tasks are kept
        bar.close()
        futures.clear()
    failed_set = set(errors)
    for t in ordered:  # attribute downstream failures to the first failed dependency
        if t.name in errors:
            bad = [d for d in t.deps if d in failed_set]
            msg = f"not run: dependency {bad[0]!r} failed" if bad else errors[t.name]
            summary.failed.append((t.name, msg))
    store.write_json_atomic(study_dir / store.FAILURES, [{"name": n, "error": e} for n, e in summary.failed])

    if summary.ok and gather_results:
        attrs = dict(study_attrs or {})
        attrs.update(run_provenance(), gathered=now())
        try:
            summary.study_file = store.gather(study_dir, entries, attrs)
        except store.CorruptFile as exc:
            # a shard damaged since it was checked: never gathered; removed, so that a rerun recomputes it
            bad = next((e for e in entries if e["key"] == exc.key), None)
            if bad is not None:
                store.Shards(study_dir).remove(bad["key"])
            summary.failed.append((bad["name"] if bad else "(gather)",
                                   one_line(f"corrupt shard, not gathered (removed; rerun recomputes it): {exc}")))
            log.error("gather: %s", exc)
            store.write_json_atomic(study_dir / store.FAILURES, [{"name": n, "error": e} for n, e in summary.failed])
    summary.seconds = time.perf_counter() - t_start
    return summary


def study_status(study_dir: Path, pools: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Tasks of a study folder by state: done (valid shard), missing, corrupt, failed (last run). ``pools``, when
    given, receives the done tasks by the pool their shard says ran them ("" when it does not say)."""

    study_dir = Path(study_dir)
    manifest = study_dir / store.MANIFEST
    if not manifest.exists():
        raise UserError(f"{study_dir}: not a study folder (no {store.MANIFEST}; run the study first)")
    try:
        entries = json.loads(manifest.read_text())["tasks"]
    except (ValueError, KeyError):
        raise UserError(f"{manifest}: unreadable manifest") from None
    failed_path = study_dir / store.FAILURES
    failed = {}
    if failed_path.exists():
        try:
            failed = {f["name"]: f["error"] for f in json.loads(failed_path.read_text())}
        except (ValueError, KeyError, TypeError):
            failed = {}
    out: dict[str, list[str]] = {"done": [], "missing": [], "corrupt": [], "failed": []}
    shards = store.Shards(study_dir)
    for e in entries:
        st, _, attrs, _ = shards.info(e["key"])
        if st == "valid":
            out["done"].append(e["name"])
            if pools is not None:
                pools.setdefault(str(attrs.get("pool", "")), []).append(e["name"])
        elif e["name"] in failed:
            out["failed"].append(f"{e['name']}: {failed[e['name']]}")
        else:
            out[st].append(e["name"])
    return out
