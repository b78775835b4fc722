"""The runner: fan out, gather, reduce, store; resume; failures named; retries; graph checks.

Task functions live in this module; an in-process (threads) LocalCluster runs them without pickling
them across processes. The end-to-end path with worker processes is tested through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from olrg_hpc import store
from olrg_hpc.errors import UserError
from olrg_hpc.runner import run_tasks, study_status, topological_order
from olrg_hpc.tasks import Task


def square(x: float, seed: int) -> dict:
    return {"x": x, "y": x * x, "seed_used": seed}


def total(deps: dict) -> dict:
    names = sorted(deps)
    return {"names": np.array(names), "sum": sum(float(deps[n]["y"]) for n in names)}


def fail_if(x: float, bad: float) -> dict:
    if x == bad:
        raise ValueError(f"x = {x} is the bad value")
    return {"x": x}


def flaky(marker: str) -> dict:
    """Fails on its first call (creates the marker), succeeds afterwards: exercises retries."""
    p = Path(marker)
    if not p.exists():
        p.write_text("seen")
        raise RuntimeError("transient failure")
    return {"ok": 1}


def graph(n: int = 8) -> list[Task]:
    fan = [Task(f"sq-{i}", square, {"x": float(i)}) for i in range(n)]
    return [*fan, Task("total", total, {}, deps=tuple(t.name for t in fan))]


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as c, \
            Client(c) as cl:
        yield cl



def test_fan_out_reduce_and_resume(tmp_path, client):
    s1 = run_tasks(graph(), tmp_path, client, study_seed=5, progress=False)
    assert s1.ok and s1.computed == 9 and s1.skipped == 0
    first = store.datasets(s1.study_file)
    assert first["tasks/total/sum"] == sum(i * i for i in range(8))  # 140: exact

    s2 = run_tasks(graph(), tmp_path, client, study_seed=5, progress=False)
    assert (s2.skipped, s2.computed) == (9, 0)

    # lose three shards, damage two: exactly those five are recomputed, the result is identical
    manifest = {t["name"]: t["key"] for t in json.loads((tmp_path / "manifest.json").read_text())["tasks"]}
    for name in ("sq-1", "sq-2", "total"):
        store.shard_path(tmp_path, manifest[name]).unlink()
    for name in ("sq-3", "sq-4"):
        p = store.shard_path(tmp_path, manifest[name])
        p.write_bytes(p.read_bytes()[:100])
    assert len(study_status(tmp_path)["missing"]) == 3 and len(study_status(tmp_path)["corrupt"]) == 2
    s3 = run_tasks(graph(), tmp_path, client, study_seed=5, progress=False)
    assert (s3.skipped, s3.missing, s3.corrupt, s3.computed) == (4, 3, 2, 5)
    again = store.datasets(s3.study_file)
    assert again.keys() == first.keys()
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])


def test_seeds_are_stable_and_distinct(tmp_path, client):
    s = run_tasks(graph(4), tmp_path, client, study_seed=1, progress=False)
    seeds = store.datasets(s.study_file)
    used = [int(seeds[f"tasks/sq-{i}/seed_used"]) for i in range(4)]
    assert len(set(used)) == 4
    s_other = run_tasks(graph(4), tmp_path / "other", client, study_seed=2, progress=False)
    other = store.datasets(s_other.study_file)
    assert all(int(other[f"tasks/sq-{i}/seed_used"]) != used[i] for i in range(4))


def test_shard_provenance(tmp_path, client):
    s = run_tasks(graph(2), tmp_path, client, study_seed=3, study_attrs={"study": "prov", "study_config": "seed: 3\n"},
                  progress=False)
    with h5py.File(s.study_file, "r") as f:
        a = f["tasks/sq-1"].attrs
        for key in ("host", "seed", "started", "finished", "params", "task_key", "function", "compute_seconds"):
            assert key in a, key
        prov = json.loads(a["provenance"])
        for key in ("olrg_hpc_version", "git_commit", "version_numpy", "version_jax", "version_dask", "study_config"):
            assert key in prov, key
        assert prov["study_config"] == "seed: 3\n"
        assert a["started"] <= a["finished"]
        assert f.attrs["study"] == "prov"


def test_failure_is_named_and_others_finish(tmp_path, client):
    tasks = [Task(f"t-{i}", fail_if, {"x": float(i), "bad": 2.0}) for i in range(5)]
    tasks.append(Task("after", total, {}, deps=("t-2",)))
    s = run_tasks(tasks, tmp_path, client, retries=0, progress=False)
    assert not s.ok and s.study_file is None and not (tmp_path / store.STUDY_FILE).exists()
    failed = dict(s.failed)
    assert failed["t-2"] == "ValueError: x = 2.0 is the bad value"
    assert failed["after"] == "not run: dependency 't-2' failed"
    assert s.computed == 4
    st = study_status(tmp_path)
    assert len(st["done"]) == 4 and len(st["failed"]) == 2


def test_retries(tmp_path, client):
    marker = tmp_path / "marker"
    s = run_tasks([Task("flaky", flaky, {"marker": str(marker)})], tmp_path / "a", client, retries=1,
                  progress=False)
    assert s.ok
    marker.unlink()
    s = run_tasks([Task("flaky", flaky, {"marker": str(marker)})], tmp_path / "b", client, retries=0,
                  progress=False)
    assert dict(s.failed)["flaky"] == "RuntimeError: transient failure"


@pytest.mark.parametrize("tasks, message", [
    ([Task("a", square, {"x": 1.0}), Task("a", square, {"x": 2.0})], "duplicate task name 'a'"),
    ([Task("a", total, deps=("b",)), Task("b", total, deps=("a",))], "dependency cycle a -> b -> a"),
    ([Task("a", total, deps=("zz",))], "depends on unknown task 'zz'"),
    ([Task("a/b", square, {"x": 1.0})], "must not contain '/'"),
])
def test_graph_errors(tasks, message):
    with pytest.raises(UserError, match=message):
        topological_order(tasks)
