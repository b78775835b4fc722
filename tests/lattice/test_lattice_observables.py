"""Observables on exactly sampled free fields (lam = 0, tutorial convention, docs/conventions.md section 2)."""

from __future__ import annotations

import numpy as np
import pytest

from olrg_hpc.lattice import autocorr as ac
from olrg_hpc.lattice import observables as ob


def _phat2(L: int) -> np.ndarray:
    k = 2 * np.pi * np.arange(L) / L
    s = 4 * np.sin(k / 2) ** 2
    return s[:, None] + s[None, :]


def free_exact(L: int, m2: float) -> dict[str, float]:
    """Exact free-field values from G(p) = 1 / [2 (p_hat^2 + m2)]."""
    g = 1.0 / (2.0 * (_phat2(L) + m2))
    k = 2 * np.pi * np.arange(L) / L
    return {
        "phi2": float(g.mean()),
        "chi2": float(g[0, 0]),
        "nn": float(np.mean(g * np.cos(k)[None, :])),
        "G_t": np.real(np.fft.ifft(g[:, 0])),  # sum over x of G(x, t) = (1/L) sum_pt e^{i pt t} G(pt, 0)
    }


def sample_free(L: int, m2: float, n: int, seed: int) -> np.ndarray:
    """Exact independent Gaussian samples with covariance [2 (-Lap + m2)]^{-1} (circulant, via FFT)."""
    z = np.random.default_rng(seed).normal(size=(n, L, L))
    g = 1.0 / (2.0 * (_phat2(L) + m2))
    return np.real(np.fft.ifft2(np.sqrt(g) * np.fft.fft2(z)))


@pytest.mark.parametrize(
    ("L", "m2", "phi2", "chi2", "nn"),
    [
        (8, 1.0, 0.1270869988, 0.5, 0.0338587486),
        (8, 0.25, 0.1927505945, 2.0, 0.0797975067),
        (16, 1.0, 0.1270249394, 0.5, 0.0337811742),
    ],
)
def test_exact_table_of_science_md(L: int, m2: float, phi2: float, chi2: float, nn: float) -> None:
    ex = free_exact(L, m2)
    np.testing.assert_allclose([ex["phi2"], ex["chi2"], ex["nn"]], [phi2, chi2, nn], rtol=0, atol=2e-10)


@pytest.mark.parametrize(("L", "m2"), [(8, 1.0), (8, 0.25), (16, 1.0)])
def test_observables_on_exact_samples(L: int, m2: float) -> None:
    n = 20000
    phi = sample_free(L, m2, n, seed=L)
    ex = free_exact(L, m2)
    V = L * L
    for name, per_cfg, exact in [
        ("phi2", ob.phi2(phi), ex["phi2"]),
        ("chi2", V * ob.magnetization(phi) ** 2, ex["chi2"]),
        ("nn", ob.nearest_neighbour(phi), ex["nn"]),
    ]:
        m, e = per_cfg.mean(), per_cfg.std(ddof=1) / np.sqrt(n)  # independent samples
        assert abs(m - exact) < 4 * e, (name, m, e, exact)
    assert ob.susceptibility(phi) == pytest.approx(np.mean(V * ob.magnetization(phi) ** 2))
    # Gaussian M: <M^4> = 3 <M^2>^2, Binder cumulant ~ 0 (error ~ sqrt(8/3 / n) for Gaussian M)
    assert abs(ob.binder_cumulant(phi)) < 4 * np.sqrt(8.0 / 3.0 / n)
    assert ob.binder_ratio(phi) == pytest.approx(3 * (1 - ob.binder_cumulant(phi)))
    # second-moment xi = 1/sqrt(m2) exactly for the free field (tutorial convention); error of xi^2 by
    # linear propagation (pyerrors, independent samples), tolerance 4 sigma
    g0 = ob.momentum_propagator(phi, (0, 0))
    gp = 0.5 * (ob.momentum_propagator(phi, (1, 0)) + ob.momentum_propagator(phi, (0, 1)))
    xi2, dxi2 = ac.derived(lambda a, b: ob.xi2_from_propagators(a, b, L), g0, gp)
    assert ob.second_moment_correlation_length(phi) == pytest.approx(np.sqrt(xi2), rel=1e-12)
    assert abs(xi2 - 1 / m2) < 4 * dxi2 and dxi2 < 0.15 / m2
    # zero-momentum correlator
    g_t = ob.zero_momentum_correlator(phi).mean(axis=0)
    g_err = ob.zero_momentum_correlator(phi).std(axis=0, ddof=1) / np.sqrt(n)
    assert np.all(np.abs(g_t - ex["G_t"]) < 4 * g_err + 1e-12)


def test_correlator_identities() -> None:
    rng = np.random.default_rng(5)
    phi = rng.normal(size=(3, 6, 4))  # L_t = 6, L_x = 4
    g = ob.zero_momentum_correlator(phi)
    assert g.shape == (3, 6)
    V = 24
    np.testing.assert_allclose(g.sum(axis=-1), V * ob.magnetization(phi) ** 2, rtol=1e-12)
    # brute force definition
    slices = phi.sum(axis=-1)
    brute = np.array([[np.sum(s * np.roll(s, -t)) / V for t in range(6)] for s in slices])
    np.testing.assert_allclose(g, brute, rtol=1e-12, atol=1e-12)
    # other time axis
    g1 = ob.zero_momentum_correlator(phi, time_axis=1)
    assert g1.shape == (3, 4)
    np.testing.assert_allclose(g1.sum(-1), g.sum(-1), rtol=1e-12)
    # momentum propagator at p = 0 is V M^2, and p_min matches a direct Fourier sum
    np.testing.assert_allclose(ob.momentum_propagator(phi, (0, 0)), V * ob.magnetization(phi) ** 2)
    direct = np.abs(np.einsum("ntx,t->n", phi, np.exp(-2j * np.pi * np.arange(6) / 6))) ** 2 / V
    np.testing.assert_allclose(ob.momentum_propagator(phi, (1, 0)), direct, rtol=1e-12)


def test_connected_susceptibility_and_action_density() -> None:
    from olrg_hpc.lattice.phi4 import Phi4Action

    rng = np.random.default_rng(6)
    phi = rng.normal(size=(50, 4, 4)) + 0.3
    m = ob.magnetization(phi)
    assert ob.susceptibility(phi, connected=True) == pytest.approx(
        16 * (np.mean(m**2) - np.mean(np.abs(m)) ** 2)
    )
    assert np.all(ob.abs_magnetization(phi) >= 0)
    act = Phi4Action(-4.0, 8.0)
    np.testing.assert_allclose(ob.action_density(phi, act), np.asarray(act.action(phi)) / 16, rtol=1e-13)
