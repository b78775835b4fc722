"""Training at the paper's benchmark (TFIM J = h = 1, D = 8, n 4 -> 10, order 2): slow, run with -m slow."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from olrg_hpc.olrg import evaluate as E
from olrg_hpc.olrg import loss as L
from olrg_hpc.olrg import maps as M
from olrg_hpc.olrg import train as T
from olrg_hpc.olrg.pipeline import RECIPE
from olrg_hpc.spins import models

TIMES = np.round(np.arange(0.1, 2.01, 0.1), 10)


@pytest.mark.slow
def test_learned_linear_map_reaches_paper_accuracy() -> None:
    """Paper parity (Fig. 2: relative error of C(t) at most 1e-2 on t in [0.1, 2]) with one model for the curve.

    A shortened form of the parity recipe (pipeline.RECIPE: order weights delta^k/(2^k k!), delta = 0.02, exact
    targets on every block, AdamW + cosine) so that the test stays well under 10 minutes on 2 cores: 600 steps
    on [0, 2] with the plain isometry, 2-3 minutes on a loaded 2-core machine. Measured on this test's grid (step
    0.1) with stratified final times (LossConfig.stratify_T): max 7.7e-3, 6.0e-3, 6.5e-3 (median 2.0e-3, 2.1e-3,
    2.9e-3) for seeds 0, 1, 2. With i.i.d. final times this shortened run depended on the seed (seed 1 gave 2.7e-2,
    its error peaking in a gap between training times), which is why stratification is the default. The seed stays
    pinned so that the test is deterministic. The bound is the paper's, not a loosened one; NRG and DMRG stay far
    above it.
    """
    m = models.tfim(10)
    cfg = L.LossConfig(
        model=m,
        n0=3,
        n_final=10,
        T=2.0,
        K=2,
        n_per_order=40,
        weights=RECIPE["weights"],
        delta=RECIPE["delta"],
        sample_T=True,
        exact_weight=1.0,
        exact_max_n=10,
    )
    tc = T.TrainConfig(
        steps=600,
        lr=1e-2,
        lr_schedule=RECIPE["lr_schedule"],
        optimizer=RECIPE["optimizer"],
        clip=RECIPE["clip"],
        sync_every=100,
        seed=0,
    )
    lin = M.LinearIsometryMap()
    st = T.Trainer(lin, cfg, tc, devices=jax.devices()[:1]).run()
    assert st.history[-1] < 0.05 * st.history[0]
    learned = E.error_curve(m, 10, lin, TIMES, params=st.params)["rel_err"]
    dmrg = E.error_curve(m, 10, M.DMRGMap(T=2.0), TIMES)["rel_err"]
    nrg = E.error_curve(m, 10, M.NRGMap(), TIMES)["rel_err"]
    assert learned.max() < 1e-2
    assert np.median(learned) < 5e-3
    assert 0.1 < dmrg.max() < nrg.max()
