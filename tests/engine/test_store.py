"""The HDF5 store: atomic shards, checksums, validity checks, the study folder's lock, a study file readable by
plain h5py.

The checksum tests edit a valid shard the way an adversarial user (or a flaky disk) would: through h5py, which
keeps the file valid HDF5 and would recompute HDF5's own fletcher32 checksum, and by flipping raw bytes.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from olrg_hpc import store
from olrg_hpc.errors import UserError


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


def test_clean_temporaries_removes_only_those_whose_writer_is_gone(tmp_path):
    """A temporary file is its writer's: removed when that process is gone (this host) or nobody wrote to it for
    an hour (another host); kept while a live process of this host, or a recent writer elsewhere, may own it."""
    import os
    import socket
    import subprocess
    import time

    shards = tmp_path / store.SHARDS
    shards.mkdir()
    host = socket.gethostname()
    live = subprocess.Popen(["sleep", "60"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        names = {"dead": f".a.h5.tmp-{host}-{dead.pid}-00000000", "live": f".b.h5.tmp-{host}-{live.pid}-00000000",
                 "mine": f".c.h5.tmp-{host}-{os.getpid()}-00000000", "far-new": ".d.h5.tmp-elsewhere-1-00000000",
                 "far-old": ".e.h5.tmp-elsewhere-1-00000000", "root-dead": f".study.h5.tmp-{host}-{dead.pid}-0"}
        for what, name in names.items():
            (tmp_path if what.startswith("root") else shards).joinpath(name).write_bytes(b"partial")
        old = time.time() - 2 * store.STALE_TMP_S
        os.utime(shards / names["far-old"], (old, old))
        assert store.clean_temporaries(tmp_path) == 3
        left = {p.name for p in [*shards.iterdir(), *tmp_path.glob(".*.tmp-*")]}
        assert left == {names["live"], names["mine"], names["far-new"]}
    finally:
        live.kill()
        live.wait()


def _shard(tmp_path, results=None):
    path = store.shard_path(tmp_path, "key1")
    rng = np.random.default_rng(1)
    results = results or {"corr": rng.uniform(0.1, 1.0, size=20), "energy": -3.25, "big": rng.normal(size=(64, 64)),
                          "nested": {"times": np.linspace(0, 1, 5), "label": "tfim"}}
    store.write_shard(path, results, {"task_key": "key1", "seed": 11, "params": {"n": 4}})
    assert store.shard_status(path, "key1") == "valid"
    return path


def _flip_bit(f):
    a = f["corr"][()]
    bits = a.view(np.uint64)
    bits[3] ^= np.uint64(1) << np.uint64(20)  # a mantissa bit: a plausible number, off in the 10th digit
    f["corr"][...] = bits.view(np.float64)


IN_PLACE = {
    "value set to inf": lambda f: f["corr"].__setitem__(2, np.inf),
    "one bit flipped": _flip_bit,
    "correlator of -4": lambda f: f["corr"].__setitem__(0, -4.0),
    "scalar changed": lambda f: f["energy"].__setitem__((), -3.0),
    "compressed array edited": lambda f: f["big"].__setitem__((5, 5), 0.0),
    "nested string edited": lambda f: f["nested/label"].__setitem__((), "xxz"),
    "dataset removed": lambda f: f.__delitem__("energy"),
    "dataset added": lambda f: f.create_dataset("extra", data=1.0),
    "dataset renamed": lambda f: f.move("energy", "energies"),
    "provenance attribute edited": lambda f: f.attrs.__setitem__("seed", 12),
    "checksum replaced with the edit's": lambda f: (f["corr"].__setitem__(0, -4.0),
                                                   f["corr"].attrs.__setitem__("sha256", store.digest(f["corr"][()]))),
}


@pytest.mark.parametrize("edit", IN_PLACE, ids=list(IN_PLACE))
def test_in_place_edits_through_h5py_are_corrupt(tmp_path, edit):
    """Each edit leaves valid HDF5 (and would pass HDF5's fletcher32, which h5py recomputes on write)."""
    path = _shard(tmp_path)
    with h5py.File(path, "a") as f:
        IN_PLACE[edit](f)
    assert store.shard_status(path, "key1") == "corrupt"
    with pytest.raises(store.CorruptFile, match=str(path)):
        store.read_shard(path, key="key1")


@pytest.mark.parametrize("where", ["corr", "big"])
def test_raw_byte_damage_is_corrupt(tmp_path, where):
    """One flipped bit in the file, inside a contiguous dataset or a gzip-compressed chunk."""
    path = _shard(tmp_path)
    with h5py.File(path, "r") as f:
        ds = f[where]
        offset = ds.id.get_offset() if ds.chunks is None else ds.id.get_chunk_info(0).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 17] ^= 0x08
    path.write_bytes(bytes(raw))
    assert store.shard_status(path, "key1") == "corrupt"


def test_every_dataset_and_group_carries_a_checksum_readable_without_olrg_hpc(tmp_path):
    """The digest is SHA-256 over a documented byte string: recomputable with hashlib and numpy alone."""
    import hashlib

    path = _shard(tmp_path)
    with h5py.File(path, "r") as f:
        seen = []
        f.visititems(lambda n, o: seen.append(n) if isinstance(o, h5py.Dataset) and "sha256" in o.attrs else None)
        assert sorted(seen) == ["big", "corr", "energy", "nested/label", "nested/times"]
        assert len(f.attrs["sha256"]) == 64
        a = f["corr"][()]
        h = hashlib.sha256(f"f{a.shape}".encode() + a.dtype.str.encode() + a.tobytes()).hexdigest()
        assert f["corr"].attrs["sha256"] == h


def test_gather_refuses_a_corrupt_shard_and_the_study_file_is_checksummed(tmp_path):
    entries = []
    for i in range(3):
        key = f"k{i}"
        store.write_shard(store.shard_path(tmp_path, key), {"value": np.arange(3.0) + i}, {"task_key": key})
        entries.append({"name": f"task-{i}", "key": key})
    out = store.gather(tmp_path, entries, {"study": "s"})
    store.verify_study_file(out)
    with h5py.File(out, "a") as f:
        f["tasks/task-1/value"][1] = 7.0
    with pytest.raises(UserError, match="corrupt.*tasks/task-1/value: checksum mismatch"):
        store.verify_study_file(out)
    with h5py.File(store.shard_path(tmp_path, "k2"), "a") as f:
        f["value"][0] = np.inf
    with pytest.raises(store.CorruptFile) as exc:
        store.gather(tmp_path, entries, {"study": "s"})
    assert exc.value.path == store.shard_path(tmp_path, "k2")


def test_study_lock_refuses_a_second_holder_naming_host_and_pid(tmp_path):
    """The lock is a POSIX (fcntl) lock: a second process is refused at once, with who holds it; the lock goes
    with its holder, however it ends (here: SIGKILL)."""
    import socket
    import subprocess
    import sys
    import time

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom olrg_hpc import store\n"
                               f"with store.study_lock({str(tmp_path)!r}):\n print('held', flush=True)\n"
                               " time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError) as exc:
            with store.study_lock(tmp_path):
                pass
        msg = str(exc.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in msg and "in use by another olrg-hpc run" in msg
        assert "\n" not in msg
    finally:
        holder.kill()
        holder.wait()
    t0 = time.monotonic()
    with store.study_lock(tmp_path):  # free again once the holder is gone
        with store.study_lock(tmp_path):  # re-entrant in one process
            pass
    assert time.monotonic() - t0 < 5


def test_check_folder_refuses_another_study(tmp_path):
    store.check_folder(tmp_path, "a")  # empty: fine
    (tmp_path / store.CONFIG).write_text("study: a\nworkflow: w\n")
    store.check_folder(tmp_path, "a")
    with pytest.raises(UserError, match="holds another study \\('a'"):
        store.check_folder(tmp_path, "b")


@pytest.mark.parametrize("case", ["a file", "under a file"])
def test_check_writable_is_one_line(tmp_path, case):
    (tmp_path / "f").write_text("x")
    target = tmp_path / "f" if case == "a file" else tmp_path / "f" / "sub"
    with pytest.raises(UserError, match="not a folder|is a file"):
        store.check_writable(target)


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
