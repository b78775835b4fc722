"""olrg_hpc.jaxsetup.blas_single_thread: LAPACK inside XLA runs on one BLAS thread while training, then is restored."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from threadpoolctl import threadpool_info

from olrg_hpc.jaxsetup import blas_single_thread
from olrg_hpc.olrg import loss as L
from olrg_hpc.olrg import maps as M
from olrg_hpc.olrg.train import TrainConfig, Trainer
from olrg_hpc.spins import models


def _blas_threads() -> list[int]:
    jnp.linalg.eigh(jnp.eye(2))  # loads the LAPACK that XLA calls (SciPy's OpenBLAS)
    return [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_blas_single_thread_limits_and_restores() -> None:
    before = _blas_threads()
    assert before  # a BLAS is loaded, or the context manager would silently do nothing
    with blas_single_thread():
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before


def test_trainer_runs_with_one_blas_thread() -> None:
    seen: list[list[int]] = []
    cfg = L.LossConfig(model=models.tfim(5), n0=2, n_final=4, T=1.0, K=1, n_per_order=2)
    tr = Trainer(M.LinearIsometryMap(), cfg, TrainConfig(steps=2, lr=1e-2, sync_every=1), devices=jax.devices()[:1])
    tr.run(callback=lambda step, loss, params: seen.append(_blas_threads()))
    assert len(seen) == 2 and all(np.all(np.asarray(s) == 1) for s in seen)
