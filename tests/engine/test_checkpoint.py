"""Checkpoints: pytrees with optimizer state and PRNG keys survive a round trip; a failed write keeps the
previous checkpoint; a checkpoint is refused by a model of another shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from olrg_hpc import checkpoint, store


def _state():
    params = {"dense": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}, "scale": jnp.float32(2.0)}
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    _, opt_state = opt.update(grads, opt_state, params)
    return params, opt_state, jax.random.key(7)


def test_round_trip(tmp_path):
    params, opt_state, key = _state()
    path = tmp_path / "ckpt.h5"
    checkpoint.save(path, {"params": params, "opt_state": opt_state, "key": key}, attrs={"step": 12},
                    arrays={"history": [3.0, 2.0, 1.5]})
    trees, attrs, arrays = checkpoint.load(path, {"params": params, "opt_state": opt_state, "key": key})
    assert attrs["step"] == 12
    np.testing.assert_array_equal(arrays["history"], [3.0, 2.0, 1.5])
    for a, b in zip(jax.tree_util.tree_leaves(trees["params"]), jax.tree_util.tree_leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(jax.tree_util.tree_leaves(trees["opt_state"]), jax.tree_util.tree_leaves(opt_state), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.normal(trees["key"], (4,)), jax.random.normal(key, (4,)))


def test_failed_write_keeps_previous(tmp_path):
    params, opt_state, key = _state()
    path = tmp_path / "ckpt.h5"
    checkpoint.save(path, {"params": params}, attrs={"step": 1})

    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        checkpoint.save(path, {"params": params}, attrs={"step": 2}, arrays={"bad": Boom()})
    assert checkpoint.load(path, {"params": params})[1]["step"] == 1


def test_structure_mismatch(tmp_path):
    params, _, _ = _state()
    checkpoint.save(tmp_path / "c.h5", {"params": params})
    with pytest.raises(ValueError, match="tree structure does not match"):
        checkpoint.load(tmp_path / "c.h5", {"params": {"other": jnp.zeros(2)}})


def test_parameters_in_a_task_result_are_the_checkpoint_leaves(tmp_path):
    """One format: a task returns its parameters as checkpoint.leaves, the shard stores them as the datasets a
    checkpoint group holds (same names, same bytes), and from_leaves rebuilds the tree in the template's dtypes."""
    import h5py

    params, _, _ = _state()
    shard = tmp_path / "k.h5"
    store.write_shard(shard, {"params": checkpoint.leaves(params)}, {"task_name": "train"})
    checkpoint.save(tmp_path / "c.h5", {"params": params})
    with h5py.File(shard) as fs, h5py.File(tmp_path / "c.h5") as fc:
        assert sorted(fs["params"]) == sorted(k for k in fc["params"]) == ["00000", "00001", "00002"]
        for name in fs["params"]:
            np.testing.assert_array_equal(fs["params"][name][()], fc["params"][name][()])
    back = checkpoint.from_leaves(store.read_shard(shard)["params"], params)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


@pytest.mark.parametrize(("stored", "message"), [
    (lambda lv: {k: v for k, v in lv.items() if k != "00002"}, "have 2 leaves, the model has 3"),
    (lambda lv: {**lv, "00001": np.zeros((3, 2))}, r"leaf 00001 has shape \(3, 2\), the model's has \(2, 3\)"),
    (lambda lv: {"00000": lv["00000"], "00001": lv["00001"], "x": lv["00002"]}, "have no leaf 00002"),
])
def test_leaves_of_another_model_are_refused(stored, message):
    params, _, _ = _state()
    with pytest.raises(ValueError, match=message):
        checkpoint.from_leaves(stored(checkpoint.leaves(params)), params)


@pytest.mark.parametrize("edit", ["leaf", "array", "attribute"])
def test_a_checkpoint_edited_in_place_is_refused(tmp_path, edit):
    """A checkpoint changed through h5py (still valid HDF5) fails its checksums on load instead of resuming
    training from numbers nobody computed."""
    import h5py

    params, opt_state, key = _state()
    path = tmp_path / "ckpt.h5"
    checkpoint.save(path, {"params": params, "key": key}, attrs={"step": 12}, arrays={"history": [3.0, 2.0]})
    with h5py.File(path, "a") as f:
        if edit == "leaf":
            f["params/00000"][0] = np.nan
        elif edit == "array":
            f["history"][1] = -4.0
        else:
            f.attrs["step"] = 13
    with pytest.raises(store.CorruptFile, match=f"checkpoint {path}: .*checksum mismatch"):
        checkpoint.load(path, {"params": params, "key": key})


def test_an_mpi_hmc_checkpoint_with_an_edited_history_is_refused(tmp_path):
    """The MPI HMC checkpoint (written through the store) is verified by read_checkpoint: a history value set to
    inf in place is a one-line UserError naming the file, not a resumed chain."""
    import h5py

    from olrg_hpc.errors import UserError
    from olrg_hpc.lattice import mpi_hmc

    n = 4
    hist = {k: (np.arange(n) % 2 == 0) if k == "accepted" else np.linspace(0.1, 0.4, n) for k in mpi_hmc._HISTORY}
    path = tmp_path / "c.h5"
    mpi_hmc.write_checkpoint(str(path), np.zeros((4, 4)), n, {"seed": 3, "L": [4, 4]}, hist)
    assert mpi_hmc.read_checkpoint(str(path))["trajectory"] == n
    with h5py.File(path, "a") as f:
        f["dH"][2] = np.inf
    with pytest.raises(UserError) as exc:
        mpi_hmc.read_checkpoint(str(path))
    msg = str(exc.value)
    assert str(path) in msg and "fails its checksums" in msg and "/dH: checksum mismatch" in msg and "\n" not in msg
