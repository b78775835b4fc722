"""The suite workflow: parts validated by their own workflows, task names prefixed by part, dependencies handed
over under their own names, one study file, one report with every part's figures and tables."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import yaml

from olrg_hpc import cli
from olrg_hpc.tasks import dep_label, task_seed
from workflows import suite

CHAINS = {"workflow": "chain_sweep",
          "params": {"t_max": 1.0, "n_times": 11,
                     "sweeps": [{"model": "tfim", "n_sites": [6], "couplings": {"J": [1.0], "h": [1.0]},
                                 "methods": ["ed", "free_fermion"]}]}}


def _config(parts):
    return {"study": "suite-test", "workflow": "suite", "seed": 5, "params": {"parts": parts}}


def test_names_are_prefixed_and_dependencies_keep_their_names():
    params = suite.Params.model_validate({"parts": {"a": CHAINS, "b": CHAINS}})
    tasks = suite.build(params)
    names = [t.name for t in tasks]
    assert len(names) == len(set(names)) == 6 and all(n.split(":")[0] in "ab" for n in names)
    collect = {t.name: t for t in tasks}["b:collect-tfim"]
    assert all(d.startswith("b:") for d in collect.deps)
    assert dep_label("b:collect-tfim", "b:tfim-N6-h1-ed") == "tfim-N6-h1-ed"
    assert dep_label("collect-tfim", "tfim-N6-h1-ed") == "tfim-N6-h1-ed"


def test_two_parts_of_the_same_content_draw_different_streams():
    """Task seeds hash the full name, part prefix included: parts a and b build the same tasks with the same
    parameters, and every one of their tasks gets its own seed."""
    tasks = suite.build(suite.Params.model_validate({"parts": {"a": CHAINS, "b": CHAINS}}))
    by_name = {t.name: t for t in tasks}
    pairs = [(by_name[n], by_name["b:" + n.removeprefix("a:")]) for n in by_name if n.startswith("a:")]
    assert len(pairs) == 3 and all(ta.params == tb.params and ta.fn is tb.fn for ta, tb in pairs)
    seeds = [task_seed(5, t) for t in tasks]
    assert len(set(seeds)) == len(seeds)


@pytest.mark.parametrize("edit, words", [
    (lambda p: p["a"]["params"].update(n_tims=3), "params.parts.a.params.n_tims: unknown key (did you mean n_times?"),
    (lambda p: p["a"]["params"].update(t_max=-1.0), "params.parts.a.params.t_max:"),
    (lambda p: p["a"].update(workflow="chain_swep"), "params.parts.a: unknown workflow 'chain_swep'"),
    (lambda p: p.update({"x:y": CHAINS}), "part names must be non-empty without ':'"),
    (lambda p: p["a"].update(workflow="suite"), "a suite cannot contain a suite"),
])
def test_bad_parts_get_one_line(tmp_path, capsys, edit, words):
    parts = {"a": yaml.safe_load(yaml.safe_dump(CHAINS))}
    edit(parts)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_config(parts)))
    assert cli.main(["validate", str(tmp_path / "s.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


def test_two_parts_run_into_one_study_file_and_report(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(_config({"a": CHAINS, "b": CHAINS})))
    (tmp_path / "p.yaml").write_text("kind: local\nn_workers: 1\nthreads_per_worker: 2\ndashboard_address: ':0'\n")
    rc = cli.main(["run", str(tmp_path / "s.yaml"), "--cluster", str(tmp_path / "p.yaml"),
                   "--output", str(tmp_path / "st"), "--no-progress"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    with h5py.File(tmp_path / "st" / "study.h5") as f:
        # same inputs, same seed: the two parts computed the same curves, each in its own group
        a, b = f["tasks/a:collect-tfim"], f["tasks/b:collect-tfim"]
        np.testing.assert_array_equal(a["ed_vs_ff_max_diff"][()], b["ed_vs_ff_max_diff"][()])
        assert np.max(a["ed_vs_ff_max_diff"][()]) < 1e-10
    report = tmp_path / "st" / "report"
    assert (report / "a").is_dir() and (report / "b").is_dir()
    page = (report / "index.html").read_text()
    assert page.count("<img ") >= 2 and "a: " in page and "b: " in page
