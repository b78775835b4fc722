"""Compact shards (olrg_hpc.records) and batch files (store.Shards): the same values, types and digests as an HDF5
shard of the same results; every in-place edit refused; per-task status, removal and gathering."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from olrg_hpc import records, store

RESULTS = {
    "i": 3, "f": 2.5, "b": True, "c": np.complex64(1 + 2j), "arr": np.arange(6.0).reshape(2, 3), "s": "hello",
    "u": np.array(["a", "bcd"]), "g": {"x": np.int32(7), "h": {"y": [1, 2, 3]}}, "e": np.zeros((0, 3)),
    "u0": np.str_("zz"), "be": np.arange(3, dtype=">f8"), "m": np.arange(12, dtype=np.uint16).reshape(3, 4),
}
ATTRS = {"task_name": "t", "task_key": "k" * 24, "params": {"a": 1}, "seed": 5, "compute_seconds": 0.1,
         "flag": True, "pool": "cpu", "provenance": json.dumps({"v": "1"})}


def _same(a: dict, b: dict, path: str = "") -> None:
    assert a.keys() == b.keys(), path
    for k in a:
        if isinstance(a[k], dict):
            _same(a[k], b[k], f"{path}{k}/")
            continue
        assert type(a[k]) is type(b[k]), (path + k, type(a[k]), type(b[k]))
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, path + k
            np.testing.assert_array_equal(a[k], b[k])
        else:
            assert a[k] == b[k], path + k


def _batch(tmp_path: Path, items: dict[str, tuple[dict, dict]]) -> store.Shards:
    shards = store.Shards(tmp_path)
    shards.add((key, records.encode(res, attrs)) for key, (res, attrs) in items.items())
    return store.Shards(tmp_path)


def test_a_record_reads_back_as_the_hdf5_shard_of_the_same_results(tmp_path):
    key = ATTRS["task_key"]
    store.write_shard(store.shard_path(tmp_path / "h5", key), RESULTS, ATTRS)
    shards = _batch(tmp_path / "rec", {key: (RESULTS, ATTRS)})
    status, loc, attrs, data = shards.info(key, read=True)
    assert status == "valid" and loc is not None and loc.batched
    h5_attrs, h5_data = store.Shards(tmp_path / "h5").info(key, read=True)[2:]
    _same(h5_data, data)  # numpy scalars for 0-d numbers, str, object arrays of str, nested dicts
    assert attrs["sha256"] == h5_attrs["sha256"]  # the digest an HDF5 shard of the same content carries
    # gathered, both give the same group: values, attributes and digests
    for sub in ("h5", "rec"):
        store.gather(tmp_path / sub, [{"name": "t", "key": key}], {"study": "x"})
    with h5py.File(tmp_path / "h5" / store.STUDY_FILE) as a, h5py.File(tmp_path / "rec" / store.STUDY_FILE) as b:
        assert dict(a["tasks/t"].attrs).keys() == dict(b["tasks/t"].attrs).keys()
        assert a["tasks/t"].attrs["sha256"] == b["tasks/t"].attrs["sha256"] and a.attrs["sha256"] == b.attrs["sha256"]
    store.verify_study_file(tmp_path / "rec" / store.STUDY_FILE)
    a, b = store.datasets(tmp_path / "h5" / store.STUDY_FILE), store.datasets(tmp_path / "rec" / store.STUDY_FILE)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]), err_msg=k)


@pytest.mark.parametrize("results", [{"big": np.zeros(records.MAX_BYTES // 8 + 1)}, {"raw": b"bytes"},
                                     {"obj": np.array([1, "a"], dtype=object)}, {"s": np.array([b"x"])}])
def test_large_or_unusual_results_are_left_to_hdf5(results):
    assert records.encode(results, ATTRS) is None


def _edit(raw: bytes, change) -> bytes:
    rec = json.loads(raw)
    change(rec)
    return json.dumps(rec).encode()


def _number(rec: dict) -> None:
    rec["data"]["arr"]["b64"] = base64.b64encode(np.array([0, 1, 2, 3, 4, -4.0]).tobytes()).decode()


EDITS = {
    "a number": _number,
    "a string": lambda r: r["data"]["s"].update(str="hellp"),
    "a string of an array": lambda r: r["data"]["u"].update(strs=["a", "bce"]),
    "a shape": lambda r: r["data"]["arr"].update(shape=[3, 2]),
    "a dtype": lambda r: r["data"]["m"].update(dtype="<i2"),
    "a dataset removed": lambda r: r["data"].pop("f"),
    "a dataset renamed": lambda r: r["data"].update(f2=r["data"].pop("f")),
    "a dataset added": lambda r: r["data"].update(z=dict(r["data"]["f"])),
    "a nested value": lambda r: r["data"]["g"]["group"]["h"]["group"]["y"].update(
        b64=base64.b64encode(np.array([1, 2, 4]).tobytes()).decode()),
    "an attribute": lambda r: r["attrs"].update(seed=6),
    "the parameters": lambda r: r["attrs"].update(params='{"a": 2}'),
    "a checksum replaced by the edit's": lambda r: (_number(r), r["data"]["arr"].update(
        sha256=store.digest(np.array([0, 1, 2, 3, 4, -4.0]).reshape(2, 3)))),
    "not complete": lambda r: r.update(complete=False),
    "another task's key": lambda r: r["attrs"].update(task_key="x" * 24),
}


@pytest.mark.parametrize("what", sorted(EDITS))
def test_every_edit_in_place_is_corrupt(tmp_path, what):
    raw = records.encode(RESULTS, ATTRS)
    records.decode(raw, ATTRS["task_key"], read=True)  # the unedited record verifies
    with pytest.raises(store.CorruptFile):
        records.decode(_edit(raw, EDITS[what]), ATTRS["task_key"], read=True)


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b'{"format": "something else"}', b"\xff\xfe"])
def test_garbage_is_corrupt(raw):
    with pytest.raises(store.CorruptFile):
        records.decode(raw, "k")


def test_batch_files_resume_remove_and_prefer_a_valid_record(tmp_path):
    items = {f"k{i}": ({"x": float(i)}, {**ATTRS, "task_key": f"k{i}"}) for i in range(4)}
    shards = _batch(tmp_path, items)
    assert [p.suffix for p in shards.files()] == [".jsonl"]  # four tasks, one file
    assert all(shards.status(k) == "valid" for k in items) and shards.status("nope") == "missing"
    # damage k1's record in place: corrupt, and the others stay valid
    path = shards.files()[0]
    lines = path.read_bytes().splitlines(keepends=True)
    k, _, doc = lines[1].partition(b"\t")
    lines[1] = k + b"\t" + _edit(doc.rstrip(b"\n"), lambda r: r["data"]["x"].update(
        b64=base64.b64encode(np.float64(-1).tobytes()).decode())) + b"\n"
    path.write_bytes(b"".join(lines))
    shards = store.Shards(tmp_path)
    assert [shards.status(k) for k in items] == ["valid", "corrupt", "valid", "valid"]
    # a new record of k1 in a later batch: the valid one counts
    shards.add([("k1", records.encode({"x": 1.0}, {**ATTRS, "task_key": "k1"}))])
    shards = store.Shards(tmp_path)
    status, _, _, data = shards.info("k1", read=True)
    assert status == "valid" and data["x"] == 1.0
    # removing a key rewrites its batch files without it; the others keep their records
    shards.remove("k1")
    shards = store.Shards(tmp_path)
    assert shards.status("k1") == "missing" and [shards.status(k) for k in ("k0", "k2", "k3")] == ["valid"] * 3
    assert store.read_location(shards.info("k2")[1])[1]["x"] == 2.0
