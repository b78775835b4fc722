"""The phi4_ensembles report: what was computed, the verdict per point against the exact answers (<exp(-dH)> = 1,
the free field's <phi^2> and chi2 at lam = 0) and the run length, histograms per point."""

from __future__ import annotations

import json

import pytest

from olrg_hpc import store
from olrg_hpc.lattice import ensemble
from olrg_hpc.report import write_report
from workflows import get_workflow, phi4_ensembles

SETTINGS = {"n_traj": 1000, "meas_every": 1, "n_therm": 100}


def _summary(**over):
    s = {"exp_minus_dH": 1.0, "exp_minus_dH_err": 0.01, "phi2": 0.1270869988, "phi2_err": 0.001, "chi2": 0.5,
         "chi2_err": 0.01, "tau_int_M2": 2.0, "tau_int_M2_err": 0.2}
    return {**s, **over}


def test_free_field_exact_values_in_the_points_convention():
    """lam = 0: the tutorial values of docs/conventions.md (L = 8, m2 = 1), times c^2 = 2/beta for a beta point
    (beta = 0.4 is tutorial m2 = 2/beta - 4 = 1); none for an interacting or an unstable free point."""
    assert phi4_ensembles.free_field_exact({"L": 8, "m2": 1.0, "lam": 0.0}) == pytest.approx(
        {"phi2": 0.1270869988, "chi2": 0.5}, abs=1e-10)
    assert phi4_ensembles.free_field_exact({"L": 8, "beta": 0.4, "lam": 0.0}) == pytest.approx(
        {"phi2": 5 * 0.1270869988, "chi2": 2.5}, abs=1e-9)
    assert phi4_ensembles.free_field_exact({"L": 8, "m2": -4.0, "lam": 8.0}) is None
    assert phi4_ensembles.free_field_exact({"L": 8, "m2": -1.0, "lam": 0.0}) is None


@pytest.mark.parametrize(("over", "word"), [
    ({}, "agrees: max |pull| 0.0 sigma"),
    ({"chi2": 0.5 + 2.5 * 0.01}, "tension (2-3 sigma): max |pull| 2.5 sigma (chi2)"),
    ({"phi2": 0.1270869988 - 0.004}, "disagrees: max |pull| 4.0 sigma (<phi^2>)"),
    ({"exp_minus_dH": 0.95}, "disagrees: max |pull| 5.0 sigma (<exp(-dH)>)"),
])
def test_verdict_pulls_against_the_exact_answers(over, word):
    exact = {"phi2": 0.1270869988, "chi2": 0.5}
    cells = phi4_ensembles._verdict(_summary(**over), exact, SETTINGS)
    assert cells[3].startswith(word), cells
    assert cells[5] == "long enough (500 tau per chain, 50 of thermalisation)"


def test_verdict_of_an_interacting_point_and_a_short_run():
    cells = phi4_ensembles._verdict(_summary(tau_int_M2=20.0), None, SETTINGS)
    assert cells[1:3] == ["-", "-"] and cells[3].endswith("(<exp(-dH)>)")
    assert cells[5] == "too short for its errors (50 tau per chain, 5 of thermalisation)"


def test_report_from_a_study_file(tmp_path):
    params = phi4_ensembles.Params.model_validate({
        "points": [{"L": 4, "m2": 1.0, "lam": 0.0}, {"L": 4, "beta": 0.5, "lam": 0.5}], "replicas": 2,
        "n_chains": 2, "n_therm": 10, "n_traj": 20, "store_configs": False, "hmc": {"tau_jitter": 0.5}})
    study = tmp_path / "study"
    results, entries = {}, []
    for i, t in enumerate(phi4_ensembles.build(params)):
        r = t.fn(**t.params, seed=i) if t.fn is ensemble.hmc_ensemble else t.fn({d: results[d] for d in t.deps})
        results[t.name] = r
        store.write_shard(store.shard_path(study, t.name), r, {"task_key": t.name, "params": json.dumps(t.params)})
        entries.append({"name": t.name, "key": t.name})
    store.gather(study, entries, {"workflow": "phi4_ensembles"})
    out_dir, _ = write_report(study, get_workflow)
    tables = json.loads((out_dir / "tables.json").read_text())
    assert [t["title"].split(" ")[0] for t in tables[:3]] == ["What", "Verdict", "HMC"]
    assert dict(tables[0]["rows"])["points"] == "L = 4: beta = 0.5, lam = 0.5; L = 4: m2 = 1, lam = 0"
    verdict = {r[0]: r for r in tables[1]["rows"]}
    exact = phi4_ensembles.free_field_exact({"L": 4, "m2": 1.0, "lam": 0.0})
    assert verdict["L = 4: m2 = 1, lam = 0"][3].endswith(f" vs {exact['phi2']:.4g}")
    assert verdict["L = 4: m2 = 1, lam = 0"][4].endswith(" vs 0.5")
    assert verdict["L = 4: beta = 0.5, lam = 0.5"][3:5] == ["-", "-"]
    assert [p.name for p in out_dir.glob("*.png")] == ["magnetization_histograms.png"]
