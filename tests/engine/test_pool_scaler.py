"""PoolScaler on an in-process SpecCluster: two pools of workers under one scheduler, each scaling to its own
tasks (found by their Dask resource), staying at zero without them, shrinking after its tasks are done, and a lost
worker of a pool replaced. The same scaler drives the SLURM pools (tests/slurm/test_pools.py), where the workers
are jobs."""

from __future__ import annotations

import time

import dask
import pytest

from olrg_hpc.cluster.pools import PoolJobs, PoolScaler


def nap(x: float) -> float:
    time.sleep(0.5)
    return x


def gated(x: float) -> float:
    """Runs until the test sets the event "go": the pool's tasks stay pending however slowly its workers start."""
    from distributed import Event

    Event("go").wait(timeout=120)
    return x


def _until(cond, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def cluster():
    from distributed import Scheduler, SpecCluster

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "0.5s"}), \
            SpecCluster(scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}}, workers={},
                        silence_logs=40) as c:
        yield c


def test_each_pool_scales_to_its_own_tasks_and_replaces_a_lost_worker(cluster):
    from distributed import Client, Event, Worker, wait

    pools = [PoolJobs(name, {"cls": Worker, "options": {"nthreads": 1, "resources": {f"pool-{name}": 1}}},
                      0, hi, 1, f"pool-{name}") for name, hi in (("a", 2), ("b", 1))]
    scaler = PoolScaler(cluster, pools, interval=0.2, wait_count=2)
    with Client(cluster) as client:
        scaler.start()
        time.sleep(1.0)
        assert scaler.jobs("a") == [] and scaler.jobs("b") == []  # no tasks, no workers
        futs = client.map(gated, range(16), resources={"pool-a": 1}, pure=False)
        _until(lambda: len(scaler.jobs("a")) == 2)  # 16 runnable tasks, at most 2 jobs
        assert scaler.jobs("b") == []  # the other pool stays at zero
        # a worker of pool a lost while its tasks run: its job is started again, every task finishes
        _until(lambda: len(cluster.scheduler.workers) == 2)
        victim = sorted(cluster.workers)[0]
        old = cluster.workers[victim]
        cluster.sync(old.close)
        _until(lambda: victim in cluster.workers and cluster.workers[victim] is not old and victim in {
            ws.name for ws in cluster.scheduler.workers.values()})  # started again, connected
        Event("go", client=client).set()
        wait(futs)
        assert sorted(f.result() for f in futs) == list(range(16))
        del futs  # a worker holding results someone still wants is not retired (they would be lost)
        # no task left for a: it shrinks to zero; tasks of b: b grows to one
        _until(lambda: scaler.jobs("a") == [])
        fut_b = client.submit(nap, 9, resources={"pool-b": 1}, pure=False)
        _until(lambda: len(scaler.jobs("b")) == 1)
        assert fut_b.result() == 9 and scaler.jobs("a") == []
        scaler.stop()
