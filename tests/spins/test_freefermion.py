"""Free-fermion TFIM against closed forms, docs/conventions.md tables and exact diagonalization."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
from _spins_ref import E0_TABLE, E0_TABLE_LARGE, SZSZ_TABLE

from olrg_hpc.spins import ed, models
from olrg_hpc.spins import freefermion as ff
from olrg_hpc.spins.models import X, Z


@pytest.mark.parametrize("n", [1, 2, 8, 64, 1000])
def test_closed_form_critical_energy(n):
    # E0 = 1 - 1/sin(pi/(4N+2)) at |h| = |J| = 1; relative 1e-12 (sum of n terms, each ~1e-16 relative)
    assert ff.tfim_ground_energy(n, 1.0, 1.0) == pytest.approx(1 - 1 / np.sin(np.pi / (4 * n + 2)), rel=1e-12)


@pytest.mark.parametrize(("n", "g"), sorted(E0_TABLE | E0_TABLE_LARGE))
def test_ground_energy_science_table(n, g):
    # table rounded to 12 decimals -> 1e-11 absolute (sum of singular values is accurate to ~1e-14)
    for J, h in [(1.0, g), (-1.0, g), (1.0, -g)]:  # the sign of J and h is a gauge on an open chain
        assert ff.tfim_ground_energy(n, J, h) == pytest.approx((E0_TABLE | E0_TABLE_LARGE)[(n, g)], abs=1e-11)


@pytest.mark.parametrize(("n", "h"), [(8, 0.5), (8, 1.0), (10, 1.7), (10, 0.3)])
def test_energy_and_gap_against_ed(n, h):
    w, _ = ed.ground_state(ed.sparse_hamiltonian(models.tfim(n, 1.0, h)), k=4)
    # Lanczos converged to machine precision: ~1e-13 absolute, so 1e-10 for E0, the gap and the levels
    assert ff.tfim_ground_energy(n, 1.0, h) == pytest.approx(w[0], abs=1e-10)
    assert ff.tfim_gap(n, 1.0, h) == pytest.approx(w[1] - w[0], abs=1e-10)
    eps = ff.tfim_single_particle_energies(n, 1.0, h)
    # the full many-body spectrum is E0 + sums of subsets of eps: check the lowest few
    sums = sorted([0.0, *eps, eps[0] + eps[1], eps[0] + eps[2]])
    np.testing.assert_allclose(w[:4] - w[0], sums[:4], atol=1e-10)


def test_gap_relative_accuracy_in_ordered_phase():
    # |h| < |J|: edge-mode gap = 2 (1 - h^2) h^n (1 + O(h^{2n})), far below the 1e-16 absolute accuracy
    # of ordinary eigensolvers; bisection on the Golub-Kahan matrix gets it to ~1e-15 relative: rel 1e-12
    h = 0.5
    g = [ff.tfim_gap(n, 1.0, h) for n in (100, 101, 400)]
    assert 0 < g[2] < 1e-100
    assert g[1] / g[0] == pytest.approx(h, rel=1e-12)
    assert g[0] == pytest.approx(2 * (1 - h**2) * h**100, rel=1e-12)


def test_propagator_matches_expm():
    n, J, h, t = 7, 0.8, 1.3, 1.7
    A = ff.tfim_majorana_generator(n, J, h)
    R = ff.majorana_propagator(n, J, h, t)
    # both double precision for ||A t|| ~ 7: 1e-12
    np.testing.assert_allclose(R, sla.expm(A * t), atol=1e-12)
    np.testing.assert_allclose(R @ R.T, np.eye(2 * n), atol=1e-12)


def test_majorana_generator_reproduces_hamiltonian():
    """H = (i/4) sum A_ab c_a c_b with explicit Jordan-Wigner Majoranas (checks every factor)."""
    n, J, h = 4, 0.7, -1.2
    cs = []
    for i in range(n):
        string = {j: X for j in range(i)}
        cs.append(_kron({**string, i: Z}, n))
        cs.append(_kron({**string, i: models.Y}, n))
    A = ff.tfim_majorana_generator(n, J, h)
    H = 0.25j * sum(A[a, b] * cs[a] @ cs[b] for a in range(2 * n) for b in range(2 * n))
    np.testing.assert_allclose(H, ed.dense_hamiltonian(models.tfim(n, J, h)), atol=1e-12)
    for a in range(2 * n):
        for b in range(2 * n):
            np.testing.assert_allclose(cs[a] @ cs[b] + cs[b] @ cs[a], 2 * (a == b) * np.eye(2**n), atol=1e-12)


def _kron(ops, n):
    out = np.ones((1, 1))
    for i in range(n):
        out = np.kron(out, ops.get(i, np.eye(2)))
    return out


def _ed_profiles(n, J, h, initial, times):
    H = ed.sparse_hamiltonian(models.tfim(n, J, h))
    psi0 = ed.zero_state(n) if initial == "up" else ed.plus_state(n)
    obs = {f"zz{i}": ed.two_point(Z, i, Z, i + 1, n).diagonal() for i in range(n - 1)}
    obs.update({f"x{i}": ed.site_op(X, i, n) for i in range(n)})
    res = ed.evolve_expectations(H, psi0, obs, times)
    return (np.stack([res[f"zz{i}"] for i in range(n - 1)], axis=1),
            np.stack([res[f"x{i}"] for i in range(n)], axis=1))  # fmt: skip


def _check_against_ed(n, h, initial):
    times = np.linspace(0.0, 4.0, 41)
    zz_ed, x_ed = _ed_profiles(n, 1.0, h, initial, times)
    res = ff.tfim_quench(n, 1.0, h, times, initial=initial)
    # both sides exact to ~1e-13 (expm_multiply tolerance 2^-53 per step; Majorana eigensolver ~1e-14):
    # docs/conventions.md asks for 1e-10
    np.testing.assert_allclose(res["zz"], zz_ed, atol=1e-10)
    np.testing.assert_allclose(res["x"], x_ed, atol=1e-10)


@pytest.mark.parametrize("initial", ["up", "plus"])
@pytest.mark.parametrize("h", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("n", [8, 10])
def test_quench_against_ed(n, h, initial):
    _check_against_ed(n, h, initial)


@pytest.mark.slow
@pytest.mark.parametrize("initial", ["up", "plus"])
@pytest.mark.parametrize("h", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("n", [9, 11, 12, 13, 14])
def test_quench_against_ed_slow(n, h, initial):
    _check_against_ed(n, h, initial)


def test_negative_couplings_against_ed():
    n, J, h = 7, -0.6, -1.4
    times = np.linspace(0, 2, 9)
    zz_ed, x_ed = _ed_profiles(n, J, h, "up", times)
    res = ff.tfim_quench(n, J, h, times, initial="up")
    np.testing.assert_allclose(res["zz"], zz_ed, atol=1e-10)  # as above
    np.testing.assert_allclose(res["x"], x_ed, atol=1e-10)


def test_science_table_n64():
    times = np.arange(1, 21) * 0.1
    C = ff.tfim_quench(64, 1.0, 1.0, times, initial="up", observables=("zz",), sites=[0])["zz"][:, 0]
    np.testing.assert_allclose(C / 4, SZSZ_TABLE, atol=5e-4)  # table has 3 digits


def test_large_chain_light_cone():
    # for t <= 2 the far end of a 64-site chain is far outside the light cone (max group velocity
    # v = 2 min(|J|,|h|) = 2, 62 sites away: leakage ~ (e v t / 62)^62 < 1e-40), so <Z_1 Z_2> equals the
    # N = 1000 value to round-off (1e-12)
    times = np.linspace(0, 2, 11)
    a = ff.tfim_quench(64, 1.0, 1.0, times, observables=("zz",), sites=[0])["zz"]
    b = ff.tfim_quench(1000, 1.0, 1.0, times, observables=("zz",), sites=[0])["zz"]
    np.testing.assert_allclose(a, b, atol=1e-12)


def test_reflection_symmetry_and_energy_conservation():
    n, J, h = 41, 1.0, 0.8
    times = np.linspace(0, 6, 25)
    for initial in ("up", "plus"):
        res = ff.tfim_quench(n, J, h, times, initial=initial)
        # mirror symmetry of chain and initial state: equal to round-off (1e-12)
        np.testing.assert_allclose(res["x"], res["x"][:, ::-1], atol=1e-12)
        np.testing.assert_allclose(res["zz"], res["zz"][:, ::-1], atol=1e-12)
        E = J * res["zz"].sum(axis=1) + h * res["x"].sum(axis=1)
        np.testing.assert_allclose(E, E[0], atol=1e-11)  # sum of 81 terms each ~1e-14 accurate
    assert E[0] == pytest.approx(h * n)  # |+...+>: <X_i> = 1, <ZZ> = 0


def test_pure_gaussian_state_stays_pure():
    n, t = 20, 3.3
    G = ff.covariance(n, 1.0, 0.7, t, initial="plus")
    np.testing.assert_allclose(G @ G.T, np.eye(2 * n), atol=1e-12)  # orthogonal R preserves Gamma Gamma^T = 1
    pairs = [(0, 5), (3, 4), (17, 30)]
    got = ff.majorana_correlations(n, 1.0, 0.7, [t], pairs, initial="plus")[0]
    np.testing.assert_allclose(got, [G[a, b] for a, b in pairs], atol=1e-12)
    # a general (array) initial covariance takes the generic path and must agree with the named one
    got2 = ff.majorana_correlations(n, 1.0, 0.7, [t], pairs, initial=ff.initial_covariance(n, "plus"))[0]
    np.testing.assert_allclose(got2, got, atol=1e-12)


def test_chunking_and_validation():
    times = np.linspace(0, 1, 5)
    pairs = [(2 * i + 1, 2 * i + 2) for i in range(9)]
    a = ff.majorana_correlations(10, 1.0, 0.9, times, pairs)
    b = ff.majorana_correlations(10, 1.0, 0.9, times, pairs, max_chunk_bytes=1)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        ff.tfim_quench(5, 1.0, 1.0, times, sites=[4], observables=("zz",))
    with pytest.raises(ValueError):
        ff.tfim_quench(5, 1.0, 1.0, times, initial="down")
