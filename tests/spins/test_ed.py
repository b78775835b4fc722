"""Exact diagonalization: operators, ground states against docs/conventions.md, and real-time evolution."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp
from _spins_ref import E0_TABLE, PX, PZ, SZSZ_TABLE, op_at

from olrg_hpc.spins import ed, models
from olrg_hpc.spins.models import X, Z


def test_site_op_and_two_point_match_kron():
    n = 5
    rng = np.random.default_rng(1)
    A = rng.standard_normal((2, 2)) + 1j * rng.standard_normal((2, 2))
    B = rng.standard_normal((2, 2))
    # exact: both sides are products of the same numbers, so equality to round-off (1e-14)
    np.testing.assert_allclose(ed.site_op(A, 3, n).toarray(), op_at({3: A}, n), atol=1e-14)
    np.testing.assert_allclose(ed.two_point(A, 1, B, 4, n).toarray(), op_at({1: A, 4: B}, n), atol=1e-14)
    np.testing.assert_allclose(ed.two_point(A, 2, B, 2, n).toarray(), op_at({2: A @ B}, n), atol=1e-14)


@pytest.mark.parametrize(
    "model",
    [models.tfim(9, 1.0, 0.6), models.mixed_field_ising(8, 1.0, 1.1, 0.3), models.xxz(8, 1.0, 0.5, 0.2)],
    ids=lambda m: m.name,
)
def test_sparse_hamiltonian_hermitian_and_structure(model):
    H = ed.sparse_hamiltonian(model)
    assert sp.issparse(H) and H.format == "csr" and H.dtype == np.float64
    assert abs(H - H.conj().T).max() == 0.0  # built entry by entry from Hermitian terms: exactly Hermitian
    if model.name == "tfim":
        # documented memory estimate: one bit flip per site off the diagonal, plus the (nonzero) diagonal
        assert H.nnz - np.count_nonzero(H.diagonal()) == model.n * 2**model.n
        assert H.nnz <= (model.n + 1) * 2**model.n
    assert np.count_nonzero(H.data) == H.nnz  # explicit zeros removed


def test_complex_terms_give_complex_hermitian_matrix():
    n = 4
    PY = np.array([[0.0, -1.0j], [1.0j, 0.0]])
    terms = [(0.3, ((1, PY),)), (0.7, ((0, PX), (2, PY))), (1.1, ((3, PZ),))]
    H = ed.sparse_from_terms(terms, n)
    assert H.dtype == np.complex128
    ref = 0.3 * op_at({1: PY}, n) + 0.7 * op_at({0: PX, 2: PY}, n) + 1.1 * op_at({3: PZ}, n)
    np.testing.assert_allclose(H.toarray(), ref, atol=1e-14)  # same products of the same numbers
    assert abs(H - H.conj().T).max() == 0.0


def test_minus_i_h_operator():
    H = ed.sparse_hamiltonian(models.tfim(6, 1.0, 0.7))
    A, Hd = ed.minus_i_h(H), H.toarray()
    rng = np.random.default_rng(0)
    V = rng.standard_normal((64, 3)) + 1j * rng.standard_normal((64, 3))
    # exact arithmetic up to round-off of 7-term sums: 1e-13
    np.testing.assert_allclose(A.matmat(V), -1j * Hd @ V, atol=1e-13)
    np.testing.assert_allclose(A.matvec(V[:, 0]), -1j * Hd @ V[:, 0], atol=1e-13)
    np.testing.assert_allclose(A.rmatmat(V), 1j * Hd @ V, atol=1e-13)


def test_product_states():
    np.testing.assert_allclose(ed.zero_state(3), ed.product_state(np.array([1.0, 0.0]), 3))
    plus = np.array([1.0, 1.0]) / np.sqrt(2)
    np.testing.assert_allclose(ed.plus_state(4), ed.product_state([plus] * 4), atol=1e-15)
    psi = ed.plus_state(6)
    assert ed.expectation(ed.site_op(X, 2, 6), psi) == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize(("n", "g"), sorted(E0_TABLE))
def test_ground_energy_science_table(n, g):
    # our J ZZ + h X has the spectrum of -J ZZ - g X with |J| = 1, |h| = g (gauge); Lanczos converged to
    # machine precision: 1e-10 absolute (table has 12 decimals, eigsh error ~1e-13 at these sizes)
    H = ed.sparse_hamiltonian(models.tfim(n, J=1.0, h=g))
    w, v = ed.ground_state(H, k=1)
    assert w[0] == pytest.approx(E0_TABLE[(n, g)], abs=1e-10)
    np.testing.assert_allclose(H @ v[:, 0], w[0] * v[:, 0], atol=1e-9)


def test_ground_state_dense_and_sparse_agree():
    m = models.mixed_field_ising(9, 1.0, 0.8, 0.2)  # dim 512 > 256: the Lanczos path
    w_sparse, _ = ed.ground_state(ed.sparse_hamiltonian(m), k=3)
    w_dense = np.linalg.eigvalsh(ed.dense_hamiltonian(m))[:3]
    np.testing.assert_allclose(w_sparse, w_dense, atol=1e-10)  # both ~1e-13 accurate


def test_sign_gauge_of_tfim():
    # spectrum depends only on |J|, |h| on an open chain
    w = [np.linalg.eigvalsh(ed.dense_hamiltonian(models.tfim(7, J, h))) for J, h in [(1, 0.6), (-1, 0.6), (1, -0.6)]]
    np.testing.assert_allclose(w[0], w[1], atol=1e-12)
    np.testing.assert_allclose(w[0], w[2], atol=1e-12)


def _observables(n):
    obs = {f"zz{i}": ed.two_point(Z, i, Z, i + 1, n) for i in range(n - 1)}
    obs.update({f"x{i}": ed.site_op(X, i, n) for i in range(n)})
    return obs


def test_evolution_against_scipy_expm():
    """Sparse expm_multiply path (uniform grid, chunked, non-uniform grid) and dense eigh path vs expm."""
    n = 7
    m = models.mixed_field_ising(n, 1.0, 0.9, 0.35)
    H = ed.sparse_hamiltonian(m)
    Hd = H.toarray()
    psi0 = ed.zero_state(n)
    O = ed.two_point(Z, 0, Z, 1, n)
    times = np.linspace(0.0, 3.0, 13)
    U_dt = sla.expm(-1j * Hd * (times[1] - times[0]))  # one dense exponential, then repeated steps
    states_ref = [psi0.astype(complex)]
    for _ in times[1:]:
        states_ref.append(U_dt @ states_ref[-1])
    ref = np.array([ed.expectation(O, s) for s in states_ref])
    # expm (Pade) and expm_multiply (Taylor) are both ~1e-14 accurate here; 1e-11 leaves margin
    for res in (
        ed.evolve_expectations(H, psi0, {"o": O}, times)["o"],
        ed.evolve_expectations(H, psi0, {"o": O}, times, max_chunk_bytes=3 * 16 * 2**n)["o"],
        ed.evolve_expectations(Hd, psi0, {"o": O}, times)["o"],
        ed.evolve_expectations(H, psi0, {"o": O}, times**1.5 / np.sqrt(3.0))["o"][[0, -1]],
        ed.evolve_expectations(H, psi0, {"o": O.diagonal()}, times)["o"],  # diagonal given as 1-D array
    ):
        expected = ref if res.size == times.size else ref[[0, -1]]
        np.testing.assert_allclose(res, expected, atol=1e-11)
    states = ed.evolve_states(H, psi0, times[:3])
    np.testing.assert_allclose(states[2], states_ref[2], atol=1e-11)


def test_energy_conservation_nonintegrable():
    n = 10
    H = ed.sparse_hamiltonian(models.mixed_field_ising(n, 1.0, 1.05, 0.5))
    psi0 = ed.zero_state(n)
    E = ed.evolve_expectations(H, psi0, {"H": H}, np.linspace(0, 5, 21))["H"]
    # <H> = J (n-1) + g n exactly at t = 0; conserved to double precision (1e-10 covers ~1e-13 drift)
    np.testing.assert_allclose(E, (n - 1) * 1.0 + 0.5 * n, atol=1e-10)


def test_reflection_symmetry_of_profiles():
    n = 9
    H = ed.sparse_hamiltonian(models.mixed_field_ising(n, 1.0, 0.8, 0.3))
    res = ed.evolve_expectations(H, ed.zero_state(n), _observables(n), np.linspace(0, 3, 7))
    # the chain and |0...0> are reflection symmetric: exact equality up to round-off (1e-12)
    for i in range(n):
        np.testing.assert_allclose(res[f"x{i}"], res[f"x{n - 1 - i}"], atol=1e-12)
    for i in range(n - 1):
        np.testing.assert_allclose(res[f"zz{i}"], res[f"zz{n - 2 - i}"], atol=1e-12)


def test_science_table_szsz_n10():
    n = 10
    H = ed.sparse_hamiltonian(models.tfim(n, 1.0, 1.0))
    times = np.arange(1, 21) * 0.1
    C = ed.evolve_expectations(H, ed.zero_state(n), {"zz": ed.two_point(Z, 0, Z, 1, n)}, times)["zz"]
    # table given to 3 digits: half a unit in the last digit
    np.testing.assert_allclose(C / 4, SZSZ_TABLE, atol=5e-4)


def test_input_validation():
    H = ed.sparse_hamiltonian(models.tfim(3))
    with pytest.raises(ValueError):
        ed.evolve_expectations(H, ed.zero_state(3), {}, [1.0, 0.5])
    with pytest.raises(ValueError):
        ed.dense_hamiltonian(models.tfim(13))
    with pytest.raises(ValueError):
        ed.site_op(PZ, 3, 3)
    with pytest.raises(ValueError):
        ed.sparse_from_terms([(1.0, ((0, PX), (0, PZ)))], 2)
