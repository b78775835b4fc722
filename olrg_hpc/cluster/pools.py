"""Several worker pools under one Dask scheduler, each adapting on its own.

dask-jobqueue's cluster is a ``distributed.SpecCluster``: its ``worker_spec`` maps job names to ``{"cls": JobClass,
"options": {...}}``, and ``_correct_state()`` submits every job of the spec that is not running and cancels every
running job no longer in it. Nothing requires the specs to be alike, so the jobs of every pool live in one spec
(named ``POOL-N``), each with its own partition, resources, walltime and prologue. Dask's ``Adaptive`` cannot drive
that (it sizes the whole cluster from the whole task queue); :class:`PoolScaler` does, per pool, every
``interval`` seconds, on the cluster's event loop:

- **demand**: the pool's runnable tasks (``no-worker``, ``queued``, ``processing``) in the scheduler, found by the
  Dask resource their pool's workers advertise (``pool-NAME``; in a cluster of one pool, every task), and whether
  any of its tasks still waits for its dependencies;
- **target**: runnable tasks over the task slots of one job (workers x threads), rounded up, at least one job while
  a task of the pool waits (so that a pool does not leave and come back between the stages of a graph), within the
  pool's ``[minimum, maximum]`` (a fixed ``jobs: N`` is ``[N, N]``);
- **up** at once: new job specs; **down** after ``wait_count`` checks in a row that want fewer: jobs whose workers
  run nothing (not yet started ones first) are retired through the scheduler (``retire_workers``: the results they
  hold move to other workers first), and only those that retired leave the spec (their jobs are then cancelled);
- **replacement**: a job that ended (scancel, node failure, walltime, ``worker_lifetime``) leaves the cluster's
  ``workers`` after ``distributed.deploy.lost-worker-timeout`` while its spec stays; ``_correct_state`` then
  submits it again (a new SLURM job under the same name).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("olrg_hpc.cluster")
RUNNABLE = ("no-worker", "queued", "processing")


@dataclass
class PoolJobs:
    """One pool's job spec and bounds. ``slots``: tasks one of its jobs runs at once (workers x threads);
    ``resource``: the Dask resource its workers advertise (None: a cluster of one pool)."""

    name: str
    spec: dict[str, Any]
    minimum: int
    maximum: int
    slots: int
    resource: str | None = None

    def workers_of(self, job: str) -> set[str]:
        """The Dask worker names of job ``job`` (one, or one per process of a job of several)."""
        return {f"{job}{s}" for s in self.spec["group"]} if "group" in self.spec else {job}


class PoolScaler:
    """Adapt every pool of ``cluster`` on its own (module docstring)."""

    def __init__(self, cluster: Any, pools: list[PoolJobs], interval: float = 2.0, wait_count: int = 3) -> None:
        self.cluster, self.pools = cluster, {p.name: p for p in pools}
        self.interval, self.wait_count = interval, wait_count
        self.low: Counter[str] = Counter()  # consecutive checks that wanted fewer jobs, by pool
        self.counter: Counter[str] = Counter()
        self._callback: Any = None

    def jobs(self, pool: str) -> list[str]:
        prefix = f"{pool}-"
        return [n for n in self.cluster.worker_spec if str(n).startswith(prefix) and str(n)[len(prefix):].isdigit()]

    def pool_of(self, job: str) -> str | None:
        name, _, n = str(job).rpartition("-")
        return name if name in self.pools and n.isdigit() else None

    def start(self) -> None:
        from tornado.ioloop import PeriodicCallback

        async def tick() -> None:
            try:
                await self.adapt()
            except Exception:  # noqa: BLE001 - one failed check must not stop the scaling; logged in full
                log.warning("pool scaling check failed", exc_info=True)

        def begin() -> None:
            self._callback = PeriodicCallback(tick, self.interval * 1000)
            self._callback.start()
            asyncio.ensure_future(tick())

        self.cluster.loop.add_callback(begin)

    def stop(self) -> None:
        """No job is submitted after this (the first thing on the way out)."""
        cb = self._callback
        if cb is not None:
            self.cluster.loop.add_callback(cb.stop)
        self._callback = None
        self.pools = {}

    def demand(self) -> tuple[Counter[str], Counter[str]]:
        """Runnable and waiting tasks by pool, read from the scheduler (in this process, on this event loop)."""
        sched = self.cluster.scheduler
        runnable: Counter[str] = Counter()
        waiting: Counter[str] = Counter()
        by_resource = {p.resource: p.name for p in self.pools.values() if p.resource}
        only = next(iter(self.pools)) if len(self.pools) == 1 else None
        for ts in sched.tasks.values():
            if ts.state in RUNNABLE:
                count = runnable
            elif ts.state == "waiting":
                count = waiting
            else:
                continue
            if only is not None:
                count[only] += 1
                continue
            for r in ts.resource_restrictions or ():
                if r in by_resource:
                    count[by_resource[r]] += 1
                    break
        return runnable, waiting

    def _idle_jobs(self, pool: PoolJobs, names: list[str]) -> list[str]:
        """Jobs of ``pool`` that run no task, those whose workers never connected first."""
        sched = self.cluster.scheduler
        busy = {ws.name for ws in sched.workers.values() if ws.processing}
        seen = {ws.name for ws in sched.workers.values()}
        idle = [j for j in names if not (pool.workers_of(j) & busy)]
        return sorted(idle, key=lambda j: (bool(pool.workers_of(j) & seen), j))

    async def adapt(self) -> None:
        if not self.pools or getattr(self.cluster.status, "name", "") != "running":
            return
        runnable, waiting = self.demand()
        changed = False
        for pool in list(self.pools.values()):
            names = self.jobs(pool.name)
            want = max(math.ceil(runnable[pool.name] / max(pool.slots, 1)), 1 if waiting[pool.name] else 0)
            target = min(pool.maximum, max(pool.minimum, want))
            if target > len(names):
                log.info("pool %s: %d -> %d jobs (%d runnable tasks)", pool.name, len(names), target,
                         runnable[pool.name])
                self.low[pool.name] = 0
                for _ in range(target - len(names)):
                    while f"{pool.name}-{self.counter[pool.name]}" in self.cluster.worker_spec:
                        self.counter[pool.name] += 1
                    self.cluster.worker_spec[f"{pool.name}-{self.counter[pool.name]}"] = pool.spec
                changed = True
            elif target < len(names):
                self.low[pool.name] += 1
                if self.low[pool.name] >= self.wait_count:
                    self.low[pool.name] = 0
                    changed |= await self._retire(pool, self._idle_jobs(pool, names)[: len(names) - target])
            else:
                self.low[pool.name] = 0
        if changed or set(self.cluster.worker_spec) - set(self.cluster.workers):
            await self.cluster._correct_state()

    async def _retire(self, pool: PoolJobs, jobs: list[str]) -> bool:
        """Retire ``jobs`` of ``pool`` (their results move to other workers first); drop from the spec those
        whose workers retired or never connected. Whether any was dropped."""
        if not jobs:
            return False
        sched = self.cluster.scheduler
        connected = {ws.name: addr for addr, ws in sched.workers.items()}
        names = [w for j in jobs for w in pool.workers_of(j) if w in connected]
        retired = set()
        if names:
            out = await sched.retire_workers(names=names, close_workers=True, remove=True,
                                             stimulus_id=f"olrg-pool-{pool.name}-{time.time()}")
            retired = {ws.get("name") if isinstance(ws, dict) else getattr(ws, "name", None) for ws in out.values()}
        gone = [j for j in jobs if not (pool.workers_of(j) & set(connected)) or pool.workers_of(j) <= retired]
        if gone:
            log.info("pool %s: %d -> %d jobs (retiring %s)", pool.name, len(self.jobs(pool.name)),
                     len(self.jobs(pool.name)) - len(gone), ", ".join(gone))
        for j in gone:
            del self.cluster.worker_spec[j]
        return bool(gone)
