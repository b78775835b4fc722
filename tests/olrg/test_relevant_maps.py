"""Relevant-operator sets (growth is exact) and operator maps (isometries, Hermiticity, NRG spectrum)."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from olrg_hpc.olrg import maps as M
from olrg_hpc.olrg import relevant as R
from olrg_hpc.spins import ed, models, tobc

MODELS = [("tfim", {"J": 1.0, "h": 0.7}), ("mfi", {"J": 1.0, "h": 1.0, "g": 0.4}), ("xxz", {"delta": 0.6, "hz": 0.3})]


@pytest.mark.parametrize("name,kw", MODELS)
def test_growth_reproduces_exact_operators(name: str, kw: dict) -> None:
    m = models.make_model(name, 8, **kw)
    S = R.initial_set(m, 2)
    for n in range(3, 9):
        S = R.grow_site(S, m)
        assert S.n == n and S.dim == 2**n
        mn = m.with_n(n)
        np.testing.assert_allclose(R.hamiltonian(S), ed.dense_hamiltonian(mn), atol=1e-12)
        np.testing.assert_allclose(S.O, tobc.parse_operator("Z0Z1", n), atol=0)
        for k, b in enumerate(m.boundary_ops()):
            np.testing.assert_allclose(S.B[k], tobc.parse_operator(b, n, n - 1), atol=0)
        rho = np.zeros((2**n, 2**n))
        rho[0, 0] = 1.0
        np.testing.assert_array_equal(S.rho, rho)


def test_growth_jax_matches_numpy() -> None:
    m = models.tfim(4)
    S = R.initial_set(m, 3)
    Gn = R.grow_site(S, m)
    Gj = jax.jit(lambda s: R.grow_site(s, m))(R.to_jax(S))
    assert isinstance(Gj.O, jax.Array)
    for a, b in zip(jax.tree_util.tree_leaves(Gn), jax.tree_util.tree_leaves(Gj), strict=True):
        np.testing.assert_allclose(np.asarray(b), a, atol=1e-14)


def test_initial_set_checks() -> None:
    with pytest.raises(ValueError):
        R.initial_set(models.tfim(4), 1)  # Z0Z1 needs two sites


def _grown(name: str = "mfi", kw: dict | None = None) -> R.RelevantSet:
    m = models.make_model(name, 4, **(kw or {"J": 1.0, "h": 1.0, "g": 0.3}))
    return R.grow_site(R.initial_set(m, 3), m)


@functools.lru_cache(maxsize=1)
def _all_maps() -> list[tuple[M.OperatorMap, object]]:
    key = jax.random.PRNGKey(1)
    lin = M.LinearIsometryMap()
    linc = M.LinearIsometryMap(complex_=True, shared=True)
    omm = M.OperatorMatrixMap(width=16, depth=3, n_noise=2)
    # random (non-zero) last layer so that the OMM isometry differs from the plain truncation
    p_omm = omm.init(key, 16, 8, 1)
    rng = np.random.default_rng(0)
    p_omm = jax.tree_util.tree_map(lambda x: np.asarray(x) + 0.05 * rng.standard_normal(x.shape), p_omm)
    return [
        (M.NRGMap(), {}),
        (M.DMRGMap(T=1.0), {}),
        (M.DMRGMap(mode="ground"), {}),
        (lin, lin.init(key, 16, 8, 3)),
        (linc, linc.init(key, 16, 8, 3)),
        (omm, p_omm),
    ]


@pytest.mark.parametrize("i", range(6))
def test_maps_isometry_and_hermiticity(i: int) -> None:
    mp, params = _all_maps()[i]
    G = _grown() if i < 3 else R.to_jax(_grown())  # fixed maps: fast numpy path (the jax path: next test)
    key = jax.random.PRNGKey(3)
    if isinstance(mp, M.OperatorMatrixMap):
        V = mp.matrix_isometry(params, R.hamiltonian(G), key, 8)
    else:
        V = mp.isometry(params, G, 0, key, 8)
    V = np.asarray(V)
    assert V.shape == (16, 8)
    np.testing.assert_allclose(V.conj().T @ V, np.eye(8), atol=1e-12)
    S = mp(params, G, 0, key, dim_keep=8)
    assert S.dim == 8
    for X in (R.hamiltonian(S), *S.H_terms, S.O, S.rho):
        X = np.asarray(X)
        np.testing.assert_allclose(X, X.conj().T, atol=1e-12)


def test_fixed_maps_numpy_path_matches_jax() -> None:
    G = _grown()
    # T = 3: the 8th and 9th weights of rho_avg are well separated (1.6e-5 vs 2e-7), so the kept space is
    # well defined; at short T the tail weights fall below 1e-10 and the kept space is numerically ambiguous
    for mp in (M.NRGMap(), M.DMRGMap(T=3.0, mode="time_averaged")):
        a = mp({}, G, 0, dim_keep=8)
        fast = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
        b = jax.jit(lambda g, mp=mp: mp({}, g, 0, dim_keep=8), compiler_options=fast)(R.to_jax(G))
        assert isinstance(a.O, np.ndarray)
        # isometries agree up to a unitary on the kept space: compare projected Hamiltonian spectra
        np.testing.assert_allclose(
            np.linalg.eigvalsh(R.hamiltonian(a)), np.linalg.eigvalsh(np.asarray(R.hamiltonian(b))), atol=1e-10
        )


def test_identity_map_is_exact() -> None:
    G = _grown()
    S = M.IdentityMap()({}, G, 0)
    assert S is G
    V = M.IdentityMap().isometry({}, G, 0, None, 16)
    np.testing.assert_array_equal(M.compress(G, V).O, G.O)


def test_nrg_keeps_lowest_eigenvalues() -> None:
    G = _grown("xxz", {"delta": 0.5, "hz": 0.2})
    S = M.NRGMap()({}, G, 0, dim_keep=8)
    np.testing.assert_allclose(
        np.linalg.eigvalsh(R.hamiltonian(S)), np.linalg.eigvalsh(R.hamiltonian(G))[:8], atol=1e-12
    )


def test_qr_isometry_sign_fixed_and_idempotent() -> None:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((10, 4))
    V = np.asarray(M.qr_isometry(jax.numpy.asarray(A)))
    np.testing.assert_allclose(np.asarray(M.qr_isometry(jax.numpy.asarray(V))), V, atol=1e-13)
    Ac = A + 1j * rng.standard_normal((10, 4))
    Vc = np.asarray(M.qr_isometry(jax.numpy.asarray(Ac)))
    np.testing.assert_allclose(np.asarray(M.qr_isometry(jax.numpy.asarray(Vc))), Vc, atol=1e-13)
    # V^dag A = R is upper triangular with positive diagonal
    Rm = Vc.conj().T @ Ac
    assert np.all(np.real(np.diag(Rm)) > 0) and np.allclose(np.tril(Rm, -1), 0, atol=1e-12)


def test_time_averaged_rho_matches_quadrature() -> None:
    G = _grown()
    H, rho = R.hamiltonian(G), G.rho
    T = 0.8
    ts = np.linspace(0, T, 2001)
    E, W = np.linalg.eigh(H)
    acc = np.zeros_like(rho)
    wts = np.full(ts.size, ts[1]) * np.r_[0.5, np.ones(ts.size - 2), 0.5] / T
    for t, w in zip(ts, wts, strict=True):
        U = (W * np.exp(-1j * E * t)) @ W.conj().T
        acc += w * U @ rho @ U.conj().T
    np.testing.assert_allclose(M.time_averaged_rho(H, rho, T), acc, atol=1e-6)


def test_make_map() -> None:
    assert isinstance(M.make_map("nrg"), M.NRGMap)
    with pytest.raises(ValueError):
        M.make_map("nope")


def test_decouple_cuts_the_chain_after_the_block() -> None:
    m = models.tfim(6, J=1.0, h=0.7)
    S0 = R.initial_set(m, 3)
    D = M.decouple(R.grow_site(S0, m))
    np.testing.assert_allclose(R.hamiltonian(D), R.hamiltonian(S0), atol=1e-14)
    np.testing.assert_allclose(D.O, S0.O, atol=0)
    np.testing.assert_allclose(D.rho, S0.rho, atol=0)
    np.testing.assert_allclose(D.B, 0.0, atol=0)
    # a linear map with beyond="decouple" keeps its learned scales and drops every site after them
    lin = M.LinearIsometryMap(beyond="decouple")
    p = lin.init(jax.random.PRNGKey(0), 16, 8, 2)
    G = R.to_jax(R.grow_site(S0, m))
    np.testing.assert_allclose(np.asarray(lin(p, G, 1).O), np.asarray(M.LinearIsometryMap()(p, G, 1).O), atol=1e-14)
    np.testing.assert_allclose(np.asarray(lin(p, G, 2).O), S0.O, atol=1e-14)
    with pytest.raises(ValueError):
        M.LinearIsometryMap(beyond="nope")
    # the shared neural map cuts the same way after decouple_after scales
    omm = M.OperatorMatrixMap(width=8, depth=2, decouple_after=2)
    q = omm.init(jax.random.PRNGKey(1), 16, 8, 2)
    np.testing.assert_allclose(np.asarray(omm(q, G, 1).O), np.asarray(M.OperatorMatrixMap(width=8, depth=2)(q, G, 1).O),
                               atol=1e-14)
    np.testing.assert_allclose(np.asarray(omm(q, G, 2).O), S0.O, atol=1e-14)
    np.testing.assert_allclose(np.asarray(omm(q, G, 2).rho), S0.rho, atol=1e-14)
    with pytest.raises(ValueError):
        M.OperatorMatrixMap(decouple_after=0)


@pytest.mark.parametrize("complex_", [False, True])
def test_keep_state_isometry_keeps_the_initial_state(complex_: bool) -> None:
    """Also for a complex isometry: then the compressed H is complex from the first scale on, and the block's
    (complex) state is still kept exactly."""
    from olrg_hpc.olrg import evaluate as E

    m = models.mixed_field_ising(7, g=0.4)
    lin = M.LinearIsometryMap(keep_state=True, init_scale=0.5, complex_=complex_)
    p = lin.init(jax.random.PRNGKey(2), 8, 4, 5)
    S = E.grow_and_map(m, 7, lin, p, n0=2)
    np.testing.assert_allclose(np.trace(S.rho).real, 1.0, atol=1e-12)  # the plain map loses weight of rho
    np.testing.assert_allclose(E.block_expectation(S, [0.0]), [1.0], atol=1e-12)  # C(0) = <Z_1 Z_2> = 1
    V = np.asarray(lin.isometry(p, R.to_jax(R.grow_site(R.initial_set(m, 2), m)), 0, None, 4))
    np.testing.assert_allclose(V.conj().T @ V, np.eye(4), atol=1e-12)
    assert (np.abs(V.imag).max() > 0.1) == complex_
    assert (np.abs(np.asarray(S.H_terms).imag).max() > 1e-3) == complex_  # rho = |e_1><e_1| either way (QR)
    S2 = E.grow_and_map(m, 7, M.LinearIsometryMap(init_scale=0.5), p, n0=2)
    assert np.trace(S2.rho).real < 1 - 1e-6


def test_dmrg_ground_without_environment_keeps_the_nrg_space() -> None:
    """The ground state's density matrix is rank one, so DMRGMap(mode="ground") keeps the ground state and fills
    the rest with the next lowest eigenvectors of H: the span of NRG's D lowest eigenvectors."""
    m = models.tfim(8, J=1.0, h=0.7)
    S = R.initial_set(m, 3)
    for scale in range(3):  # an exact block, then blocks compressed by NRG
        G = R.grow_site(S, m)
        E = np.linalg.eigvalsh(R.hamiltonian(G))
        for D in (1, 3, 8):
            assert E[D] - E[D - 1] > 0.1  # a gap at the cut: the kept space is well defined
            Vn = M.NRGMap().isometry({}, G, scale, None, D)
            for g in (G, R.to_jax(G)):  # numpy and jax paths
                Vd = np.asarray(M.DMRGMap(mode="ground").isometry({}, g, scale, None, D))
                # both are built from eigenvectors of the same H; they differ only by eigensolver and Gram-Schmidt
                # rounding (measured ~2e-15). With a gap > 0.1 at the cut that rounding cannot rotate the space,
                # 1e-8 leaves a wide margin, and any other kept vector would change the projector by O(1)
                np.testing.assert_allclose(Vd @ Vd.conj().T, Vn @ Vn.conj().T, atol=1e-8)
        S = M.NRGMap()({}, G, scale, dim_keep=8)


def test_decoupled_after_names_the_cut() -> None:
    """Where a map starts dropping sites: the per-scale linear map after its trained scales with beyond="decouple",
    never when shared or reusing; the OMM at decouple_after; fixed maps never."""
    lin = M.LinearIsometryMap(beyond="decouple")
    p = lin.init(jax.random.PRNGKey(0), 8, 4, 5)
    assert lin.decoupled_after(p) == 5
    assert M.LinearIsometryMap(beyond="reuse").decoupled_after(p) is None
    shared = M.LinearIsometryMap(shared=True, beyond="decouple")
    assert shared.decoupled_after(shared.init(jax.random.PRNGKey(0), 8, 4, 5)) is None
    assert M.OperatorMatrixMap(decouple_after=3).decoupled_after({}) == 3
    assert M.OperatorMatrixMap().decoupled_after({}) is None and M.NRGMap().decoupled_after({}) is None
