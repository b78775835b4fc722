"""Consistency in environments: superblocks (``relevant.couple``), their C(t) (``loss.pure_curve``), the loss term."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from olrg_hpc.olrg import loss as L
from olrg_hpc.olrg import maps as M
from olrg_hpc.olrg.evaluate import exact_curve
from olrg_hpc.olrg.relevant import RelevantSet, couple, grow_exact, grow_site, initial_set
from olrg_hpc.spins.ed import dense_hamiltonian
from olrg_hpc.spins.models import make_model


def _reversal(n: int) -> np.ndarray:
    """Permutation matrix that reverses the order of ``n`` qubits (the most significant factor first)."""
    idx = np.arange(2**n).reshape((2,) * n).transpose(tuple(range(n - 1, -1, -1))).ravel()
    return np.eye(2**n)[idx]


@pytest.mark.parametrize("name", ["tfim", "mixed_field_ising"])
def test_superblock_of_exact_blocks_is_the_longer_chain(name: str) -> None:
    """A block of 4 sites joined to a mirrored exact block of 3 is the 7-site chain: the Hamiltonian equals the dense
    one after reversing the environment's sites (exact identity, to rounding), and C(t) on it equals the exact 7-site
    curve."""
    m = make_model(name, 7)
    S, E = grow_exact(m, 4), initial_set(m, 3, "Z0")
    sb = couple(S, E, m)
    P = np.kron(np.eye(16), _reversal(3))
    np.testing.assert_allclose(P @ np.asarray(sb.H_terms[0]) @ P.T, dense_hamiltonian(m), atol=1e-13)
    t = np.linspace(0.0, 3.0, 13)
    np.testing.assert_allclose(np.asarray(L.pure_curve(sb, t)), exact_curve(m, 7, t), atol=1e-12)


def test_pure_curve_is_order_zero_and_its_derivative_is_exact_for_degenerate_spectra() -> None:
    """``pure_curve`` equals order 0 of ``tobc_chi`` (same quantity, two formulations: agreement to rounding), and its
    JVP in ``H``, ``O``, the state and ``t`` equals central differences. ``H`` has a doubly degenerate level, where
    plain autodiff through ``eigh`` gives NaN; a central difference with step 1e-5 is exact to O(1e-10) here."""
    rng = np.random.default_rng(3)
    d = 12
    Q = np.linalg.qr(rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d)))[0]
    H = Q @ np.diag([0.0, 0.0, *rng.normal(size=d - 2)]) @ Q.conj().T
    O = rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d))
    O = O + O.conj().T
    psi = rng.normal(size=d) + 1j * rng.normal(size=d)
    t = np.linspace(0.2, 2.5, 6)
    S = RelevantSet(H_terms=jnp.asarray(H)[None], H_coefs=jnp.ones(1), B=jnp.zeros((1, d, d), complex),
                      O=jnp.asarray(O), rho=jnp.asarray(np.outer(psi, psi.conj())), n=0)
    np.testing.assert_allclose(np.asarray(L.pure_curve(S, t)),
                               np.real(np.asarray(L.tobc_chi(S, np.zeros((6, 0)), np.zeros((6, 0)), t))), atol=1e-12)
    dirs = [rng.normal(size=(d, d)) + 1j * rng.normal(size=(d, d)) for _ in range(2)]
    dH, dO = (x + x.conj().T for x in dirs)
    dpsi, dt = rng.normal(size=d) + 1j * rng.normal(size=d), rng.normal(size=6)

    def f(e: float) -> jax.Array:
        return L._pure_curve_eig(jnp.asarray(H + e * dH), jnp.asarray(O + e * dO), jnp.asarray(psi + e * dpsi),
                                 jnp.asarray(t + e * dt))

    _, jvp = jax.jvp(f, (0.0,), (1.0,))
    fd = (f(1e-5) - f(-1e-5)) / 2e-5
    assert np.all(np.isfinite(np.asarray(jvp)))
    np.testing.assert_allclose(np.asarray(jvp), np.asarray(fd), atol=1e-7 * float(np.abs(fd).max()))
    # reverse mode transposes the same linear map
    g = jax.grad(lambda e: f(e).sum())(0.0)
    np.testing.assert_allclose(float(g), float(np.asarray(jvp).sum()), rtol=1e-12)


def test_environment_term_of_the_loss() -> None:
    """The loss with environments is the loss without them plus ``env_weight`` times, per environment, the weighted
    squared difference of C(T_s) of the grown block and of its compression, each joined to the environment (written
    out here for one scale). The identity map compresses nothing, so the term is exactly zero for it."""
    m = make_model("tfim", 6, J=1.0, h=0.7)
    base = dict(model=m, n0=3, n_final=4, T=1.5, K=1, n_per_order=4, sample_T=True, consistency="local")
    plain, with_env = L.LossConfig(**base), L.LossConfig(**base, environments=(2, "latest"), env_weight=0.5)
    batch = L.make_batch(plain, seed=1)
    lin = M.LinearIsometryMap(complex_=True, keep_state=True, init_scale=0.3)
    p = lin.init(jax.random.PRNGKey(0), 16, 8, 1)
    S = initial_set(m, 3)
    G = grow_site(S, m)
    Sm = lin(p, G, 0, None, dim_keep=8)
    b0 = batch.blocks[0]
    term = sum(np.sum(b0.weight * (np.asarray(L.pure_curve(couple(G, E, m), b0.Tf))
                                   - np.asarray(L.pure_curve(couple(Sm, E, m), b0.Tf))) ** 2)
               for E in (initial_set(m, 2, "Z0"), S))
    assert term > 1e-6  # a random isometry is far from consistent
    np.testing.assert_allclose(float(L.olrg_loss(p, lin, with_env, batch)),
                               float(L.olrg_loss(p, lin, plain, batch)) + 0.5 * term, rtol=1e-10)
    assert float(L.olrg_loss({}, M.IdentityMap(), L.LossConfig(**{**base, "environments": (1, "latest")}),
                             batch)) < 1e-25
    for bad in ((0,), (7,), ("first",)):
        with pytest.raises(ValueError, match="environments"):
            L.LossConfig(**base, environments=bad)
