"""The ensemble task: conventions of the stored fields, free-field values, pooling of replicas, HDF5 layout."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from olrg_hpc.lattice.ensemble import combine_replicas, hmc_ensemble

COMMON = dict(n_therm=20, n_traj=100, meas_every=1, tau=1.0, n_steps=10, integrator="leapfrog")


def test_beta_lambda_point_is_the_tutorial_point_rescaled():
    # docs/conventions.md: (m2 = -4, lam = 8) is beta = 0.5, lam = 0.5 with phi_bl = 2 phi_tut. Same seed, same
    # action after conversion: the chains are identical and only the stored field differs by the factor 2.
    a = hmc_ensemble({"L": 6, "m2": -4.0, "lam": 8.0}, n_chains=4, seed=3, **COMMON)
    b = hmc_ensemble({"L": 6, "beta": 0.5, "lam": 0.5}, n_chains=4, seed=3, **COMMON)
    np.testing.assert_allclose(b["configs"], 2 * a["configs"], rtol=1e-5)  # float32 storage
    np.testing.assert_allclose(b["M"], 2 * a["M"], rtol=1e-10)
    np.testing.assert_allclose(b["phi2"], 4 * a["phi2"], rtol=1e-10)
    np.testing.assert_array_equal(a["accepted"], b["accepted"])
    assert a["configs"].shape == (100, 4, 6, 6) and a["configs"].dtype == np.float32


def test_free_field_phi2_and_chi2_within_errors():
    # lam = 0, L = 8, m2 = 1: <phi^2> = 0.1270869988 and chi2 = 0.5 exactly (docs/conventions.md table); trajectory
    # length jittered, since a fixed tau = 1 leaves free modes with omega*tau ~ pi unmixed. 5 sigma: the
    # Gamma-method error itself is uncertain at this statistics.
    r = hmc_ensemble({"L": 8, "m2": 1.0, "lam": 0.0}, n_chains=32, seed=1, tau_jitter=0.5, store_configs=False,
                     **{**COMMON, "n_traj": 300})
    s = r["summary"]
    assert abs(s["phi2"] - 0.1270869988) < 5 * s["phi2_err"]
    assert abs(s["chi2"] - 0.5) < 5 * s["chi2_err"]
    assert abs(s["exp_minus_dH"] - 1.0) < 5 * s["exp_minus_dH_err"]
    assert "configs" not in r


def test_pooling_replicas_matches_one_big_ensemble():
    reps = {f"r{i}": hmc_ensemble({"L": 6, "m2": -4.0, "lam": 8.0}, n_chains=3, seed=10 + i, store_configs=False,
                                  **COMMON) for i in range(2)}
    pooled = combine_replicas(reps)
    assert pooled["M"].shape == (100, 6)
    np.testing.assert_array_equal(pooled["M"][:, 3:], reps["r1"]["M"])
    assert pooled["summary"]["abs_M"] == pytest.approx(np.mean(np.abs(pooled["M"])), rel=1e-12)
    # the pooled ensemble cost the compute of both replicas, each timed without its compilation
    assert all(r["run_seconds"] > 0 and r["compile_seconds"] >= 0 for r in reps.values())
    assert pooled["run_seconds"] == pytest.approx(reps["r0"]["run_seconds"] + reps["r1"]["run_seconds"], rel=1e-12)


def test_configs_stored_chunked_and_compressed(tmp_path):
    from olrg_hpc import store

    r = hmc_ensemble({"L": 8, "m2": -4.0, "lam": 8.0}, n_chains=2, seed=0, **COMMON)
    path = store.shard_path(tmp_path, "k")
    store.write_shard(path, r, {"task_key": "k"})
    with h5py.File(path) as f:
        d = f["configs"]
        assert d.compression == "gzip" and d.chunks is not None and d.dtype == np.float32
        np.testing.assert_array_equal(d[()], r["configs"])
        assert f["summary/chi2"][()] == r["summary"]["chi2"]
