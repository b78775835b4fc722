"""Training: optax step, 1 vs 8 devices, gradual schedule, atomic HDF5 checkpoints and exact resume."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from olrg_hpc import checkpoint
from olrg_hpc.olrg import loss as L
from olrg_hpc.olrg import maps as M
from olrg_hpc.olrg import train as T
from olrg_hpc.spins import models

CFG = L.LossConfig(model=models.tfim(8), n0=2, n_final=4, T=1.0, K=2, n_per_order=6)


def test_one_vs_eight_devices_same_trajectory() -> None:
    if len(jax.devices()) < 8:
        pytest.skip("needs 8 (emulated) devices; tests/conftest.py sets XLA_FLAGS")
    tc = T.TrainConfig(steps=3, lr=5e-2, sync_every=2, seed=3, fast_compile=True)
    lin = M.LinearIsometryMap()
    h1 = T.Trainer(lin, CFG, tc, devices=jax.devices()[:1]).run().history
    tr8 = T.Trainer(lin, CFG, tc)
    assert tr8.n_dev == 8
    b = tr8.batch_for(0)
    for blk in b.blocks:  # every order's samples spread over all devices
        assert blk.Tf.sharding.spec == jax.sharding.PartitionSpec("data")
        assert blk.exact.sharding.spec == jax.sharding.PartitionSpec(None, "data")
        assert len(blk.Tf.sharding.device_set) == 8 and blk.Tf.shape[0] % 8 == 0
    h8 = tr8.run().history
    assert len(h1) == len(h8) == 3
    np.testing.assert_allclose(h8, h1, rtol=1e-10)
    assert h1[-1] < h1[0]


def test_gradual_checkpoint_resume_matches_uninterrupted(tmp_path: os.PathLike) -> None:
    tc = T.TrainConfig(
        steps=4,
        lr=5e-2,
        sync_every=2,
        seed=1,
        schedule="gradual",
        optimizer="adamw",
        lr_schedule="cosine",
        fast_compile=True,
    )
    lin = M.LinearIsometryMap()
    devs = jax.devices()[:1]
    tr = T.Trainer(lin, CFG, tc, devices=devs)
    assert tr.n_stages == 2 and tr.steps_per_stage == 2
    assert tr.stage_cfg(0).n_final == 3 and tr.stage_cfg(1).n_final == 4
    full = tr.run()
    # optimizer reset at the stage start: adam's step count restarted at step 2
    counts = [int(x) for x in jax.tree_util.tree_leaves(full.opt_state) if np.ndim(x) == 0 and "int" in str(x.dtype)]
    assert counts and max(counts) == 2
    ck = tmp_path / "ck.h5"
    part = T.Trainer(lin, CFG, tc, devices=devs).run(steps=3, checkpoint=ck)
    assert part.step == 3 and ck.exists() and not (tmp_path / "ck.h5.tmp").exists()
    resumed = T.Trainer(lin, CFG, tc, devices=devs).resume(ck, steps=4)
    assert resumed.step == 4
    np.testing.assert_allclose(resumed.history, full.history, rtol=1e-12)
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params), jax.tree_util.tree_leaves(full.params), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
    st = T.load_checkpoint(ck, tr.initial_state())
    assert st.step == 4 and len(st.history) == 4


def test_checkpoint_rejects_wrong_structure(tmp_path: os.PathLike) -> None:
    st = T.TrainState(params={"M": np.arange(6.0).reshape(2, 3)}, opt_state=(np.zeros(2),), step=1, history=[1.0])
    T.save_checkpoint(tmp_path / "a.h5", st, meta={"lr": 0.1})
    # the shared checkpoint format (olrg_hpc.checkpoint) reads it back
    trees, attrs, arrays = checkpoint.load(tmp_path / "a.h5", {"params": st.params, "opt_state": st.opt_state})
    np.testing.assert_array_equal(trees["params"]["M"], st.params["M"])
    assert int(attrs["step"]) == 1 and attrs["meta_lr"] == "0.1" and list(arrays["history"]) == [1.0]
    with pytest.raises(ValueError):
        T.load_checkpoint(tmp_path / "a.h5", T.TrainState(params={"N": np.zeros((2, 3))}, opt_state=(np.zeros(2),)))


def test_make_optimizer_variants() -> None:
    for kw in ({"optimizer": "adamw", "lr_schedule": "exponential", "warmup": 2}, {"clip": 0.0}):
        opt = T.make_optimizer(T.TrainConfig(**kw))
        st = opt.init({"a": np.ones(3)})
        up, _ = opt.update({"a": np.ones(3)}, st, {"a": np.ones(3)})
        assert np.all(np.isfinite(np.asarray(up["a"])))
    with pytest.raises(ValueError):
        T.make_optimizer(T.TrainConfig(optimizer="sgd"))
