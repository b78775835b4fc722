"""phi^4 action: conventions, conversions (docs/conventions.md section 2), force vs autodiff, batching."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from olrg_hpc.lattice import phi4
from olrg_hpc.lattice.phi4 import Phi4Action, free_field_values

TUTORIAL = Phi4Action(m2=-4.0, lam=8.0)


@pytest.fixture(scope="module")
def fields() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(4, 8, 8))


def test_tutorial_point_is_beta_lambda_half_half(fields: np.ndarray) -> None:
    # docs/conventions.md: (m2, lam) = (-4, 8) is beta/lambda at beta = 0.5, lam = 0.5 with phi_bl = 2 phi_tut
    act, c = Phi4Action.from_beta_lambda(0.5, 0.5)
    assert act == TUTORIAL
    assert c == 2.0
    chi = phi4.tutorial_to_beta_lambda_field(fields, 0.5)
    np.testing.assert_allclose(np.asarray(chi), 2.0 * fields, rtol=0, atol=0)
    s_tut = np.asarray(TUTORIAL.action(fields))
    s_bl = np.asarray(phi4.beta_lambda_action(chi, 0.5, 0.5))
    assert s_tut.shape == (4,)
    # the forms as written differ by no constant at all
    np.testing.assert_allclose(s_bl, s_tut, rtol=1e-13, atol=1e-11)
    # hopping: kappa = beta / 2 = 0.25, phi_h = phi_tut / sqrt(kappa) = 2 phi_tut
    act_h, s = Phi4Action.from_hopping(0.25, 0.5)
    assert act_h == TUTORIAL and s == 2.0
    phi_h = phi4.tutorial_to_hopping_field(fields, 0.25)
    np.testing.assert_allclose(
        np.asarray(phi4.hopping_action(phi_h, 0.25, 0.5)), s_tut, rtol=1e-13, atol=1e-11
    )
    # the (phi^2 - 1)^2 variant is larger by the constant lam_h * V
    s_const = np.asarray(phi4.hopping_action(phi_h, 0.25, 0.5, include_constant=True))
    np.testing.assert_allclose(s_const - s_tut, 0.5 * 64, rtol=1e-12)


@pytest.mark.parametrize(
    ("beta", "lam", "ndim"), [(0.576, 0.5, 2), (0.634, 0.5, 2), (0.677, 0.3, 2), (0.4, 1.2, 3)]
)
def test_beta_lambda_conversion_random(beta: float, lam: float, ndim: int) -> None:
    rng = np.random.default_rng(1)
    phi = rng.normal(size=(3,) + (6,) * ndim)
    act, c = Phi4Action.from_beta_lambda(beta, lam, ndim=ndim)
    np.testing.assert_allclose(c, np.sqrt(2 / beta))
    np.testing.assert_allclose(act.m2, 2 * (1 - 2 * lam) / beta - 2 * ndim)
    np.testing.assert_allclose(act.lam, 4 * lam / beta**2)
    chi = phi4.tutorial_to_beta_lambda_field(phi, beta)
    np.testing.assert_allclose(
        np.asarray(phi4.beta_lambda_action(chi, beta, lam, ndim)), np.asarray(act.action(phi)), rtol=1e-12
    )
    np.testing.assert_allclose(np.asarray(phi4.beta_lambda_to_tutorial_field(chi, beta)), phi, rtol=1e-15)
    # inverse map
    b2, l2, c2 = act.to_beta_lambda()
    np.testing.assert_allclose([b2, l2, c2], [beta, lam, c], rtol=1e-12)
    kappa, lh, s = act.to_hopping()
    np.testing.assert_allclose([kappa, lh, s], [beta / 2, lam, c], rtol=1e-12)
    np.testing.assert_allclose(
        np.asarray(phi4.hopping_to_tutorial_field(phi4.tutorial_to_hopping_field(phi, kappa), kappa)), phi
    )


def test_tutorial_definition_matches_science_md(fields: np.ndarray) -> None:
    """Literal transcription of S_tut with both +mu and -mu neighbours."""
    m2, lam = -4.0, 8.0
    ref = np.zeros(fields.shape[0])
    for ax in (-2, -1):
        ref += np.sum(
            2 * fields**2 - fields * np.roll(fields, -1, ax) - fields * np.roll(fields, 1, ax), axis=(-2, -1)
        )
    ref += np.sum(m2 * fields**2 + lam * fields**4, axis=(-2, -1))
    np.testing.assert_allclose(np.asarray(TUTORIAL.action(fields)), ref, rtol=1e-13)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_force_is_minus_gradient(ndim: int) -> None:
    act = Phi4Action(m2=-1.3, lam=0.7, ndim=ndim)
    phi = jnp.asarray(np.random.default_rng(2).normal(size=(2,) + (5,) * ndim))
    grad = jax.jit(jax.grad(lambda x: jnp.sum(act.action(x))))(phi)
    np.testing.assert_allclose(np.asarray(jax.jit(act.force)(phi)), -np.asarray(grad), rtol=1e-12, atol=1e-12)


def test_action_density_and_batching(fields: np.ndarray) -> None:
    dens = np.asarray(TUTORIAL.action_density(fields))
    assert dens.shape == fields.shape
    np.testing.assert_allclose(dens.sum(axis=(-2, -1)), np.asarray(TUTORIAL.action(fields)), rtol=1e-12)
    single = [float(TUTORIAL.action(f)) for f in fields]
    np.testing.assert_allclose(np.asarray(TUTORIAL.action(fields)), single, rtol=1e-14)
    # extra batch axes
    stacked = np.stack([fields, fields])
    assert TUTORIAL.action(stacked).shape == (2, 4)


def test_free_action_equals_quadratic_form() -> None:
    """At lam = 0 the tutorial action is phi^T (-Lap + m2) phi, so G(p) = 1 / (2 (p_hat^2 + m2))."""
    L, m2 = 6, 0.7
    act = Phi4Action(m2=m2, lam=0.0)
    n = L * L
    lap = np.zeros((n, n))
    for y in range(L):
        for x in range(L):
            i = y * L + x
            lap[i, i] = -4
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                lap[i, ((y + dy) % L) * L + (x + dx) % L] += 1
    phi = np.random.default_rng(3).normal(size=(L, L))
    v = phi.ravel()
    np.testing.assert_allclose(float(act.action(phi)), v @ ((-lap + m2 * np.eye(n)) @ v), rtol=1e-12)


def test_to_beta_lambda_rejects_impossible() -> None:
    with pytest.raises(ValueError):
        Phi4Action(m2=-5.0, lam=0.0).to_beta_lambda()
    with pytest.raises(ValueError):
        Phi4Action.from_beta_lambda(0.0, 0.5)


@pytest.mark.parametrize(("L", "m2", "phi2", "chi2"), [(8, 1.0, 0.1270869988, 0.5), (8, 0.25, 0.1927505945, 2.0),
                                                       (16, 1.0, 0.1270249394, 0.5)])
def test_free_field_values_match_the_conventions_table(L: int, m2: float, phi2: float, chi2: float) -> None:
    """Against the exact free-field table of docs/conventions.md (10 digits there: 1e-10)."""
    got = free_field_values((L, L), m2)
    assert got["phi2"] == pytest.approx(phi2, abs=1e-10) and got["chi2"] == pytest.approx(chi2, abs=1e-12)
    with pytest.raises(ValueError, match="m2 > 0"):
        free_field_values((L, L), 0.0)
