"""The olrg_study graph end to end at toy size: train a linear map, evaluate it and NRG, compare."""

from __future__ import annotations

import numpy as np

from olrg_hpc.olrg import pipeline
from workflows import olrg_study


def test_graph_shape():
    p = olrg_study.Params.model_validate({"n0": [2, 3], "maps": ["nrg", "linear"], "n_final": 6, "N": 8})
    names = [t.name for t in olrg_study.build(p)]
    assert names.count("compare") == 1
    assert {"train-linear-D4", "train-linear-D8", "eval-nrg-D4", "eval-linear-D8"} <= set(names)
    assert not any(n.startswith("train-nrg") for n in names)  # fixed maps are not trained


def test_train_then_evaluate_round_trips_params():
    common = {"model": "tfim", "couplings": {"J": 1.0, "h": 1.0}, "map_name": "linear", "map_options": {}, "n0": 2,
              "n_final": 4}
    trained = pipeline.train_map_task(**common, T=0.5, K=1, n_per_order=4, steps=3, lr=1e-2, schedule="together",
                                      seed=1)
    assert trained["loss"].shape == (3,) and np.all(np.isfinite(trained["loss"]))
    ev = pipeline.evaluate_map_task(**common, N=5, t_max=0.5, n_times=6, deps={"train": trained})
    assert ev["D"] == 4 and np.all(np.isfinite(ev["approx"])) and ev["train_seconds"] > 0
    ident = pipeline.evaluate_map_task(**{**common, "map_name": "identity"}, N=5, t_max=0.5, n_times=6)
    assert np.max(ident["abs_err"]) < 1e-10  # no compression: exact
    table = pipeline.compare_maps({"eval-linear-D4": ev, "eval-identity-D4": ident}, windows=(0.5,))
    assert table["max_abs_err_t0.5"][0] < 1e-10
