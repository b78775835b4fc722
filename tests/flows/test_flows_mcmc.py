"""Independent MH with flow proposals and flow-HMC: exact free-field flow, identity flow = plain HMC."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from olrg_hpc.flows.layers import FreeFieldLinear
from olrg_hpc.flows.mcmc import FlowedAction, flow_hmc, flow_imh, flow_multi_mh
from olrg_hpc.flows.model import Flow, GaussianPrior, init_flow, tutorial_flow
from olrg_hpc.flows.train import train
from olrg_hpc.jaxsetup import enable_x64
from olrg_hpc.lattice.autocorr import mean_error
from olrg_hpc.lattice.hmc import run_chain
from olrg_hpc.lattice.phi4 import Phi4Action

enable_x64()

# exact free-field values (G(p) = 1 / [2 (p_hat^2 + m2)], docs/phi4-hmc.md) (tutorial convention, L = 8, m2 = 1)
PHI2_L8_M1 = 0.1270869988
NN_L8_M1 = 0.0338587486


def _phi2_nn(phi: jax.Array) -> tuple[jax.Array, jax.Array]:
    nn_ = 0.5 * jnp.mean(phi * (jnp.roll(phi, 1, -1) + jnp.roll(phi, 1, -2)), axis=(-2, -1))
    return jnp.mean(phi * phi, axis=(-2, -1)), nn_


def test_exact_free_field_flow_is_always_accepted() -> None:
    flow = Flow((FreeFieldLinear(1.0),))
    prior = GaussianPrior((8, 8), "float64")
    res = flow_imh(flow, {}, prior, Phi4Action(1.0, 0.0), jax.random.key(3), 400, 8, measure=_phi2_nn)
    assert float(res.acceptance) == 1.0
    assert float(jnp.std(res.logw)) < 1e-10  # log w = log Z for every sample
    p2, nn_ = (np.asarray(a) for a in res.measurements)
    for series, exact in ((p2, PHI2_L8_M1), (nn_, NN_L8_M1)):
        mean, err, _ = mean_error(series)
        assert abs(mean - exact) < 4 * err, (mean, err, exact)


def test_imh_rejects_with_imperfect_flow() -> None:
    flow = Flow((FreeFieldLinear(2.0),))  # wrong mass: not exact any more
    prior = GaussianPrior((8, 8), "float64")
    res = flow_imh(flow, {}, prior, Phi4Action(1.0, 0.0), jax.random.key(3), 50, 4)
    assert 0.0 < float(res.acceptance) < 1.0
    assert res.measurements.shape == (50, 4, 8, 8) and res.accepted.shape == (50, 4)


@pytest.mark.parametrize("measure", [None, _phi2_nn])
def test_imh_blocks_give_the_same_chains(measure) -> None:
    """Proposals drawn ``block`` steps at a time use the random numbers of their step, so every block size runs
    the same chains: one step at a time (block 1, the plain algorithm), 7 (30 steps: the last block is cut
    short), 30 and the default. Imperfect flow (wrong mass), so that there are rejections; float64, so the only
    difference, the rounding of the flow on a larger batch, is ~1e-15."""
    flow = Flow((FreeFieldLinear(2.0),))
    prior = GaussianPrior((6, 6), "float64")
    runs = [flow_imh(flow, {}, prior, Phi4Action(1.0, 0.5), jax.random.key(9), 30, 4, measure=measure, block=b)
            for b in (1, 7, 30, None)]  # None: the default, here one block (IMH_SITES_PER_CALL)
    ref = runs[0]
    assert 0.2 < float(ref.acceptance) < 0.9 and ref.accepted.shape == ref.logw.shape == (30, 4)
    for res in runs[1:]:
        np.testing.assert_array_equal(np.asarray(res.accepted), np.asarray(ref.accepted))
        np.testing.assert_allclose(np.asarray(res.logw), np.asarray(ref.logw), rtol=1e-12)
        np.testing.assert_allclose(np.asarray(res.phi), np.asarray(ref.phi), rtol=1e-12)
        for a, b in zip(jax.tree.leaves(res.measurements), jax.tree.leaves(ref.measurements), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    # the final configurations are the last accepted proposals: phi and the last measurement agree
    if measure is None:
        np.testing.assert_array_equal(np.asarray(ref.measurements[-1]), np.asarray(ref.phi))
    with pytest.raises(ValueError, match="block must be >= 1"):
        flow_imh(flow, {}, prior, Phi4Action(1.0, 0.5), jax.random.key(9), 30, 4, block=0)


@pytest.mark.parametrize("n_candidates", [2, 8])
def test_multi_mh_estimates_are_exact_with_an_imperfect_flow(n_candidates: int) -> None:
    """Multiple-proposal MH with a wrong-mass flow for the free field (m2 = 1, L = 8): the chains move at some
    steps, not at all, and the Rao-Blackwellised estimates of <phi^2> and the nearest-neighbour correlator agree
    with the exact values within 4 Gamma-method errors (a 6e-5 chance each for a correct sampler)."""
    flow = Flow((FreeFieldLinear(2.0),))
    prior = GaussianPrior((8, 8), "float64")
    res = flow_multi_mh(flow, {}, prior, Phi4Action(1.0, 0.0), jax.random.key(5), 1500, 8, n_candidates, _phi2_nn)
    assert 0.05 < float(res.acceptance) < 0.95 and res.moved.shape == (1500, 8)
    for series, exact in zip(res.estimates, (PHI2_L8_M1, NN_L8_M1), strict=True):
        assert series.shape == (1500, 8)
        mean, err, _ = mean_error(np.asarray(series))
        assert abs(mean - exact) < 4 * err, (n_candidates, mean, err, exact)


def test_multi_mh_with_an_exact_flow_moves_to_a_fresh_candidate_at_rate_1_minus_1_over_n() -> None:
    """All weights equal: each candidate is selected with probability 1/N, so a chain moves at (N - 1)/N of its
    steps (N = 4: 0.75 within 4 binomial errors of 8 x 400 steps) and the estimates are exact on average."""
    flow = Flow((FreeFieldLinear(1.0),))
    prior = GaussianPrior((8, 8), "float64")
    res = flow_multi_mh(flow, {}, prior, Phi4Action(1.0, 0.0), jax.random.key(2), 400, 8, 4, _phi2_nn)
    assert abs(float(res.acceptance) - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 3200)
    mean, err, _ = mean_error(np.asarray(res.estimates[0]))
    assert abs(mean - PHI2_L8_M1) < 4 * err


def test_multi_mh_blocks_give_the_same_chains() -> None:
    """As for flow_imh: block sizes 1, 7 (the last block cut short), 30 and the default run the same chains (the
    same moves, final states and estimates, float64, up to the rounding of the flow on a larger batch; the final
    state is gathered from a different place in each block layout). Candidate counts below 2 and block 0 are
    refused."""
    flow = Flow((FreeFieldLinear(2.0),))
    prior = GaussianPrior((6, 6), "float64")
    action = Phi4Action(1.0, 0.5)
    runs = [flow_multi_mh(flow, {}, prior, action, jax.random.key(9), 30, 4, 3, _phi2_nn, block=b)
            for b in (1, 7, 30, None)]
    ref = runs[0]
    assert 0.1 < float(ref.acceptance) < 0.95
    for res in runs[1:]:
        np.testing.assert_array_equal(np.asarray(res.moved), np.asarray(ref.moved))
        np.testing.assert_allclose(np.asarray(res.phi), np.asarray(ref.phi), rtol=1e-12)
        for a, b in zip(res.estimates, ref.estimates, strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12)
    with pytest.raises(ValueError, match="n_candidates must be >= 2"):
        flow_multi_mh(flow, {}, prior, action, jax.random.key(9), 30, 4, 1, _phi2_nn)
    with pytest.raises(ValueError, match="block must be >= 1"):
        flow_multi_mh(flow, {}, prior, action, jax.random.key(9), 30, 4, 3, _phi2_nn, block=0)


def test_identity_flow_hmc_reproduces_plain_hmc() -> None:
    action = Phi4Action(-4.0, 8.0)
    phi0 = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4)) * 0.5)
    key = jax.random.key(11)
    kw = {"tau": 0.5, "n_steps": 5, "integrator": "leapfrog"}
    ref = run_chain(action, phi0, 4, key, **kw)
    res = flow_hmc(Flow(()), {}, action, phi0, 4, key, **kw)
    np.testing.assert_allclose(np.asarray(res.phi), np.asarray(ref.measurements), atol=1e-10, rtol=0)
    np.testing.assert_allclose(np.asarray(res.dH), np.asarray(ref.dH), atol=1e-9, rtol=0)
    np.testing.assert_array_equal(np.asarray(res.accepted), np.asarray(ref.accepted))


def _sum_and_square(phi: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.sum(phi, axis=(-2, -1)), jnp.sum(phi**2, axis=(-2, -1))


def test_flow_hmc_measures_the_flowed_field_inside_the_scan() -> None:
    """``measure`` sees ``F(z)``: same numbers as measuring the stored configurations (same chain, same keys),
    without keeping them (the memory of flow-HMC then does not grow with n_traj x volume)."""
    flow = Flow((FreeFieldLinear(1.3),))  # a non-trivial F, so F(z) != z
    z = jnp.asarray(np.random.default_rng(2).normal(size=(3, 4, 4)))
    kw = {"tau": 0.5, "n_steps": 4, "meas_every": 2}
    stored = flow_hmc(flow, {}, Phi4Action(1.0, 0.0), z, 6, jax.random.key(5), **kw)
    measured = flow_hmc(flow, {}, Phi4Action(1.0, 0.0), z, 6, jax.random.key(5), measure=_sum_and_square, **kw)
    assert measured.phi[0].shape == (3, 3)  # (n_traj / meas_every, chains): no configurations kept
    for got, want in zip(measured.phi, _sum_and_square(stored.phi), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
    assert not np.allclose(np.asarray(stored.phi[-1]), np.asarray(stored.z))  # F(z) differs from z


def test_flowed_action_of_exact_flow_is_gaussian() -> None:
    """S~(z) = S(K z) - log det K = z^2 / 2 + const for the exact free-field map."""
    flow = Flow((FreeFieldLinear(1.0),))
    eff = FlowedAction(flow, {}, Phi4Action(1.0, 0.0))
    z = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4, 4)))
    s_eff, force = jax.jit(lambda e, v: (e.action(v), e.force(v)))(eff, z)
    s = np.asarray(s_eff) - 0.5 * np.sum(np.asarray(z) ** 2, axis=(-2, -1))
    assert float(np.std(s)) < 1e-12
    np.testing.assert_allclose(np.asarray(force), -np.asarray(z), atol=1e-12)


@pytest.mark.slow
def test_flow_hmc_with_exact_flow_is_nearly_free() -> None:
    flow = Flow((FreeFieldLinear(1.0),))
    z = jnp.asarray(np.random.default_rng(1).normal(size=(3, 4, 4)))
    res = flow_hmc(flow, {}, Phi4Action(1.0, 0.0), z, 5, jax.random.key(0), tau=1.0, n_steps=10)
    assert float(res.acceptance) > 0.9
    assert res.phi.shape == (5, 3, 4, 4)


@pytest.mark.slow
def test_trained_flow_imh_matches_hmc_at_tutorial_point() -> None:
    """Tutorial-style flow (8 couplings, hidden [8, 8]) trained 2000 steps at L = 8, m2 = -4, lam = 8 with a
    cosine-annealed lr from 1e-2 (acceptance ~0.3; 16 couplings at constant lr 1e-3 need 4000 steps and four
    times the seconds for ~0.4); IMH observables agree with plain HMC within errors. (After only 1500 steps of
    an 8-layer flow at lr 1e-3, acceptance ~0.05, IMH's |M| was 5 sigma low: too few large-weight proposals.)"""
    action = Phi4Action(-4.0, 8.0)
    flow = tutorial_flow(n_layers=8, hidden=(8, 8), kernel_size=3)
    prior = GaussianPrior((8, 8), "float32")
    res = train(flow, prior, action, n_steps=2000, batch_size=64, key=0, lr=1e-2, cosine=True, devices=1,
                params=init_flow(flow, 0, (8, 8), jnp.float32))
    imh = flow_imh(flow, res.state.params, prior, action, jax.random.key(5), 4000, 8, measure=_abs_m_phi2)
    assert float(imh.acceptance) > 0.2
    hmc = run_chain(action, jnp.zeros((8, 8, 8)), 2000, jax.random.key(6), tau=1.0, n_steps=10, n_therm=200,
                    measure=_abs_m_phi2, tau_jitter=0.2)
    for a, b in zip(imh.measurements, hmc.measurements, strict=True):
        m1, e1, _ = mean_error(np.asarray(a, np.float64))
        m2, e2, _ = mean_error(np.asarray(b))
        assert abs(m1 - m2) < 4 * np.hypot(e1, e2), (m1, e1, m2, e2)


def _abs_m_phi2(phi: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.abs(jnp.mean(phi, axis=(-2, -1))), jnp.mean(phi * phi, axis=(-2, -1))
