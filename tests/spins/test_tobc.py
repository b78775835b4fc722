"""Exact TOBCs against ED time evolution, finite-difference kicks and a brute-force dense reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla

from olrg_hpc.spins import ed, models, tobc
from olrg_hpc.spins.models import SM, SP, SZ, Z


def _brute_force(model, times, signs, T, B_list, O, rho):
    """Independent reference: scipy expm, explicit Heisenberg operators, nested ad, innermost t_1."""
    H = ed.dense_hamiltonian(model)

    def heis(A, t):
        U = sla.expm(-1j * H * t)
        return U.conj().T @ A @ U

    Xop = heis(O, T)
    for t, c, B in zip(times, signs, B_list, strict=True):
        Bt = heis(B, t)
        Xop = Bt @ Xop + c * Xop @ Bt
    return np.trace(rho @ Xop)


@pytest.mark.parametrize(
    "model", [models.tfim(6, 1.0, 1.0), models.mixed_field_ising(6, 1.0, 0.9, 0.4)], ids=lambda m: m.name
)
def test_order0_is_evolved_expectation(model):
    n = model.n
    ev = tobc.ExactTOBC(model)
    H = ed.sparse_hamiltonian(model)
    Ts = np.linspace(0, 2, 5)
    ref = ed.evolve_expectations(H, ed.zero_state(n), {"o": ed.two_point(Z, 0, Z, 1, n)}, Ts)["o"]
    got = [ev.expectation(T) for T in Ts]
    # eigendecomposition vs expm_multiply, both ~1e-14: 1e-11
    np.testing.assert_allclose(got, ref, atol=1e-11)
    assert tobc.exact_tobc(model, 0, [], [], Ts[3]) == pytest.approx(ref[3], abs=1e-11)


def _kicked_expectation(model, kicks, T, O):
    """<O(T)> after evolving |0...0> with H and applying exp(-i eps Z_{n-1}) at the kick times (ED)."""
    n = model.n
    H = ed.sparse_hamiltonian(model)
    zdiag = ed.site_op(Z, n - 1, n).diagonal()
    psi = ed.zero_state(n).astype(complex)
    t_prev = 0.0
    for t, eps in sorted(kicks):  # increasing time
        psi = ed.evolve_states(H, psi, [t - t_prev])[0]
        psi = np.exp(-1j * eps * zdiag) * psi
        t_prev = t
    psi = ed.evolve_states(H, psi, [T - t_prev])[0]
    return ed.expectation(O, psi)


def test_order1_commutator_is_kick_response():
    """d/d eps <O(T)>_kicked = i Tr[rho [B(t1), O(T)]] (kick exp(-i eps B) at t1): chi with c = -1."""
    model = models.mixed_field_ising(6, 1.0, 0.9, 0.4)
    n, T, t1, eps = model.n, 1.5, 0.8, 1e-4
    O = ed.two_point(Z, 3, Z, 4, n)
    chi = tobc.exact_tobc(model, 1, [t1], [-1], T, observable="Z3Z4")
    fd = (_kicked_expectation(model, [(t1, eps)], T, O) - _kicked_expectation(model, [(t1, -eps)], T, O)) / (2 * eps)
    assert abs(chi.real) < 1e-12  # one commutator of Hermitian operators: purely imaginary
    assert abs(chi.imag) > 0.05  # a non-trivial check
    # central difference: truncation eps^2/6 |f'''| ~ 1e-9, round-off 1e-16/eps ~ 1e-12 -> 1e-7
    assert 1j * chi == pytest.approx(fd, abs=1e-7)


def test_order2_double_commutator_is_mixed_kick_response():
    """d^2/(d eps1 d eps2) <O(T)> with kicks at t1 > t2 = i^2 Tr[rho [B(t2), [B(t1), O(T)]]]."""
    model = models.tfim(5, 1.0, 0.8)
    n, T, t1, t2, eps = model.n, 1.6, 1.1, 0.4, 1e-3
    O = ed.two_point(Z, 3, Z, 4, n)
    chi = tobc.exact_tobc(model, 2, [t1, t2], [-1, -1], T, observable="Z3Z4")

    def f(e1, e2):
        return _kicked_expectation(model, [(t1, e1), (t2, e2)], T, O)

    fd = (f(eps, eps) - f(eps, -eps) - f(-eps, eps) + f(-eps, -eps)) / (4 * eps**2)
    assert abs(chi.imag) < 1e-12 and abs(chi.real) > 0.05
    # mixed central difference: truncation ~eps^2 |f''''| ~ 1e-6, round-off 1e-16/eps^2 = 1e-10 -> 1e-5
    assert -chi.real == pytest.approx(fd, abs=1e-5)


@pytest.mark.parametrize("initial", ["pure", "mixed"])
def test_random_orders_against_brute_force(initial):
    model = models.mixed_field_ising(4, 1.0, 0.7, 0.3)
    n, T = model.n, 2.0
    O = ed.two_point(Z, 2, Z, 3, n).toarray()
    B = ed.site_op(Z, n - 1, n).toarray()
    psi = ed.zero_state(n)
    rho = np.outer(psi, psi)
    if initial == "mixed":  # a generic full-rank density matrix
        rng0 = np.random.default_rng(7)
        M = rng0.standard_normal((2**n, 2**n)) + 1j * rng0.standard_normal((2**n, 2**n))
        rho = M @ M.conj().T
        rho /= np.trace(rho)
    ev = tobc.ExactTOBC(model, observable="Z2Z3", initial=psi if initial == "pure" else rho)
    inputs = tobc.sample_tobc_inputs(K=4, n_per_order=3, T=T, seed=3)
    got = ev.batch(inputs)
    for s, (k, ts, cs) in enumerate(inputs):
        ref = _brute_force(model, ts, cs, T, [B] * k, O, rho)
        # scipy expm (Pade, ~1e-14) vs eigenbasis phases; nested products of O(1) operators: 1e-10
        assert got[s] == pytest.approx(ref, abs=1e-10)
        if initial == "pure":
            n_comm = int(np.sum(np.asarray(cs) == -1))
            part = got[s].imag if n_comm % 2 == 0 else got[s].real
            assert abs(part) < 1e-12  # real for even, imaginary for odd numbers of commutators


def test_xxz_per_level_boundaries():
    model = models.xxz(4, J=1.0, delta=0.5, hz=0.2)
    n, T = model.n, 1.2
    ops = {"Sz": SZ, "Sp": SP, "Sm": SM}
    names = ["Sp", "Sz", "Sm"]
    times, signs = [1.0, 0.6, 0.2], [1, -1, 1]
    O = ed.two_point(SZ, 2, SZ, 3, n).toarray()
    B_list = [ed.site_op(ops[a], n - 1, n).toarray() for a in names]
    psi = ed.product_state([np.array([1.0, 0.0]), np.array([0.0, 1.0])] * 2)  # Neel |0101>
    ref = _brute_force(model, times, signs, T, B_list, O, np.outer(psi, psi))
    ev = tobc.ExactTOBC(model, boundary="Sz", observable="Sz2Sz3", initial=psi)
    assert ev.chi(times, signs, T, boundaries=names) == pytest.approx(ref, abs=1e-10)  # as above


def test_sampler_reproducible_and_ordered():
    a = tobc.sample_tobc_inputs(K=3, n_per_order=20, T=0.1, seed=42)
    b = tobc.sample_tobc_inputs(K=3, n_per_order=20, T=0.1, seed=42)
    c = tobc.sample_tobc_inputs(K=3, n_per_order=20, T=0.1, seed=43)
    np.testing.assert_array_equal(a.times, b.times)
    np.testing.assert_array_equal(a.signs, b.signs)
    assert not np.array_equal(a.times, c.times, equal_nan=True)
    assert len(a) == 1 + 3 * 20 and list(np.bincount(a.orders)) == [1, 20, 20, 20]
    for k, ts, cs in a:
        assert ts.size == k and cs.size == k
        assert np.all((ts >= 0) & (ts <= 0.1)) and np.all(np.diff(ts) <= 0)  # T >= t_1 >= ... >= t_k
        assert set(cs.tolist()) <= {-1, 1}
    assert np.isnan(a.times[0]).all() and (a.signs[0] == 0).all()
    g = tobc.sample_tobc_inputs(K=2, n_per_order=10, T=1.0, seed=0, grid=11, n_order0=0)
    assert len(g) == 20
    np.testing.assert_allclose(g.times * 10, np.round(g.times * 10), atol=1e-12)  # on the 0.1 grid


def test_parse_operator_and_errors():
    n = 3
    np.testing.assert_allclose(tobc.parse_operator("Z0Z2", n), ed.two_point(Z, 0, Z, 2, n).toarray())
    np.testing.assert_allclose(tobc.parse_operator("Sp", n, default_site=1), ed.site_op(SP, 1, n).toarray())
    with pytest.raises(ValueError):
        tobc.parse_operator("Q1", n)
    with pytest.raises(ValueError):
        tobc.parse_operator("Z5", n)
    with pytest.raises(ValueError):
        tobc.exact_tobc(models.tfim(3), 2, [0.1], [1], 1.0)
    ev = tobc.ExactTOBC(models.tfim(3))
    with pytest.raises(ValueError):
        ev.chi([0.1], [0], 1.0)
    with pytest.raises(ValueError):
        ev.chi([0.1, 0.2], [1], 1.0)
