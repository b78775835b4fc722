"""Training at the paper's benchmark (TFIM J = h = 1, D = 8, n 4 -> 10, order 2): slow, run with -m slow."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from olrg_hpc.olrg import evaluate as E
from olrg_hpc.olrg import loss as L
from olrg_hpc.olrg import maps as M
from olrg_hpc.olrg import train as T
from olrg_hpc.spins import models

TIMES = np.round(np.arange(0.1, 2.01, 0.1), 10)


@pytest.mark.slow
def test_learned_linear_map_beats_baselines_at_benchmark() -> None:
    m = models.tfim(10)
    cfg = L.LossConfig(
        model=m, n0=3, n_final=10, T=2.0, K=2, n_per_order=40, sample_T=True, exact_weight=1.0, exact_max_n=10
    )
    tc = T.TrainConfig(steps=500, lr=1e-2, lr_schedule="cosine", optimizer="adamw", sync_every=50, seed=0)
    lin = M.LinearIsometryMap()
    st = T.Trainer(lin, cfg, tc, devices=jax.devices()[:1]).run()
    assert st.history[-1] < 0.2 * st.history[0]
    learned = E.error_curve(m, 10, lin, TIMES, params=st.params)["rel_err"]
    dmrg = E.error_curve(m, 10, M.DMRGMap(T=2.0), TIMES)["rel_err"]
    nrg = E.error_curve(m, 10, M.NRGMap(), TIMES)["rel_err"]
    assert learned.max() < 0.1 < dmrg.max() < nrg.max()
