"""Hybrid Monte Carlo for :class:`~olrg_hpc.lattice.phi4.Phi4Action` in JAX (float64, jit, batched chains).

Conventions (docs/conventions.md section 2, "HMC baseline"; Duane et al. 1987; Omelyan, Mryglod, Folk 2003;
Takaishi & de Forcrand, hep-lat/0505020):

* Hamiltonian ``H(phi, p) = sum_x p_x^2 / 2 + S[phi]`` with unit-mass Gaussian momenta ``p ~ N(0, 1)``.
* Molecular dynamics over trajectory length ``tau`` with ``n_steps`` steps of size ``eps = tau / n_steps``.
  - ``"leapfrog"``: ``p += eps/2 F; (phi += eps p; p += eps F) x (n-1); phi += eps p; p += eps/2 F``
    (``n + 1`` force evaluations, energy error ``O(eps^2)`` per trajectory).
  - ``"omelyan"``: 2nd-order minimum-norm (2MN) scheme
    ``p += lam eps F; phi += eps/2 p; p += (1 - 2 lam) eps F; phi += eps/2 p; p += lam eps F``
    with ``lam = 0.1931833275037836`` (Omelyan et al. eq. (31)); consecutive ``lam eps F`` kicks are
    merged (``2 n + 1`` force evaluations); also ``O(eps^2)`` but with a ~10x smaller coefficient.
* Forces: :func:`force` (``Phi4Action.force`` with bit-identical values; on lattices with last extent
  ``>= PAD_SHIFT_MIN_EXTENT`` the neighbour shifts are written as pad/select so that XLA fuses them into
  the kick, ~2x faster leapfrog at L = 512-1024 on CPU); other action objects use their own ``force``.
* Metropolis: accept when ``u < exp(-dH)``, ``dH = H_final - H_initial``, ``u ~ U[0, 1)``. A NaN ``dH``
  (diverged trajectory) is rejected.
* Batching: the field has shape ``(*batch, L_1, ..., L_d)``; every leading index is an independent
  chain with its own momenta, ``dH`` and accept/reject decision.
* Trajectory-length randomisation (optional, Mackenzie, Phys. Lett. B226 (1989) 369): with
  ``tau_jitter = j > 0`` each chain's trajectory length is ``tau (1 + j (2 v - 1))``, ``v ~ U[0, 1)``
  drawn independently of the state (detailed balance is kept). Needed for near-free fields, where modes
  with ``omega tau ~ pi`` (``omega^2 = 2 (p_hat^2 + m2)``) are otherwise non-ergodic.
* Random numbers: trajectory ``k`` (counted from 0 at the first thermalisation trajectory of a
  :func:`run_chain` call) uses ``key_k = fold_in(key, k)`` and ONE draw ``z ~ N(0, 1)`` of shape
  ``(*batch, V + 2)``: the first ``V`` entries are the momenta, ``u = Phi(z_V)`` and ``v = Phi(z_{V+1})``
  (``Phi`` = normal CDF, an exact map to U(0, 1)) are the Metropolis and trajectory-length uniforms.
  One threefry call site per trajectory keeps the XLA compile time small.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from olrg_hpc.jaxsetup import enable_x64
from olrg_hpc.lattice.phi4 import Phi4Action

enable_x64()

__all__ = [
    "OMELYAN_LAMBDA",
    "ChainResult",
    "PAD_SHIFT_MIN_EXTENT",
    "Halos",
    "neighbour_sum",
    "force",
    "kinetic_energy",
    "hamiltonian",
    "leapfrog",
    "omelyan",
    "integrate",
    "metropolis_step",
    "hmc_trajectory",
    "run_chain",
    "tune_n_steps",
]

#: Omelyan-Mryglod-Folk 2nd-order minimum-norm parameter (their eq. (31)).
OMELYAN_LAMBDA = 0.1931833275037836

INTEGRATORS = ("leapfrog", "omelyan")


#: Lattice extent (of the last axis) from which :func:`force` builds the neighbour shifts with
#: ``lax.pad`` + ``select`` instead of ``jnp.roll`` (see :func:`neighbour_sum`).
PAD_SHIFT_MIN_EXTENT = 128


def _shift(x: jax.Array, axis: int, forward: bool, edge: jax.Array | None = None) -> jax.Array:
    """``jnp.roll(x, -1 if forward else 1, axis)`` (``out_i = x_{i+1}`` or ``x_{i-1}``, periodic) as a
    slice + ``lax.pad`` + ``select`` of the wrapped edge, all elementwise-fusible in XLA (no concatenate).

    ``edge`` (extent 1 along ``axis``) replaces the wrapped slice: the halo of a block of a larger lattice,
    i.e. ``x`` continued by one site beyond its last (``forward``) or before its first index."""
    axis %= x.ndim
    n = x.shape[axis]
    cfg = [(0, 0, 0)] * x.ndim
    if forward:
        body, at = jax.lax.slice_in_dim(x, 1, n, axis=axis), n - 1
        wrapped = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
        cfg[axis] = (0, 1, 0)
    else:
        body, at = jax.lax.slice_in_dim(x, 0, n - 1, axis=axis), 0
        wrapped = jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
        cfg[axis] = (1, 0, 0)
    edge = wrapped if edge is None else edge
    shifted = jax.lax.pad(body, jnp.zeros((), x.dtype), cfg)
    pos = jax.lax.broadcasted_iota(jnp.int32, x.shape, axis)
    return jnp.where(pos == at, jnp.broadcast_to(edge, x.shape), shifted)


#: Halos of a block, per lattice axis ``(forward, backward)``: the field one site beyond the block's last
#: index along that axis and one site before its first, each with extent 1 along the axis.
Halos = tuple[tuple[jax.Array, jax.Array], ...]


def neighbour_sum(phi: jax.Array, ndim: int = 2, halos: Halos | None = None) -> jax.Array:
    """Per-site ``sum_mu (phi_{x+mu} + phi_{x-mu})`` over the last ``ndim`` axes, bit-identical to
    ``phi4._neighbour_sum`` (same additions in the same order; the shifts only move data).

    For lattices with last extent ``>= PAD_SHIFT_MIN_EXTENT`` the shifts are :func:`_shift` (pad + select):
    XLA on CPU materialises ``jnp.roll`` along the minor axis as a separate concatenate (two extra passes
    over the field per force evaluation, ~2.5x slower leapfrog at L = 1024), whereas pad/select fuse into
    the force/kick loop. For small lattices (in cache, compute-bound) ``jnp.roll`` is faster and is kept.

    ``halos`` (:data:`Halos`): ``phi`` is a block of a larger lattice (domain decomposition) and the
    neighbours beyond its faces are the given halos instead of the periodic wrap; always pad + select.
    """
    fused = halos is not None or phi.shape[-1] >= PAD_SHIFT_MIN_EXTENT
    nb = jnp.zeros_like(phi)
    for k, ax in enumerate(range(-ndim, 0)):
        fwd, bwd = (None, None) if halos is None else halos[k]
        if fused:
            nb = nb + _shift(phi, ax, True, fwd) + _shift(phi, ax, False, bwd)
        else:
            nb = nb + jnp.roll(phi, -1, axis=ax) + jnp.roll(phi, 1, axis=ax)
    return nb


def force(action: Any, phi: jax.Array, halos: Halos | None = None) -> jax.Array:
    """HMC force ``-dS/dphi``: ``action.force(phi)``, computed with :func:`neighbour_sum` for a
    :class:`Phi4Action` (identical values, one fused pass per evaluation on large lattices); any other
    action object (e.g. a flowed action, or a block of a decomposed lattice that fetches its own halos)
    uses its own ``force``. ``halos``: ``phi`` is a block with these halos (:func:`neighbour_sum`)."""
    if type(action) is not Phi4Action:
        return action.force(phi)
    phi = jnp.asarray(phi)
    nb = neighbour_sum(phi, action.ndim, halos)
    return 2.0 * nb - 2.0 * action.mass_coefficient * phi - 4.0 * action.lam * (phi * phi * phi)


def kinetic_energy(p: jax.Array, ndim: int = 2) -> jax.Array:
    """``sum_x p_x^2 / 2`` over the last ``ndim`` axes."""
    return 0.5 * jnp.sum(p * p, axis=tuple(range(-ndim, 0)))


def hamiltonian(action: Phi4Action, phi: jax.Array, p: jax.Array) -> jax.Array:
    """``H = sum p^2/2 + S[phi]`` per chain (shape ``phi.shape[:-ndim]``)."""
    return kinetic_energy(p, action.ndim) + action.action(phi)


def leapfrog(
    action: Phi4Action, phi: jax.Array, p: jax.Array, eps: float | jax.Array, n_steps: int | jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Leapfrog (kick-drift-kick) integration of ``n_steps >= 1`` steps of size ``eps``; returns ``(phi, p)``.

    ``n_steps`` may be a traced integer (then the loop is a ``while_loop``).
    """
    p = p + 0.5 * eps * force(action, phi)

    def body(_: Any, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        ph, pp = carry
        ph = ph + eps * pp
        pp = pp + eps * force(action, ph)
        return ph, pp

    phi, p = jax.lax.fori_loop(0, n_steps - 1, body, (phi, p))
    phi = phi + eps * p
    p = p + 0.5 * eps * force(action, phi)
    return phi, p


def omelyan(
    action: Phi4Action,
    phi: jax.Array,
    p: jax.Array,
    eps: float | jax.Array,
    n_steps: int | jax.Array,
    lam: float = OMELYAN_LAMBDA,
) -> tuple[jax.Array, jax.Array]:
    """Omelyan 2MN integration (``n_steps >= 1`` steps of size ``eps``, parameter ``lam``).

    Returns ``(phi, p)``; ``n_steps`` may be traced.
    """
    half = 0.5 * eps
    p = p + lam * eps * force(action, phi)

    def body(_: Any, carry: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        ph, pp = carry
        ph = ph + half * pp
        pp = pp + (1.0 - 2.0 * lam) * eps * force(action, ph)
        ph = ph + half * pp
        pp = pp + 2.0 * lam * eps * force(action, ph)
        return ph, pp

    phi, p = jax.lax.fori_loop(0, n_steps - 1, body, (phi, p))
    phi = phi + half * p
    p = p + (1.0 - 2.0 * lam) * eps * force(action, phi)
    phi = phi + half * p
    p = p + lam * eps * force(action, phi)
    return phi, p


def force_evaluations(n_steps: int, integrator: str = "leapfrog") -> int:
    """Force evaluations of one trajectory of ``n_steps`` steps with the named integrator."""
    if integrator == "leapfrog":
        return n_steps + 1
    if integrator == "omelyan":
        return 2 * n_steps + 1
    raise ValueError(f"unknown integrator {integrator!r}; choose from {INTEGRATORS}")


def integrate(
    action: Phi4Action,
    phi: jax.Array,
    p: jax.Array,
    tau: float | jax.Array,
    n_steps: int | jax.Array,
    integrator: str = "leapfrog",
) -> tuple[jax.Array, jax.Array]:
    """Molecular-dynamics trajectory of length ``tau`` in ``n_steps`` steps with the named integrator."""
    eps = tau / n_steps
    if integrator == "leapfrog":
        return leapfrog(action, phi, p, eps, n_steps)
    if integrator == "omelyan":
        return omelyan(action, phi, p, eps, n_steps)
    raise ValueError(f"unknown integrator {integrator!r}; choose from {INTEGRATORS}")


def _accept_mask(accept: jax.Array, ndim: int) -> jax.Array:
    return accept.reshape(accept.shape + (1,) * ndim)


def metropolis_step(
    action: Phi4Action,
    phi: jax.Array,
    p: jax.Array,
    u: jax.Array,
    tau: float | jax.Array = 1.0,
    n_steps: int | jax.Array = 10,
    integrator: str = "leapfrog",
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One HMC update with *given* momenta ``p`` and uniform(s) ``u`` (deterministic).

    Returns ``(phi_next, dH, accepted)``; ``dH`` and ``accepted`` have the batch shape. Used by
    :func:`hmc_trajectory` and to cross-check other implementations with identical random numbers.
    """
    h0 = hamiltonian(action, phi, p)
    phi1, p1 = integrate(action, phi, p, tau, n_steps, integrator)
    dh = hamiltonian(action, phi1, p1) - h0
    accepted = u < jnp.exp(-dh)
    phi_next = jnp.where(_accept_mask(accepted, action.ndim), phi1, phi)
    return phi_next, dh, accepted


def hmc_trajectory(
    action: Phi4Action,
    phi: jax.Array,
    key: jax.Array,
    tau: float | jax.Array = 1.0,
    n_steps: int | jax.Array = 10,
    integrator: str = "leapfrog",
    tau_jitter: float | jax.Array = 0.0,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One HMC trajectory for every chain in the batch: fresh momenta from ``key``; ``(phi, dH, accepted)``.

    Random numbers: one normal draw of shape ``(*batch, V + 2)`` (module docstring).
    """
    batch = phi.shape[: phi.ndim - action.ndim]
    lattice = phi.shape[phi.ndim - action.ndim :]
    nsite = math.prod(lattice)
    z = jax.random.normal(key, (*batch, nsite + 2), dtype=phi.dtype)
    p = z[..., :nsite].reshape(phi.shape)
    u = jax.scipy.special.ndtr(z[..., nsite])
    v = jax.scipy.special.ndtr(z[..., nsite + 1])
    tau_b = (tau * (1.0 + tau_jitter * (2.0 * v - 1.0))).reshape(batch + (1,) * action.ndim)
    return metropolis_step(action, phi, p, u, tau_b, n_steps, integrator)


class ChainResult(NamedTuple):
    """Output of :func:`run_chain`.

    ``measurements``: stacked output of ``measure(phi)`` every ``meas_every`` trajectories (leading axis
    ``n_traj // meas_every``); with ``measure=None`` the configurations themselves,
    shape ``(n_meas, *batch, L, ..., L)``. ``dH``, ``accepted``: shape ``(n_traj, *batch)`` (production
    trajectories only). ``acceptance``: mean of ``accepted``. ``phi``: final field.
    """

    phi: jax.Array
    measurements: Any
    dH: jax.Array
    accepted: jax.Array
    acceptance: jax.Array


@partial(
    jax.jit,
    static_argnames=("n_traj", "integrator", "meas_every", "measure", "n_therm"),
)
def _run_chain(
    action: Phi4Action,
    phi0: jax.Array,
    key: jax.Array,
    tau: jax.Array,
    n_steps: jax.Array,
    tau_jitter: jax.Array,
    *,
    n_traj: int,
    integrator: str,
    meas_every: int,
    measure: Callable[[jax.Array], Any] | None,
    n_therm: int,
) -> ChainResult:
    def traj(phi: jax.Array, k: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
        phi, dh, acc = hmc_trajectory(action, phi, k, tau, n_steps, integrator, tau_jitter)
        return phi, (dh, acc)

    # all trajectory keys up front: one (vmapped) fold_in call site
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(n_therm + n_traj))
    if n_therm > 0:
        phi0, _ = jax.lax.scan(traj, phi0, keys[:n_therm])

    n_meas = n_traj // meas_every
    ks = keys[n_therm:].reshape(n_meas, meas_every)

    def block(phi: jax.Array, kblock: jax.Array) -> tuple[jax.Array, tuple[Any, jax.Array, jax.Array]]:
        phi, (dh, acc) = jax.lax.scan(traj, phi, kblock)
        # an action over other variables (flow-HMC's FlowedAction) maps them to the field before measuring
        obs = phi if measure is None else measure(action.to_field(phi) if hasattr(action, "to_field") else phi)
        return phi, (obs, dh, acc)

    phi, (obs, dh, acc) = jax.lax.scan(block, phi0, ks)
    batch = dh.shape[2:]
    dh = dh.reshape((n_traj, *batch))
    acc = acc.reshape((n_traj, *batch))
    return ChainResult(phi, obs, dh, acc, jnp.mean(acc.astype(phi.dtype)))


def run_chain(
    action: Phi4Action,
    phi0: jax.Array,
    n_traj: int,
    key: jax.Array,
    *,
    tau: float = 1.0,
    n_steps: int = 10,
    integrator: str = "leapfrog",
    tau_jitter: float = 0.0,
    meas_every: int = 1,
    measure: Callable[[jax.Array], Any] | None = None,
    n_therm: int = 0,
) -> ChainResult:
    """Run ``n_therm`` + ``n_traj`` HMC trajectories for all chains in ``phi0`` with one jitted ``lax.scan``.

    Args:
        action: the action (a pytree: new ``m2``/``lam`` values reuse the compiled program).
        phi0: initial field(s), shape ``(*batch, L, ..., L)``.
        n_traj: production trajectories; must be a multiple of ``meas_every``.
        key: ``jax.random`` key; trajectory ``k`` uses ``fold_in(key, k)`` (``k`` counts thermalisation too).
            On CPU an RBG key (``jax.random.key(seed, impl="rbg")``) compiles ~3x faster than threefry.
        tau, n_steps, integrator: molecular dynamics (``tau``, ``n_steps`` and ``tau_jitter`` are traced:
            changing them does not recompile).
        tau_jitter: relative trajectory-length randomisation (module docstring), 0 = fixed ``tau``.
        meas_every: store/measure after every ``meas_every``-th production trajectory.
        measure: optional ``phi -> pytree`` evaluated inside the scan (saves memory); ``None`` keeps the
            configurations. Must be hashable (a module-level function). If ``action`` has ``to_field``
            (HMC in other variables, e.g. flowed ones), ``measure`` sees ``action.to_field(phi)``.
        n_therm: thermalisation trajectories, not recorded.
    """
    if integrator not in INTEGRATORS:
        raise ValueError(f"unknown integrator {integrator!r}; choose from {INTEGRATORS}")
    if n_traj < 1 or n_traj % meas_every:
        raise ValueError(f"n_traj={n_traj} must be a positive multiple of meas_every={meas_every}")
    if n_steps < 1:
        raise ValueError("n_steps must be >= 1")
    phi0 = jnp.asarray(phi0, dtype=jnp.float64)
    return _run_chain(
        action,
        phi0,
        key,
        jnp.asarray(tau, dtype=jnp.float64),
        jnp.asarray(n_steps, dtype=jnp.int64),
        jnp.asarray(tau_jitter, dtype=jnp.float64),
        n_traj=n_traj,
        integrator=integrator,
        meas_every=meas_every,
        measure=measure,
        n_therm=n_therm,
    )


def _no_measurement(phi: jax.Array) -> jax.Array:
    """``measure`` for pilot runs: nothing kept (a scalar per stored trajectory)."""
    return jnp.zeros((), phi.dtype)


def tune_n_steps(
    action: Any,
    phi: jax.Array,
    key: jax.Array,
    *,
    acc_min: float = 0.8,
    block: int = 50,
    tau: float = 1.0,
    integrator: str = "leapfrog",
    max_steps: int = 256,
) -> tuple[int, jax.Array, list[tuple[int, float]]]:
    """Smallest step count at trajectory length ``tau`` whose acceptance, over one pilot block of ``block``
    trajectories of every chain in ``phi``, is at least ``acc_min``: doubling from 2 until a block passes
    (or ``max_steps`` is reached, which is then returned), then bisection between the last failing and the
    first passing count. Each pilot block continues the chains from the previous one (so the pilots also
    thermalise) and uses its own ``fold_in(key, i)``; ``n_steps`` is traced, so all pilots share one compiled
    program.

    Returns ``(n_steps, phi, trials)``: the count, the chains after the last pilot, and every
    ``(n_steps, acceptance)`` tried, in order.
    """
    if not 0.0 < acc_min < 1.0:
        raise ValueError(f"acc_min={acc_min} must lie in (0, 1)")
    trials: list[tuple[int, float]] = []

    def passes(n: int, phi: jax.Array) -> tuple[bool, jax.Array]:
        res = run_chain(action, phi, block, jax.random.fold_in(key, len(trials)), tau=tau, n_steps=n,
                        integrator=integrator, measure=_no_measurement)
        trials.append((n, float(res.acceptance)))
        return trials[-1][1] >= acc_min, res.phi

    lo, hi, n = 1, 0, min(2, max_steps)
    while not hi:
        ok, phi = passes(n, phi)
        if ok or n >= max_steps:
            hi = n
        else:
            lo, n = n, min(2 * n, max_steps)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        ok, phi = passes(mid, phi)
        lo, hi = (lo, mid) if ok else (mid, hi)
    return hi, phi, trials
