"""The runner: fan out, gather, reduce, store; resume; failures named; retries; graph checks; checksummed shards
recomputed when edited in place; non-finite results refused; bounded graphs.

Task functions live in this module; an in-process (threads) LocalCluster runs them without pickling
them across processes. The end-to-end path with worker processes is tested through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from _edit import edit_number

from olrg_hpc import store
from olrg_hpc.errors import UserError
from olrg_hpc.runner import run_tasks, study_status, topological_order
from olrg_hpc.tasks import CorruptDependency, NonFiniteResult, Task, bounded_graph, check_finite, execute


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


def ratio(a: float, b: float, declare: bool = False) -> dict:
    """``a / b`` where b may be 0: NaN for 0/0 (not measured when ``declare``), inf for a/0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return {"r": np.array([1.0, np.float64(a) / np.float64(b)]), "n": 2}


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
    shards = store.Shards(tmp_path)
    for name in ("sq-1", "sq-2", "total"):
        shards.remove(manifest[name])
    for name in ("sq-3", "sq-4"):  # their records cut short: the line holds the first 100 bytes of the JSON
        loc = store.Shards(tmp_path).candidates(manifest[name])[0]
        raw = loc.path.read_bytes()
        loc.path.write_bytes(raw[: loc.offset + 100] + raw[loc.offset + loc.length:])
    assert len(study_status(tmp_path)["missing"]) == 3 and len(study_status(tmp_path)["corrupt"]) == 2
    s3 = run_tasks(graph(), tmp_path, client, study_seed=5, progress=False)
    assert (s3.skipped, s3.missing, s3.corrupt, s3.computed) == (4, 3, 2, 5)
    again = store.datasets(s3.study_file)
    assert again.keys() == first.keys()
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])


def _keys(study_dir: Path) -> dict[str, str]:
    return {t["name"]: t["key"] for t in json.loads((study_dir / "manifest.json").read_text())["tasks"]}


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
    ([Task("a/b", square, {"x": 1.0})], "without '/'"),
    ([Task("a\nb", square, {"x": 1.0})], "printable"),
    ([Task("x" * 10_000, square, {"x": 1.0})], "1 to 200 printable"),
])
def test_graph_errors(tasks, message):
    with pytest.raises(UserError, match=message):
        topological_order(tasks)


def test_a_shard_edited_in_place_is_recomputed_and_never_consumed(tmp_path, client):
    """Resume: a shard whose numbers were changed in place (a valid file, compact here) is corrupt, recomputed, and
    the study file equals the undisturbed one; a task reading a dependency that fails its checksum does not run."""
    s1 = run_tasks(graph(4), tmp_path, client, study_seed=5, progress=False)
    first = store.datasets(s1.study_file)
    keys = {t["name"]: t["key"] for t in json.loads((tmp_path / "manifest.json").read_text())["tasks"]}
    edit_number(tmp_path, keys["sq-2"], "y", -4.0)
    assert study_status(tmp_path)["corrupt"] == ["sq-2"]
    # the reducing task, run against the damaged shard, refuses it instead of summing -4
    from olrg_hpc.runner import plan

    _, specs = plan(graph(4), tmp_path, 5)
    with pytest.raises(CorruptDependency, match="dependency 'sq-2': .*checksum mismatch"):
        execute(next(s for s in specs if s.name == "total"))
    s2 = run_tasks(graph(4), tmp_path, client, study_seed=5, progress=False)
    assert (s2.skipped, s2.corrupt, s2.computed) == (4, 1, 1)
    again = store.datasets(s2.study_file)
    for k in first:
        np.testing.assert_array_equal(again[k], first[k])


def test_a_shard_damaged_before_gather_is_not_gathered(tmp_path, client, monkeypatch):
    """A shard damaged after its check (here: between the status check and the gather) fails the run with one
    line, is removed, and the rerun recomputes it."""
    real_gather = store.gather

    def damaging_gather(study_dir, entries, attrs):
        key = next(e["key"] for e in entries if e["name"] == "sq-1")
        edit_number(study_dir, key, "y", np.inf)
        return real_gather(study_dir, entries, attrs)

    monkeypatch.setattr(store, "gather", damaging_gather)
    s = run_tasks(graph(3), tmp_path, client, progress=False)
    assert not s.ok and not (tmp_path / store.STUDY_FILE).exists()
    name, err = s.failed[0]
    assert name == "sq-1" and err.startswith("corrupt shard, not gathered") and "checksum mismatch" in err
    monkeypatch.setattr(store, "gather", real_gather)
    s = run_tasks(graph(3), tmp_path, client, progress=False)
    assert s.ok and (s.missing, s.computed) == (1, 1)


def test_non_finite_results_fail_the_task_unless_declared_not_measured(tmp_path, client, caplog):
    tasks = [Task("inf", ratio, {"a": 1.0, "b": 0.0}), Task("nan", ratio, {"a": 0.0, "b": 0.0}),
             Task("nan-ok", ratio, {"a": 0.0, "b": 0.0, "declare": True}, nan_ok=("r",)),
             Task("inf-declared", ratio, {"a": 2.0, "b": 0.0, "declare": True}, nan_ok=("r",)),
             Task("fine", ratio, {"a": 1.0, "b": 2.0})]
    with caplog.at_level("ERROR", logger="olrg_hpc.runner"):
        s = run_tasks(tasks, tmp_path, client, retries=0, progress=False)
    failed = dict(s.failed)
    assert set(failed) == {"inf", "nan", "inf-declared"} and s.computed == 2
    assert failed["inf"] == "NonFiniteResult: result 'r' holds 1 inf of 2 values (first at index (1,))"
    assert failed["nan"].startswith("NonFiniteResult: result 'r' holds 1 NaN of 2 values (first at index (1,)) and "
                                    "the task does not declare it")
    assert all("\n" not in e for e in failed.values())
    # no shard was written for them; the full traceback is in the log, not in the one line
    assert sum(store.Shards(tmp_path).status(k) == "valid" for k in _keys(tmp_path).values()) == 2
    assert "Traceback (most recent call last)" in caplog.text and "task inf failed" in caplog.text
    with pytest.raises(NonFiniteResult, match="'a/b' holds 1 NaN"):
        check_finite({"a": {"b": np.array([[1.0, np.nan]])}, "s": "x", "i": np.arange(3)})
    check_finite({"a": {"b": np.array([np.nan])}}, nan_ok=("a/*",))
    with pytest.raises(NonFiniteResult, match="holds 1 inf"):
        check_finite({"c": np.array([1j * np.inf])}, nan_ok=("*",))


def test_a_failure_message_is_one_line_of_bounded_length(tmp_path, client):
    s = run_tasks([Task("long", fail_long, {})], tmp_path, client, retries=0, progress=False)
    err = dict(s.failed)["long"]
    assert "\n" not in err and len(err) <= 300 and err.startswith("RuntimeError: ") and "line one" in err


def fail_long() -> dict:
    raise RuntimeError("line one\nline two\n" + "x" * 10_000)


def test_graph_size_is_bounded():
    """A size in a config that would create millions of tasks stops after MAX_TASKS, in well under a second."""
    import time

    from olrg_hpc.tasks import MAX_TASKS

    t0 = time.perf_counter()
    with pytest.raises(UserError, match=f"more than {MAX_TASKS} tasks"):
        with bounded_graph():
            [Task(f"t{i}", square, {"x": 1.0}) for i in range(10**9)]
    assert time.perf_counter() - t0 < 30  # ~0.2 s here; the bound is what matters, not the speed
    [Task(f"t{i}", square) for i in range(MAX_TASKS + 1)]  # outside a build, Task objects are not counted
