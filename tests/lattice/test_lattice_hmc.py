"""JAX HMC: reversibility, <exp(-dH)> = 1, dH ~ eps^2, exact free-field values (docs/conventions.md section 2)."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from olrg_hpc.lattice import hmc
from olrg_hpc.lattice import observables as ob
from olrg_hpc.lattice.phi4 import Phi4Action

TUTORIAL = Phi4Action(m2=-4.0, lam=8.0)
FREE = Phi4Action(m2=1.0, lam=0.0)
L = 8
V = L * L


N_CHAINS = 256


def _ensemble(action: Phi4Action, phi0: jax.Array, seed: int) -> hmc.ChainResult:
    """256 chains, 50 thermalisation + 300 trajectories (tau = 1 +- 50 %, 10 leapfrog steps), measured every
    2nd trajectory (configurations kept). Both ensembles below share this static signature and the action
    is a pytree, so XLA compiles once; RBG keys compile ~3x faster than threefry on CPU."""
    return hmc.run_chain(
        action,
        phi0,
        300,
        jax.random.key(seed, impl="rbg"),
        n_steps=10,
        tau_jitter=0.5,
        meas_every=2,
        n_therm=50,
    )


@pytest.fixture(scope="module")
def tutorial_run() -> hmc.ChainResult:
    phi0 = 0.5 * jax.random.normal(jax.random.key(11, impl="rbg"), (N_CHAINS, L, L), dtype=jnp.float64)
    return _ensemble(TUTORIAL, phi0, 12)


@pytest.fixture(scope="module")
def thermalized(tutorial_run: hmc.ChainResult) -> jax.Array:
    """64 equilibrated tutorial-point configurations."""
    return tutorial_run.phi[:64]


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_reversibility(thermalized: jax.Array, integrator: str) -> None:
    phi0 = thermalized[:8]
    p0 = jax.random.normal(jax.random.key(3, impl="rbg"), phi0.shape, dtype=jnp.float64)
    run = jax.jit(partial(hmc.integrate, TUTORIAL, integrator=integrator))
    phi1, p1 = run(phi0, p0, 1.0, 20)
    assert float(jnp.max(jnp.abs(phi1 - phi0))) > 0.1  # it actually moved
    phi2, p2 = run(phi1, -p1, 1.0, 20)
    np.testing.assert_allclose(np.asarray(phi2), np.asarray(phi0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(-p2), np.asarray(p0), rtol=0, atol=1e-12)


def test_exp_minus_dh_is_one(tutorial_run: hmc.ChainResult) -> None:
    res = tutorial_run
    w = np.exp(-np.asarray(res.dH))  # (n_traj, n_chains)
    chain_means = w.mean(axis=0)
    mean = chain_means.mean()
    # independent chains: the spread of the per-chain means gives an error that includes autocorrelation;
    # tolerance 4 sigma of that measured error
    err = chain_means.std(ddof=1) / np.sqrt(chain_means.size)
    assert 0.5 < float(res.acceptance) < 1.0
    assert abs(mean - 1.0) < 4 * err, (mean, err)
    assert err < 0.02  # the check has teeth


@partial(jax.jit, static_argnames=("integrator",))
def _dh(phi: jax.Array, p: jax.Array, n_steps: jax.Array, integrator: str) -> jax.Array:
    phi1, p1 = hmc.integrate(TUTORIAL, phi, p, 1.0, n_steps, integrator)
    return hmc.hamiltonian(TUTORIAL, phi1, p1) - hmc.hamiltonian(TUTORIAL, phi, p)


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_dh_scales_as_eps_squared(thermalized: jax.Array, integrator: str) -> None:
    p = jax.random.normal(jax.random.key(7, impl="rbg"), thermalized.shape, dtype=jnp.float64)
    steps = np.array([16, 24, 32, 48, 64])
    rms = np.array([float(jnp.sqrt(jnp.mean(_dh(thermalized, p, int(n), integrator) ** 2))) for n in steps])
    slope = np.polyfit(np.log(1.0 / steps), np.log(rms), 1)[0]
    assert abs(slope - 2.0) < 0.3, (slope, rms)
    if integrator == "omelyan":
        rms_lf = float(jnp.sqrt(jnp.mean(_dh(thermalized, p, 32, "leapfrog") ** 2)))
        assert rms[2] < rms_lf / 3  # 2MN has a much smaller error coefficient at equal eps


def test_free_field_exact_values() -> None:
    """lam = 0, L = 8, m2 = 1 (tutorial convention): exact values from docs/conventions.md section 2.

    256 chains x 150 measurements (300 trajectories) after 50 thermalisation trajectories; trajectory
    length jittered by +-50% because at fixed tau = 1 the free modes with omega tau ~ pi
    (omega^2 = 2 (p_hat^2 + m2)) are not ergodic. Errors from the spread of the 256 independent per-chain
    means (autocorrelation included); tolerance 4 sigma of that measured error.
    """
    res = _ensemble(FREE, jnp.zeros((N_CHAINS, L, L)), 2024)
    cfg = np.asarray(res.measurements)  # (n_meas, n_chains, L, L)
    x = np.stack(
        [ob.phi2(cfg), V * ob.magnetization(cfg) ** 2, ob.nearest_neighbour(cfg), V * ob.action_density(cfg, FREE)],
        axis=-1,
    )
    chain_means = x.mean(axis=0)
    mean = chain_means.mean(axis=0)
    err = chain_means.std(axis=0, ddof=1) / np.sqrt(N_CHAINS)
    exact = np.array([0.1270869988, 0.5, 0.0338587486, V / 2])
    for name, m, e, ex in zip(["<phi^2>", "chi2", "<phi_x phi_x+e>", "<S>"], mean, err, exact, strict=True):
        assert abs(m - ex) < 4 * e, f"{name}: {m} +- {e} vs exact {ex}"
    assert np.all(err / exact < 0.02)
    assert float(res.acceptance) > 0.8


def test_run_chain_shapes_and_measurement_interval(tutorial_run: hmc.ChainResult) -> None:
    res = tutorial_run
    assert res.measurements.shape == (150, N_CHAINS, L, L)
    assert res.dH.shape == (300, N_CHAINS) and res.accepted.shape == (300, N_CHAINS)
    np.testing.assert_array_equal(np.asarray(res.measurements[-1]), np.asarray(res.phi))
    assert float(res.acceptance) == pytest.approx(float(np.mean(np.asarray(res.accepted))))
    # configurations change between measurements and stay bounded
    assert float(jnp.max(jnp.abs(res.measurements[1] - res.measurements[0]))) > 0
    assert float(jnp.max(jnp.abs(res.measurements))) < 10
    phi0 = jnp.zeros((3, 4, 4))
    with pytest.raises(ValueError):
        hmc.run_chain(FREE, phi0, 5, jax.random.key(0, impl="rbg"), meas_every=2)
    with pytest.raises(ValueError):
        hmc.run_chain(FREE, phi0, 4, jax.random.key(0, impl="rbg"), integrator="euler")


def test_metropolis_rejects_nan_and_keeps_field() -> None:
    phi = jnp.full((2, 4, 4), 50.0)  # huge quartic force: trajectory blows up
    p = jnp.zeros_like(phi)
    out, dh, acc = jax.jit(partial(hmc.metropolis_step, TUTORIAL))(phi, p, jnp.array([0.0, 0.0]), 1.0, 2)
    assert not bool(jnp.any(acc))
    np.testing.assert_array_equal(np.asarray(out), np.asarray(phi))
    # (unbatched fields are exercised by the MPI-vs-JAX comparison in test_lattice_mpi_hmc.py)


@pytest.mark.parametrize("shape", [(3, 8, 8), (5, 6), (2, 130, 128), (256, 256)])
def test_force_matches_action_force_and_autodiff(shape: tuple[int, ...]) -> None:
    """hmc.force (pad/select shifts from PAD_SHIFT_MIN_EXTENT on, jnp.roll below) is bit-identical to
    Phi4Action.force and equals -dS/dphi by autodiff; the shifts equal jnp.roll on every lattice axis."""
    phi = 0.7 * jax.random.normal(jax.random.key(5, impl="rbg"), shape, dtype=jnp.float64)
    act = Phi4Action(m2=-1.3, lam=2.5)
    got = jax.jit(hmc.force)(act, phi)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.jit(act.force)(phi)))
    auto = -jax.grad(lambda x: jnp.sum(act.action(x)))(phi)
    np.testing.assert_allclose(np.asarray(got), np.asarray(auto), rtol=1e-12, atol=1e-12)
    for ax in (-2, -1):
        np.testing.assert_array_equal(np.asarray(hmc._shift(phi, ax, True)), np.asarray(jnp.roll(phi, -1, ax)))
        np.testing.assert_array_equal(np.asarray(hmc._shift(phi, ax, False)), np.asarray(jnp.roll(phi, 1, ax)))


@pytest.mark.parametrize("integrator", ["leapfrog", "omelyan"])
def test_reversibility_large_lattice(integrator: str) -> None:
    """The fused (pad/select) force path on L >= PAD_SHIFT_MIN_EXTENT: reversible to rounding, and the same
    trajectory as the integrator driven by Phi4Action.force itself."""
    L_big = hmc.PAD_SHIFT_MIN_EXTENT
    k1, k2 = jax.random.split(jax.random.key(8, impl="rbg"))
    phi0 = 0.5 * jax.random.normal(k1, (L_big, L_big), dtype=jnp.float64)
    p0 = jax.random.normal(k2, phi0.shape, dtype=jnp.float64)
    run = jax.jit(partial(hmc.integrate, TUTORIAL, integrator=integrator))
    phi1, p1 = run(phi0, p0, 0.5, 20)
    phi2, p2 = run(phi1, -p1, 0.5, 20)
    np.testing.assert_allclose(np.asarray(phi2), np.asarray(phi0), rtol=0, atol=1e-11)
    np.testing.assert_allclose(np.asarray(-p2), np.asarray(p0), rtol=0, atol=1e-11)

    class Plain:  # a non-Phi4Action action object: hmc.force falls back to its own .force
        ndim = 2

        def force(self, phi: jax.Array) -> jax.Array:
            return TUTORIAL.force(phi)

    ref = jax.jit(lambda a, b: hmc.integrate(Plain(), a, b, 0.5, 20, integrator))(phi0, p0)
    np.testing.assert_array_equal(np.asarray(phi1), np.asarray(ref[0]))
    np.testing.assert_array_equal(np.asarray(p1), np.asarray(ref[1]))


def test_tune_n_steps_finds_the_smallest_passing_count() -> None:
    """The tuner's bracket: its count passed its pilot block (acceptance >= acc_min) and every smaller count tried
    failed; doubling starts at 2. The acceptance at fixed step size falls with the volume (<dH^2> ~ V eps^4),
    so a larger lattice needs more steps: the check fails if the search returned a fixed or the largest count."""
    key = jax.random.key(7, impl="rbg")
    found = {}
    for ell in (4, 16):
        phi0 = 0.5 * jax.random.normal(jax.random.fold_in(key, ell), (16, ell, ell))
        phi0 = hmc.run_chain(TUTORIAL, phi0, 50, key, n_steps=10).phi  # thermalised
        n, phi, trials = hmc.tune_n_steps(TUTORIAL, phi0, key, acc_min=0.9, block=40)
        acc = dict(trials)
        assert trials[0][0] == 2 and acc[n] >= 0.9 and phi.shape == phi0.shape
        assert all(a < 0.9 for m, a in trials if m < n)  # every smaller count tried failed
        found[ell] = n
    assert found[16] > found[4]
    n, _, trials = hmc.tune_n_steps(TUTORIAL, phi0, key, acc_min=0.999, block=20, max_steps=4)
    assert n == 4 and [m for m, _ in trials][:2] == [2, 4]  # capped
    with pytest.raises(ValueError, match="acc_min"):
        hmc.tune_n_steps(TUTORIAL, phi0, key, acc_min=1.0)


def test_force_of_a_block_with_its_halos_is_the_block_of_the_force() -> None:
    """Domain decomposition's kernel identity: the force of a block, its halos taken from the neighbouring
    blocks, equals that block of the whole lattice's force bit for bit (same additions in the same order), for
    small (roll) and large (pad/select) lattices; halos of None are the block's own periodic wrap."""
    act = Phi4Action(-4.0, 8.0)
    for L in (8, 256):
        phi = 0.5 * jax.random.normal(jax.random.key(L), (L, 2 * L), dtype=jnp.float64)
        whole = np.asarray(hmc.force(act, phi))
        y0, y1, x0, x1 = L // 4, L // 2, L // 2, L
        blk = phi[y0:y1, x0:x1]
        halos = ((phi[y1 : y1 + 1, x0:x1], phi[y0 - 1 : y0, x0:x1]), (phi[y0:y1, x1 : x1 + 1], phi[y0:y1, x0 - 1 : x0]))
        np.testing.assert_array_equal(np.asarray(hmc.force(act, blk, halos)), whole[y0:y1, x0:x1])
        np.testing.assert_array_equal(np.asarray(hmc.force(act, phi, ((None, None), (None, None)))), whole)
