"""The chain_sweep graph: points, collect steps, TOBC target tasks."""

from __future__ import annotations

import numpy as np

from olrg_hpc.spins import freefermion
from olrg_hpc.spins.quench import quench_task
from olrg_hpc.spins.tobc import tobc_task
from workflows import chain_sweep


def _params(**extra):
    return chain_sweep.Params.model_validate({
        "t_max": 1.0, "n_times": 11,
        "sweeps": [{"model": "tfim", "n_sites": [6, 8], "couplings": {"J": [1.0], "h": [0.5, 1.0]},
                    "methods": ["ed", "free_fermion"]},
                   {"model": "mixed_field_ising", "n_sites": [6], "couplings": {"g": [0.5]}}],
        **extra})


def test_graph_shape():
    tasks = chain_sweep.build(_params(tobc={"n_sites": [4, 6], "max_order": 2}))
    names = [t.name for t in tasks]
    assert sum(n.startswith("tfim-") for n in names) == 8 and "mixed_field_ising-N6-g0.5-ed" in names
    assert sum(n.startswith("tobc-") for n in names) == 2 * 2 + 2  # (tfim h=0.5, h=1, mfi) x (n=4, 6)
    collect = {t.name: t for t in tasks}["collect-tfim"]
    assert len(collect.deps) == 8 and not any(d.startswith("tobc") for d in collect.deps)


def test_tobc_task_order0_is_the_expectation():
    r = tobc_task("tfim", 6, {"J": 1.0, "h": 1.0}, max_order=2, n_per_order=5, T=0.7, seed=3)
    order0 = r["chi"][r["orders"] == 0]
    np.testing.assert_allclose(order0.real, r["expectation_T"], atol=1e-12)
    # <Z_1 Z_2>(T) of a 6-site block from |0...0>: light cone not yet at the edge at T = 0.7, so it equals
    # the infinite-chain value to ~1e-6 (free fermions at N = 64)
    ff = freefermion.tfim_quench(64, 1.0, 1.0, [0.7], observables=("zz",), sites=[0])["zz"][0, 0]
    assert abs(r["expectation_T"] - ff) < 1e-4


def test_quench_task_energy_is_conserved():
    r = quench_task("mixed_field_ising", 8, {"J": 1.0, "h": 1.0, "g": 0.5}, "ed", 2.0, 21)
    # |0...0> has <H> = J (N-1) + g N = 7 + 4 exactly; expm_multiply keeps it to ~1e-12
    np.testing.assert_allclose(r["energy"], 11.0, atol=1e-10)
