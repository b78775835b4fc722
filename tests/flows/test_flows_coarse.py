"""Coarse-lattice priors: interleaving, densities, distinct picks, and coarse-to-fine weight transfer."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from olrg_hpc.flows.coarse import (
    CoarsePrior,
    EnsemblePrior,
    RefineFlow,
    RefinePrior,
    _choose4,
    deinterleave,
    interleave,
    refine_sigma,
    transfer_params,
)
from olrg_hpc.flows.model import Flow, albandea_flow, init_flow, z2_flow
from olrg_hpc.flows.train import train
from olrg_hpc.jaxsetup import enable_x64
from olrg_hpc.lattice.hmc import run_chain
from olrg_hpc.lattice.phi4 import Phi4Action

enable_x64()


def test_interleave_convention_and_inverse() -> None:
    c = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 2, 3)))
    phi = interleave(c)
    assert phi.shape == (3, 4, 6)
    for a in range(2):
        for b in range(2):
            for x in range(2):
                for y in range(3):
                    assert phi[1, 2 * x + a, 2 * y + b] == c[1, 2 * a + b, x, y]
    np.testing.assert_array_equal(np.asarray(deinterleave(phi)), np.asarray(c))
    with pytest.raises(ValueError):
        interleave(c[:, :3])


def test_choose4_distinct_and_uniform() -> None:
    keys = jax.random.split(jax.random.key(0), 3000)
    idx = np.asarray(jax.jit(jax.vmap(_choose4, in_axes=(0, None)), static_argnums=1)(keys, 6))
    assert all(len(set(row)) == 4 for row in idx)
    counts = np.bincount(idx.ravel(), minlength=6) / idx.size
    np.testing.assert_allclose(counts, 1 / 6, atol=0.012)


def _ensemble(action: Phi4Action, shape: tuple[int, int], n: int, seed: int) -> jax.Array:
    res = run_chain(action, jnp.zeros((4, *shape)), n // 4, jax.random.key(seed), tau=1.0, n_steps=8, n_therm=20)
    return res.measurements.reshape((-1, *shape))


def test_coarse_prior_density_and_samples() -> None:
    act_c = Phi4Action(-4.0, 8.0)
    ens = jnp.asarray(np.random.default_rng(1).normal(size=(10, 2, 2)))
    prior = CoarsePrior(act_c, ens, 0.7)
    assert prior.shape == (4, 4)
    z, lp = jax.jit(lambda pr, k: (pr.sample(k, 5), pr.log_prob(pr.sample(k, 5))))(prior, jax.random.key(3))
    assert z.shape == (5, 4, 4)
    coarse = np.asarray(deinterleave(z / 0.7))
    # each sample consists of 4 distinct ensemble members
    flat = np.asarray(ens).reshape(10, -1)
    for k in range(5):
        ids = [int(np.argmin(np.abs(flat - np.asarray(coarse[k, j]).ravel()).sum(1))) for j in range(4)]
        assert len(set(ids)) == 4
    expected = -sum(_np_action(coarse[:, j], -4.0, 8.0) for j in range(4)) - 16 * math.log(0.7)
    np.testing.assert_allclose(np.asarray(lp), expected, rtol=1e-12)
    same = EnsemblePrior(act_c, ens, 1.0)
    zs, lps = jax.jit(lambda pr, k: (pr.sample(k, 3), pr.log_prob(pr.sample(k, 3))))(same, jax.random.key(0))
    np.testing.assert_allclose(np.asarray(lps), -_np_action(np.asarray(zs), -4.0, 8.0), rtol=1e-12)


def _refine_inverse(z: jax.Array, s: float, sigma: float, interpolate: bool) -> tuple[jax.Array, jax.Array]:
    """``z -> (phi_c, eps)`` of the one-configuration prior, written site by site (independent of coarse.py)."""
    n1, n2 = z.shape[0] // 2, z.shape[1] // 2
    c = jnp.stack([jnp.stack([z[2 * x, 2 * y] / s for y in range(n2)]) for x in range(n1)])

    def mean(x: int, y: int, a: int, b: int) -> jax.Array:
        if not interpolate:
            return jnp.zeros((), z.dtype)
        corners = [s * c[(x + da) % n1, (y + db) % n2] for da in range(a + 1) for db in range(b + 1)]
        return sum(corners) / len(corners)

    eps = jnp.stack([jnp.stack([jnp.stack([(z[2 * x + a, 2 * y + b] - mean(x, y, a, b)) / sigma
                                           for y in range(n2)]) for x in range(n1)])
                     for a, b in ((0, 1), (1, 0), (1, 1))])
    return c, eps


@pytest.mark.parametrize("interpolate", [True, False])
def test_refine_prior_is_a_change_of_variables(interpolate: bool) -> None:
    """``log r(z) = -S_c(phi_c) + log N(eps) + log |det d(phi_c, eps)/dz|``, the Jacobian taken by autodiff of an
    independent site-by-site inverse on a 4 x 6 lattice; exact to rounding (1e-10)."""
    act_c = Phi4Action(-4.0, 8.0)
    ens = jnp.asarray(np.random.default_rng(4).normal(size=(7, 2, 3)))
    s, sigma = 0.7, 0.3
    prior = RefinePrior(act_c, ens, s, sigma, interpolate)
    assert prior.shape == (4, 6)
    z, lp = jax.jit(lambda pr, k: (pr.sample(k, 3), pr.log_prob(pr.sample(k, 3))))(prior, jax.random.key(2))
    flat = np.asarray(ens).reshape(7, -1)

    def inverse_flat(v: jax.Array) -> jax.Array:
        return jnp.concatenate([a.ravel() for a in _refine_inverse(v, s, sigma, interpolate)])

    for k in range(3):
        c, eps = _refine_inverse(z[k], s, sigma, interpolate)
        assert np.min(np.abs(flat - np.asarray(c).ravel()).sum(1)) < 1e-12  # an ensemble member, exactly
        jac = jax.jacfwd(inverse_flat)(z[k])
        _, logdet = np.linalg.slogdet(np.asarray(jac).reshape(24, 24))
        expected = (-_np_action(np.asarray(c), -4.0, 8.0) - 0.5 * float(jnp.sum(eps**2))
                    - 18 * 0.5 * math.log(2 * math.pi) + logdet)
        assert abs(float(lp[k]) - expected) < 1e-10


def test_refine_prior_noise_is_standard_normal_about_the_mean() -> None:
    """Sampled noise sublattices, mapped back with the independent inverse: mean 0 and variance 1 within 5 standard
    errors of 4000 x 18 draws."""
    ens = jnp.asarray(np.random.default_rng(5).normal(size=(5, 2, 3)))
    prior = RefinePrior(Phi4Action(1.0, 0.0), ens, 1.3, 0.4, True)
    z = prior.sample(jax.random.key(1), 4000)
    eps = np.asarray(jax.vmap(lambda v: _refine_inverse(v, 1.3, 0.4, True)[1])(z)).ravel()
    se = 1 / math.sqrt(eps.size)
    assert abs(eps.mean()) < 5 * se and abs(eps.var() - 1) < 5 * math.sqrt(2) * se


def test_refine_sigma_defaults() -> None:
    """Checkerboard +-0.5 fields: neighbour differences 1 (bridge midpoint spread 0.5), rms 0.5; both times scale."""
    cb = 0.5 * (-1.0) ** np.add.outer(np.arange(4), np.arange(4))
    ens = np.stack([cb, -cb])
    assert refine_sigma(ens, 2.0, interpolate=True) == pytest.approx(1.0)
    assert refine_sigma(ens, 2.0, interpolate=False) == pytest.approx(1.0)
    assert refine_sigma(0.5 * ens, 1.0, interpolate=True) == pytest.approx(0.25)


def _np_action(phi: np.ndarray, m2: float, lam: float) -> np.ndarray:
    """Tutorial action in numpy (independent of Phi4Action)."""
    kin = sum(phi * (2 * phi - np.roll(phi, 1, ax) - np.roll(phi, -1, ax)) for ax in (-1, -2))
    return np.sum(kin + m2 * phi**2 + lam * phi**4, axis=(-2, -1))


def test_flow_trained_at_l8_applies_at_l16_with_exact_log_det() -> None:
    """Coarse prior from a 4x4 HMC ensemble (beta = 0.576), target 8x8 (beta = 0.634), lam = 0.5
    (Albandea et al.); then the trained weights run unchanged at L = 16."""
    act_c, c_c = Phi4Action.from_beta_lambda(0.576, 0.5)
    act_f, c_f = Phi4Action.from_beta_lambda(0.634, 0.5)
    # stand-in ensemble (the HMC-generated one is in the slow test below): only shapes matter here
    ens = jnp.asarray(0.6 * np.random.default_rng(0).normal(size=(64, 4, 4)), jnp.float32)
    prior = CoarsePrior(act_c, ens, c_c / c_f)
    flow = albandea_flow(3)
    res = train(flow, prior, act_f, n_steps=30, batch_size=32, key=1, lr=1e-2, devices=1,
                params=init_flow(flow, 0, (8, 8), jnp.float32))
    assert np.all(np.isfinite(res.losses)) and res.losses[-5:].mean() < res.losses[:5].mean()
    params = transfer_params(res.state.params, jnp.float64)
    x = jnp.asarray(np.random.default_rng(2).normal(size=(16, 16)))

    def single(v: jax.Array) -> jax.Array:
        return flow.apply(params, v[None])[0][0]

    jac, (y, log_det) = jax.jit(lambda v: (jax.jacrev(single)(v), flow.apply(params, v[None])))(x)
    _, logabs = np.linalg.slogdet(np.asarray(jac).reshape(256, 256))
    assert abs(float(log_det[0]) - logabs) < 1e-10
    x2, ld_inv = jax.jit(lambda v: flow.apply(params, v, method="inverse"))(y)
    np.testing.assert_allclose(np.asarray(x2[0]), np.asarray(x), atol=1e-12)
    assert abs(float(ld_inv[0] + log_det[0])) < 1e-12


@pytest.mark.slow
def test_coarse_to_fine_training_improves_on_prior() -> None:
    """HMC ensemble at L = 4 (beta = 0.576) -> Albandea flow -> L = 8 target (beta = 0.634): ESS rises."""
    from olrg_hpc.flows.train import evaluate

    act_c, c_c = Phi4Action.from_beta_lambda(0.576, 0.5)
    act_f, c_f = Phi4Action.from_beta_lambda(0.634, 0.5)
    ens = _ensemble(act_c, (4, 4), 2000, seed=0).astype(jnp.float32)
    prior = CoarsePrior(act_c, ens, c_c / c_f)
    flow = albandea_flow(3)
    p0 = init_flow(flow, 0, (8, 8), jnp.float32)
    before = evaluate(flow, p0, prior, act_f, jax.random.key(9), 2048)
    res = train(flow, prior, act_f, n_steps=300, batch_size=256, key=1, lr=1e-2, cosine=True, params=p0)
    after = evaluate(flow, res.state.params, prior, act_f, jax.random.key(9), 2048)
    assert after["loss"] < before["loss"]
    assert after["ess"] > before["ess"]


def test_refine_flow_puts_the_coarse_flow_on_the_cell_and_nests() -> None:
    """RefineFlow (float64): the even sublattice is s F_c(x_c), the others the bilinear means of it plus sigma_ab
    times their input; nested twice (8 -> 4 -> 2), log_det against the jacrev Jacobian (1e-10) and the inverse
    (1e-12)."""
    coarse = z2_flow(n_layers=2, hidden=(3,), kernel_size=3, free_field=True)
    layer = RefineFlow(coarse, scale=1.3)
    params = init_flow(Flow((layer,)), 0, (4, 4), jnp.float64)
    params["params"]["layers_0"]["log_sigma"] = jnp.log(jnp.array([0.2, 0.3, 0.4]))
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4, 4)))
    y, _ = Flow((layer,)).apply(params, x)
    sub_x, sub_y = deinterleave(x), deinterleave(y)
    phi_c, _ = coarse.apply({"params": params["params"]["layers_0"]["coarse"]}, sub_x[:, 0])
    np.testing.assert_allclose(np.asarray(sub_y[:, 0]), 1.3 * np.asarray(phi_c), atol=1e-12)
    cf = np.asarray(sub_y[:, 0])
    right, down = np.roll(cf, -1, -1), np.roll(cf, -1, -2)
    means = [(cf + right) / 2, (cf + down) / 2, (cf + right + down + np.roll(down, -1, -1)) / 4]
    for k, (m, sig) in enumerate(zip(means, (0.2, 0.3, 0.4), strict=True)):
        np.testing.assert_allclose(np.asarray(sub_y[:, k + 1]), m + sig * np.asarray(sub_x[:, k + 1]), atol=1e-12)

    def heads() -> tuple:  # fresh modules each time: a flax module instance belongs to one parent
        return z2_flow(n_layers=2, hidden=(3,), kernel_size=3, sublattice=True).layers

    nested = Flow((RefineFlow(Flow((RefineFlow(coarse, scale=1.1), *heads())), scale=0.9), *heads()))
    p2 = init_flow(nested, 3, (8, 8), jnp.float64)
    p2 = jax.tree.map(lambda a: a + 0.2 * np.random.default_rng(2).normal(size=a.shape), p2)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 8, 8)))
    jac, (y, ld), (x2, ld_inv) = jax.jit(lambda v: (
        jax.jacrev(lambda u: nested.apply(p2, u[None])[0][0])(v[0]), nested.apply(p2, v),
        nested.apply(p2, nested.apply(p2, v)[0], method="inverse")))(x)
    _, logabs = np.linalg.slogdet(np.asarray(jac).reshape(64, 64))
    assert abs(float(ld[0]) - logabs) < 1e-10
    np.testing.assert_allclose(np.asarray(x2), np.asarray(x), atol=1e-12)
    np.testing.assert_allclose(np.asarray(ld_inv), -np.asarray(ld), atol=1e-12)
