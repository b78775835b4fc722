"""The olrg_study graph end to end at toy size: train a linear map, evaluate it and NRG, compare."""

from __future__ import annotations

import json

import numpy as np
import pytest

from olrg_hpc.olrg import pipeline
from workflows import olrg_study


def test_graph_shape():
    p = olrg_study.Params.model_validate({"n0": [2, 3], "maps": ["nrg", "linear"], "n_final": 6, "N": 8})
    names = [t.name for t in olrg_study.build(p)]
    assert names.count("compare") == 1
    assert {"train-linear-D4", "train-linear-D8", "eval-nrg-D4", "eval-linear-D8"} <= set(names)
    assert not any(n.startswith("train-nrg") for n in names)  # fixed maps are not trained


@pytest.mark.parametrize("opts", [{}, {"complex_": True, "keep_state": True}])
def test_train_then_evaluate_round_trips_params(opts):
    common = {"model": "tfim", "couplings": {"J": 1.0, "h": 1.0}, "map_name": "linear", "map_options": opts, "n0": 2,
              "n_final": 4}
    trained = pipeline.train_map_task(**common, T=0.5, K=1, n_per_order=4, steps=3, lr=1e-2, schedule="together",
                                      seed=1)
    assert trained["loss"].shape == (3,) and np.all(np.isfinite(trained["loss"]))
    params = pipeline.params_from_leaves("linear", opts, 2, 4, trained["params"])
    assert sorted(params) == (["M", "Mi"] if opts else ["M"])  # a complex map keeps its imaginary part
    ev = pipeline.evaluate_map_task(**common, N=5, t_max=0.5, n_times=6, deps={"train": trained})
    assert ev["D"] == 4 and np.all(np.isfinite(ev["approx"])) and ev["train_seconds"] > 0
    ident = pipeline.evaluate_map_task(**{**common, "map_name": "identity", "map_options": {}}, N=5, t_max=0.5,
                                       n_times=6)
    assert np.max(ident["abs_err"]) < 1e-10  # no compression: exact
    table = pipeline.compare_maps({"eval-linear-D4": ev, "eval-identity-D4": ident}, windows=(0.5,))
    assert table["max_abs_err_t0.5"][0] < 1e-10


def test_enlarge_reaches_training_and_evaluation():
    """``training.enlarge`` goes to the learned map's training and evaluation (fixed maps are evaluated plainly), and
    a decoupling map trained with it is evaluated on its last trained block plus the exact site: N = 7 and N = 5
    give the same curve (the chain is cut after n_final + 1 = 5 sites)."""
    p = olrg_study.Params.model_validate({"n0": [2], "maps": ["nrg", "linear"], "n_final": 4, "N": 7,
                                          "training": {"enlarge": 1, "n_order0": 30}})
    by = {t.name: t for t in olrg_study.build(p)}
    assert by["train-linear-D4"].params["enlarge"] == 1 and by["eval-linear-D4"].params["enlarge"] == 1
    assert by["train-linear-D4"].params["n_order0"] == 30
    assert by["train-linear-D4"].params["T"] == pytest.approx(2.2)  # default: 1.1 t_max, a margin past the window
    p = olrg_study.Params.model_validate({"n0": [2], "maps": ["linear"], "n_final": 4, "training": {"T": 1.5}})
    assert olrg_study.build(p)[0].params["T"] == 1.5
    assert by["eval-nrg-D4"].params["enlarge"] == 0
    common = {"model": "tfim", "couplings": {"J": 1.0, "h": 1.0}, "map_name": "linear",
              "map_options": {"beyond": "decouple"}, "n0": 2, "n_final": 4}
    trained = pipeline.train_map_task(**common, T=0.5, K=1, n_per_order=4, steps=2, lr=1e-2, schedule="together",
                                      seed=1, enlarge=1)
    ev7, ev5 = (pipeline.evaluate_map_task(**common, N=n, t_max=0.5, n_times=6, enlarge=1, deps={"t": trained})
                for n in (7, 5))
    np.testing.assert_allclose(ev7["approx"], ev5["approx"], atol=1e-12)


def test_tebd_baseline_is_a_study_map():
    """``tebd`` is evaluated like a fixed map (no training task) at chi = D unless map_options says otherwise; at
    N = 6 chi = 8 is exact up to the Trotter error (1e-4 is a hundred times that on t <= 0.5), and the study refuses
    times off the TEBD step grid and unknown options with one message."""
    p = olrg_study.Params.model_validate({"n0": [2], "maps": ["tebd", "linear"], "n_final": 4, "N": 6})
    names = [t.name for t in olrg_study.build(p)]
    assert "eval-tebd-D4" in names and not any(n.startswith("train-tebd") for n in names)
    common = {"model": "tfim", "couplings": {"J": 1.0, "h": 1.0}, "map_name": "tebd", "n0": 2, "n_final": 4, "N": 6,
              "t_max": 0.5, "n_times": 6}
    exact = pipeline.evaluate_map_task(**common, map_options={"chi": 8})
    assert exact["chi"] == 8 and np.max(exact["abs_err"]) < 1e-4
    assert pipeline.evaluate_map_task(**common, map_options={})["chi"] == 4
    with pytest.raises(ValueError, match="multiple of it"):
        olrg_study.Params.model_validate({"maps": ["tebd"], "t_max": 1.0, "n_times": 8})
    with pytest.raises(ValueError, match="takes chi, dt and order"):
        olrg_study.Params.model_validate({"maps": ["tebd"], "map_options": {"tebd": {"chii": 8}}})


@pytest.mark.parametrize("opts,msg", [
    ({"linear": {"complx": True}}, r"map_options.linear: unknown option\(s\) \['complx'\]; LinearIsometryMap takes"),
    ({"linaer": {}}, "map_options.linaer: unknown map; known: identity"),
    ({"linear": {"beyond": "drop"}}, "map_options.linear: beyond must be 'reuse' or 'decouple'"),
])
def test_map_options_are_checked_at_validation(opts, msg):
    """A typo in a map's options fails ``validate`` with the key at fault, not a training task an hour in."""
    with pytest.raises(ValueError, match=msg):
        olrg_study.Params.model_validate({"maps": ["linear"], "map_options": opts})
    ok = olrg_study.Params.model_validate({"maps": ["linear"], "map_options": {"linear": {"complex_": True}}})
    assert ok.map_options["linear"] == {"complex_": True}


def test_long_window_graph_sweeps_points_seeds_and_variants():
    """Swept couplings and seeds give one task set each; exact targets are one task per block up to exact_max_n,
    shared by every D of a seed; blocks past it are trained on consistency alone; the exact block, TEBD chis and a
    variant (the map cut after the exact blocks) are evaluations of their own; n_final: light_cone is resolved per
    point from chains of at most 12 sites."""
    p = olrg_study.Params.model_validate({
        "n0": [2, 3], "couplings": {"J": 1.0, "h": [0.5, 1.0]}, "seeds": [0, 1], "n_final": "light_cone",
        "N": 64, "t_max": 4.0, "n_times": 81, "maps": ["exact_block", "tebd", "linear", "cut"],
        "variants": {"cut": {"map": "linear", "n_final": 7, "options": {"beyond": "decouple"},
                             "training": {"environments": [], "steps": 7}}},
        "map_options": {"linear": {"beyond": "decouple"}}, "tebd_chis": [16], "windows": [2, 4],
        "training": {"exact_max_n": 7, "environments": [1, 2, "latest"]}})
    by = {t.name: t for t in olrg_study.build(p)}
    for h in ("0.5", "1"):
        n_lc = by[f"train-linear-D4-h{h}-s0"].params["n_final"]
        assert n_lc == {"0.5": 11, "1": 14}[h]  # light_cone_sites: the h = 1 light cone is faster
        assert by[f"eval-linear-D4-h{h}-s0"].params["n_final"] == n_lc
        for s in (0, 1):
            tr = by[f"train-linear-D8-h{h}-s{s}"]
            assert tr.params["exact_max_n"] == 7 and tr.params["consistency"] == "local"
            assert tr.params["batch_seed"] == s
            assert set(tr.deps) == {f"targets-n{n}-h{h}-s{s}" for n in (4, 5, 6, 7)}  # blocks of n0 = 3
            assert set(by[f"train-linear-D4-h{h}-s{s}"].deps) == set(tr.deps) | {f"targets-n3-h{h}-s{s}"}
            cut = by[f"train-cut-D8-h{h}-s{s}"].params
            assert cut["n_final"] == 7 and cut["environments"] == [] and cut["steps"] == 7  # its own training
            assert tr.params["environments"] == [1, 2, "latest"] and tr.params["steps"] == 300
        assert by[f"targets-n5-h{h}-s1"].params["n_sites"] == 5
        assert f"eval-exact_block-n7-h{h}" in by and f"eval-tebd-chi16-h{h}" in by
        assert f"eval-tebd-D8-h{h}" in by and f"eval-tebd-D8-h{h}-s1" not in by  # TEBD does not depend on the seed
    assert not any(n.startswith("targets-n8") for n in by)  # never past exact_max_n
    assert by["compare"].params["windows"] == [2, 4]
    with pytest.raises(ValueError, match="neither a map"):
        olrg_study.Params.model_validate({"maps": ["lineer"]})
    with pytest.raises(ValueError, match="windows"):
        olrg_study.Params.model_validate({"maps": ["nrg"], "windows": [3.0]})
    with pytest.raises(ValueError, match="another label"):
        olrg_study.Params.model_validate({"maps": ["nrg"], "variants": {"nrg": {"map": "dmrg"}}})
    with pytest.raises(ValueError, match="shared by the study"):  # sampling fields: one exact target set for all
        olrg_study.Params.model_validate({"maps": ["v"], "variants": {"v": {"map": "linear", "training": {"T": 2}}}})
    with pytest.raises(ValueError, match="environments"):
        olrg_study.Params.model_validate({"maps": ["v"], "variants": {"v": {"map": "linear",
                                                                             "training": {"environments": [9]}}}})


def test_exact_target_tasks_are_the_training_batch_targets(tmp_path):
    """An exact-target task computes, for the samples a training task with the same fields and batch seed draws,
    the targets the training would compute itself (identical numbers), so training on targets from tasks is
    training on the same loss; the exact block alone is the small solver's curve; a trained map stored in a study
    file is re-evaluated on another grid by replay with the numbers of evaluate_map_task (same code path)."""
    import h5py

    from olrg_hpc.olrg import loss as L
    from olrg_hpc.olrg.replay import block_errors, replay_curve
    from olrg_hpc.spins.models import make_model

    common = {"model": "tfim", "couplings": {"J": 1.0, "h": 1.0}}
    samp = {"T": 1.0, "K": 1, "n_per_order": 3, "n_order0": 5}
    tasks = {f"targets-n{n}": pipeline.exact_targets_task(**common, n_sites=n, **samp, batch_seed=4) for n in (4, 5)}
    cfg = L.LossConfig(model=make_model("tfim", 5, J=1.0, h=1.0), n0=3, n_final=5, T=1.0, K=1, n_per_order=3,
                       n_order0=5, sample_T=True, exact_weight=1.0, exact_max_n=5, weights="delta", delta=0.02)
    own = L.make_batch(cfg, seed=4)
    given = L.make_batch(cfg, seed=4, exact={d["n_sites"]: d["chi"] for d in tasks.values()})
    for a, b in zip(own.blocks, given.blocks, strict=True):
        np.testing.assert_array_equal(a.exact, b.exact)
        assert np.abs(a.exact).max() > 0.1
    with pytest.raises(ValueError, match="shape"):
        L.make_batch(cfg, seed=4, exact={4: np.zeros(3)})
    opts = {"complex_": True, "keep_state": True, "beyond": "decouple"}
    trained = pipeline.train_map_task(**common, map_name="linear", map_options=opts, n0=3, n_final=6, **samp,
                                      steps=3, lr=1e-2, schedule="together", seed=99, batch_seed=4, exact_max_n=5,
                                      consistency="local", deps=tasks)
    assert trained["loss"].shape == (3,) and np.all(np.isfinite(trained["loss"]))
    block = pipeline.evaluate_map_task(**common, map_name="exact_block", map_options={}, n0=5, n_final=5, N=12,
                                       t_max=2.0, n_times=21)
    assert block["abs_err"][-1] > 1e-3 and block["abs_err"][1] < 1e-8  # 5 sites: exact early, off by t = 2
    args = {**common, "map_name": "linear", "map_options": opts, "n0": 3, "n_final": 6}
    ev = pipeline.evaluate_map_task(**args, N=12, t_max=1.5, n_times=7, deps={"t": trained})
    study = tmp_path / "study.h5"
    with h5py.File(study, "w") as f:
        g = f.create_group("tasks/train-linear-D8")
        g.attrs["params"] = json.dumps({**args, **samp})
        for k, v in trained["params"].items():
            g[f"params/{k}"] = v
    r = replay_curve(study, "train-linear-D8", np.linspace(0.0, 1.5, 7), N=12)
    np.testing.assert_allclose(r["approx"], ev["approx"], atol=1e-12)
    # per block: the last block's own curve is the evaluation on a chain of n_final sites (same block, nothing cut)
    blocks = block_errors(study, "train-linear-D8", np.linspace(0.0, 1.5, 7))
    ev6 = pipeline.evaluate_map_task(**args, N=6, t_max=1.5, n_times=7, deps={"t": trained})
    assert blocks["n"].tolist() == [4, 5, 6] and np.all(blocks["max_abs_err"] > 0)
    np.testing.assert_allclose(blocks["max_abs_err"][-1], ev6["abs_err"].max(), rtol=1e-9)
    with pytest.raises(Exception, match="no task"):
        replay_curve(study, "train-nope", [0.0])
