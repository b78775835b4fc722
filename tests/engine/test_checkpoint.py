"""Checkpoints: pytrees with optimizer state and PRNG keys survive a round trip; a failed write keeps the
previous checkpoint; a checkpoint is refused by a model of another shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from olrg_hpc import checkpoint


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
