"""The chain_sweep graph (points, collect steps, TOBC target tasks) and its report (what was computed, the verdict
of ED against free fermions)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from olrg_hpc import store
from olrg_hpc.report import write_report
from olrg_hpc.spins import freefermion
from olrg_hpc.spins.quench import quench_task
from olrg_hpc.spins.tobc import tobc_task
from olrg_hpc.tasks import NonFiniteResult, check_finite
from workflows import chain_sweep, get_workflow


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


def test_tobc_task_results_pass_the_finite_check_with_their_padding():
    """Order-k samples pad their times with NaN (not measured): declared, so the task's shard gets written."""
    tasks = chain_sweep.build(_params(tobc={"n_sites": [4], "max_order": 2}))
    task = next(t for t in tasks if t.name.startswith("tobc"))
    r = task.fn(**task.params, seed=1)
    assert np.isnan(r["times"]).any()
    check_finite(r, task.nan_ok)
    with pytest.raises(NonFiniteResult):
        check_finite({**r, "chi": np.full(3, np.nan)}, task.nan_ok)


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


def _study(tmp_path, params, edit=None):
    """A study file of the sweep's quench tasks, run in this process (the collect steps are not needed)."""
    study = tmp_path / "study"
    entries = []
    for t in chain_sweep.build(params):
        if t.fn is not quench_task:
            continue
        r = t.fn(**t.params)
        if edit:
            r = edit(t.name, r)
        store.write_shard(store.shard_path(study, t.name), r, {"task_key": t.name, "params": json.dumps(t.params)})
        entries.append({"name": t.name, "key": t.name})
    store.gather(study, entries, {"workflow": "chain_sweep"})
    return study


def test_report_opens_with_what_was_computed_and_the_verdict(tmp_path):
    out_dir, lines = write_report(_study(tmp_path, _params()), get_workflow)
    tables = json.loads((out_dir / "tables.json").read_text())
    assert [t["title"].split(":")[0] for t in tables[:3]] == ["What was computed", "Verdict", "Quench points"]
    computed = dict(tables[0]["rows"])
    assert computed["tfim: chain lengths N"] == "6, 8 (ED and free fermions)"
    assert computed["mixed_field_ising: couplings"] == "J = 1, h = 1, g = 0.5"  # defaults filled in
    verdict = {r[0]: r for r in tables[1]["rows"]}
    assert set(verdict) == {f"tfim N = {n}: J = 1, h = {h:g}" for n in (6, 8) for h in (0.5, 1.0)}
    assert all(r[3] == "agrees (< 1e-10)" and float(r[1]) < 1e-10 for r in verdict.values())
    assert sorted(p.name for p in out_dir.glob("*.png")) == ["quench-mixed_field_ising.png", "quench-tfim.png"]


def test_report_says_when_ed_and_free_fermions_disagree(tmp_path):
    def shift(name, r):  # a free-fermion curve off by 1e-6: above the 1e-10 the two exact methods must meet
        return {**r, "x": r["x"] + 1e-6} if name == "tfim-N6-J1-h0.5-free_fermion" else r

    out_dir, _ = write_report(_study(tmp_path, _params(), edit=shift), get_workflow)
    verdict = {r[0]: r[3] for r in json.loads((out_dir / "tables.json").read_text())[1]["rows"]}
    assert verdict["tfim N = 6: J = 1, h = 0.5"] == "DISAGREES (1e-06)"
    assert verdict["tfim N = 8: J = 1, h = 0.5"] == "agrees (< 1e-10)"
