"""Gamma-method tau_int (Wolff 2004) via pyerrors, cross-checked with an independent numpy version."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.signal import lfilter

from olrg_hpc.lattice import autocorr as ac


def ar1(n: int, rho: float, seed: int, chains: int = 1) -> np.ndarray:
    """Stationary AR(1), a_{i+1} = rho a_i + e_i; exact tau_int = (1 + rho) / (2 (1 - rho))."""
    rng = np.random.default_rng(seed)
    e = rng.normal(size=(n, chains))
    e[0] /= np.sqrt(1 - rho**2)  # start in the stationary distribution
    x = lfilter([1.0], [1.0, -rho], e, axis=0)
    return x[:, 0] if chains == 1 else x


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ar1_tau_int(rho: float) -> None:
    exact = (1 + rho) / (2 * (1 - rho))  # 9.5 at rho = 0.9
    x = ar1(200_000, rho, seed=1)
    tau, dtau = ac.tau_int(x)
    assert abs(tau - exact) < 4 * dtau, (tau, dtau, exact)
    mean, err, tau2 = ac.mean_error(x)
    assert tau2 == tau
    assert abs(mean) < 4 * err
    # the error is sqrt(2 tau_int) times the naive one (pyerrors convention: tau_int = 0.5 uncorrelated)
    naive = x.std() / np.sqrt(x.size)
    assert err / naive == pytest.approx(np.sqrt(2 * tau), rel=1e-3)


def test_numpy_implementation_agrees_with_pyerrors() -> None:
    for rho, seed in [(0.0, 2), (0.7, 3), (0.9, 4)]:
        x = ar1(50_000, rho, seed=seed)
        mine = ac.gamma_method_numpy(x, S=1.5)
        tau, dtau = ac.tau_int(x, S=1.5)
        mean, err, _ = ac.mean_error(x, S=1.5)
        n = x.size
        # pyerrors' tau carries an extra 1 / (1 + 1/N); its error of the mean is identical to Wolff's
        assert mine["tau_int"] / (1 + 1 / n) == pytest.approx(tau, rel=1e-9)
        assert mine["dtau_int"] == pytest.approx(dtau, rel=1e-9)
        assert mine["error"] == pytest.approx(err, rel=1e-9)
        assert mine["mean"] == pytest.approx(mean, rel=1e-12)


def test_uncorrelated_is_one_half() -> None:
    x = np.random.default_rng(7).normal(size=20_000)
    tau, dtau = ac.tau_int(x)
    assert abs(tau - 0.5) < 4 * max(dtau, 0.01)
    assert ac.gamma_method_numpy(np.ones(100))["tau_int"] == 0.5


def test_replicas_and_derived() -> None:
    x = ar1(20_000, 0.9, seed=8, chains=8)  # (n_meas, n_chains): columns are replicas
    tau, dtau = ac.tau_int(x)
    assert abs(tau - 9.5) < 4 * dtau
    mean, err, _ = ac.mean_error(x)
    assert abs(mean) < 4 * err
    # derived observable: Binder cumulant of a Gaussian "magnetisation" is 0
    m = ar1(50_000, 0.5, seed=9)
    u, du = ac.derived(lambda m2, m4: 1 - m4 / (3 * m2**2), m**2, m**4)
    assert abs(u) < 4 * du and du < 0.05
