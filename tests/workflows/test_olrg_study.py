"""The olrg_study graph end to end at toy size: train a linear map, evaluate it and NRG, compare."""

from __future__ import annotations

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
    with pytest.raises(ValueError, match="takes chi and dt"):
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
