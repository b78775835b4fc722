"""The HDF5 store: atomic shards, validity checks, a study file readable by plain h5py."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from olrg_hpc import store


def test_shard_round_trip_with_groups_strings_and_provenance(tmp_path):
    path = store.shard_path(tmp_path, "abc")
    results = {"x": np.arange(5.0), "scalar": 3.5, "label": "tfim", "nested": {"m": np.eye(3), "k": 2}}
    store.write_shard(path, results, {"task_key": "abc", "seed": 7, "params": {"n": 4}})
    back = store.read_shard(path)
    np.testing.assert_array_equal(back["x"], np.arange(5.0))
    assert back["scalar"] == 3.5 and back["label"] == "tfim"
    np.testing.assert_array_equal(back["nested"]["m"], np.eye(3))
    attrs = store.read_attrs(path)
    assert attrs["complete"] and attrs["seed"] == 7 and attrs["params"] == '{"n": 4}'
    assert store.shard_status(path, "abc") == "valid"


def test_failed_write_leaves_nothing(tmp_path):
    path = store.shard_path(tmp_path, "k")

    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        store.write_shard(path, {"a": np.ones(3), "b": Boom()}, {"task_key": "k"})
    assert not path.exists()
    assert list((tmp_path / store.SHARDS).iterdir()) == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "wrong_key", "incomplete"])
def test_damaged_shards_are_not_valid(tmp_path, damage):
    path = store.shard_path(tmp_path, "key1")
    store.write_shard(path, {"a": np.random.default_rng(0).normal(size=(64, 64))}, {"task_key": "key1"})
    if damage == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not hdf5 at all")
    elif damage == "wrong_key":
        with h5py.File(path, "a") as f:
            f.attrs["task_key"] = "other"
    else:
        with h5py.File(path, "a") as f:
            del f.attrs["complete"]
    assert store.shard_status(path, "key1") == "corrupt"
    assert store.shard_status(store.shard_path(tmp_path, "nope"), "nope") == "missing"


def test_gather_is_plain_hdf5(tmp_path):
    entries = []
    for i in range(3):
        key = f"k{i}"
        store.write_shard(store.shard_path(tmp_path, key), {"value": float(i)}, {"task_key": key, "host": "h"})
        entries.append({"name": f"task-{i}", "key": key})
    out = store.gather(tmp_path, entries, {"study": "s", "workflow": "w"})
    with h5py.File(out, "r") as f:  # no olrg_hpc needed to read it
        assert sorted(f["tasks"]) == ["task-0", "task-1", "task-2"]
        assert f["tasks/task-2/value"][()] == 2.0
        assert f["tasks/task-1"].attrs["host"] == "h"
        assert f.attrs["n_tasks"] == 3 and f.attrs["study"] == "s"


def test_clean_temporaries(tmp_path):
    (tmp_path / store.SHARDS).mkdir()
    (tmp_path / store.SHARDS / ".x.h5.tmp-1-ab").write_bytes(b"partial")
    assert store.clean_temporaries(tmp_path) == 1
    assert not list((tmp_path / store.SHARDS).iterdir())


@pytest.mark.parametrize("env, durable, expected", [(None, None, 0), ("1", None, 1), ("0", True, 1), (None, False, 0)])
def test_fsync_only_where_asked(tmp_path, monkeypatch, env, durable, expected):
    """Task shards skip the fsync by default (a crash-damaged shard fails validation and is recomputed);
    OLRG_HPC_FSYNC=1 or durable=True (checkpoints, study files) fsync before the rename."""
    import os

    calls = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd)))
    if env is None:
        monkeypatch.delenv("OLRG_HPC_FSYNC", raising=False)
    else:
        monkeypatch.setenv("OLRG_HPC_FSYNC", env)
    store.write_shard(tmp_path / "s.h5", {"x": np.arange(3)}, {"task_key": "k"}, durable=durable)
    assert len(calls) == expected
    assert store.shard_status(tmp_path / "s.h5", "k") == "valid"
