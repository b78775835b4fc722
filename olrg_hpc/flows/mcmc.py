"""Markov chains with flows: independent Metropolis-Hastings (flow as proposal) and flow-HMC.

Conventions (science.md section 2; Albergo et al. arXiv:2101.08176 section IV; Albandea et al.
arXiv:2302.08408, arXiv:2310.03381):

* Independent MH (:func:`flow_imh`): ``n_chains`` independent chains; at every step each chain draws a fresh
  proposal ``phi' = F(z)``, ``z ~ prior``, with ``log w' = -S(phi') - log q(phi')`` and accepts it with
  probability ``min(1, w' / w)``. Step ``k`` (``k = 0 .. n_steps``) uses ``fold_in(key, k)``; step 0 only
  initialises the chains (the first proposal is taken unconditionally) and is not counted.
* Flow-HMC (:func:`flow_hmc`): HMC in the flowed variables ``z`` with the effective action
  ``S~(z) = S(F(z)) - log det J_F(z)`` (forces ``-dS~/dz`` by ``jax.grad``), run by
  :func:`olrg_hpc.lattice.hmc.run_chain` (same integrators, random numbers and Metropolis test as plain
  HMC); the configurations are mapped back, ``phi = F(z)``. With the identity flow it *is* plain HMC.
  Runs in float64 (``run_chain`` casts the field; the parameters are cast too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from olrg_hpc.flows.model import Flow, Prior
from olrg_hpc.flows.train import log_weights
from olrg_hpc.lattice.hmc import run_chain

__all__ = ["IMHResult", "flow_imh", "FlowedAction", "FlowHMCResult", "flow_hmc", "map_to_target"]

Params = Any


class IMHResult(NamedTuple):
    """``phi``: final configurations ``(n_chains, L1, L2)``; ``measurements``: ``measure(phi)`` after every
    step (leading axis ``n_steps``; the configurations themselves with ``measure=None``); ``accepted``,
    ``logw``: ``(n_steps, n_chains)`` (``logw`` of the current state); ``acceptance``: mean of ``accepted``."""

    phi: jax.Array
    measurements: Any
    accepted: jax.Array
    logw: jax.Array
    acceptance: jax.Array


@partial(jax.jit, static_argnames=("flow", "n_steps", "n_chains", "measure"))
def _imh(
    flow: Flow,
    params: Params,
    prior: Prior,
    action: Any,
    key: jax.Array,
    *,
    n_steps: int,
    n_chains: int,
    measure: Callable[[jax.Array], Any] | None,
) -> IMHResult:
    phi0, lw0 = log_weights(flow, params, prior, action, jax.random.fold_in(key, 0), n_chains)

    def step(carry: tuple[jax.Array, jax.Array], k: jax.Array) -> tuple[Any, Any]:
        phi, lw = carry
        kk = jax.random.fold_in(key, k)
        k1, k2 = jax.random.split(kk)
        prop, lwp = log_weights(flow, params, prior, action, k1, n_chains)
        log_u = jnp.log(jax.random.uniform(k2, (n_chains,), dtype=lw.dtype))
        acc = log_u < lwp - lw
        phi = jnp.where(acc[:, None, None], prop, phi)
        lw = jnp.where(acc, lwp, lw)
        obs = phi if measure is None else measure(phi)
        return (phi, lw), (obs, acc, lw)

    (phi, _), (obs, acc, lws) = jax.lax.scan(step, (phi0, lw0), jnp.arange(1, n_steps + 1))
    return IMHResult(phi, obs, acc, lws, jnp.mean(acc.astype(lws.dtype)))


def flow_imh(
    flow: Flow,
    params: Params,
    prior: Prior,
    action: Any,
    key: jax.Array,
    n_steps: int,
    n_chains: int = 1,
    measure: Callable[[jax.Array], Any] | None = None,
) -> IMHResult:
    """Independent Metropolis-Hastings with the flow as proposal (module docstring), jitted ``lax.scan``.

    ``measure`` (hashable, e.g. a module-level function) maps ``(n_chains, L1, L2) -> pytree`` inside the
    scan; ``None`` stores all configurations.
    """
    return _imh(flow, params, prior, action, key, n_steps=n_steps, n_chains=n_chains, measure=measure)


def _flat(z: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
    batch = z.shape[:-2]
    return z.reshape((-1, *z.shape[-2:])), batch


@partial(jax.tree_util.register_dataclass, data_fields=["params", "target"], meta_fields=["flow", "ndim"])
@dataclass(frozen=True)
class FlowedAction:
    """``S~(z) = S(F(z)) - log det J_F(z)``: duck-types :class:`~olrg_hpc.lattice.phi4.Phi4Action` for
    :mod:`olrg_hpc.lattice.hmc` (``action``, ``force``, ``ndim``); a JAX pytree (params, target)."""

    flow: Flow
    params: Params
    target: Any
    ndim: int = 2

    def action(self, z: jax.Array) -> jax.Array:
        zf, batch = _flat(z)
        phi, log_det = self.flow.apply(self.params, zf)
        return (self.target.action(phi) - log_det).reshape(batch)

    def __call__(self, z: jax.Array) -> jax.Array:
        return self.action(z)

    def to_field(self, z: jax.Array) -> jax.Array:
        """``phi = F(z)``: what :func:`~olrg_hpc.lattice.hmc.run_chain`'s ``measure`` is applied to."""
        zf, batch = _flat(z)
        return self.flow.apply(self.params, zf)[0].reshape((*batch, *z.shape[-2:]))

    def force(self, z: jax.Array) -> jax.Array:
        return -jax.grad(lambda v: jnp.sum(self.action(v)))(z)


class FlowHMCResult(NamedTuple):
    """``z``: final flowed field; ``phi``: configurations ``F(z)`` every ``meas_every`` trajectories,
    shape ``(n_meas, *batch, L1, L2)``, or with ``measure`` its outputs on them (stacked the same way);
    ``dH``, ``accepted`` ``(n_traj, *batch)``; ``acceptance``."""

    z: jax.Array
    phi: jax.Array
    dH: jax.Array
    accepted: jax.Array
    acceptance: jax.Array


@partial(jax.jit, static_argnums=0)
def map_to_target(flow: Flow, params: Params, z: jax.Array) -> jax.Array:
    """``phi = F(z)`` for any leading batch shape."""
    zf, batch = _flat(z)
    return flow.apply(params, zf)[0].reshape((*batch, *z.shape[-2:]))


def flow_hmc(
    flow: Flow,
    params: Params,
    action: Any,
    z0: jax.Array,
    n_traj: int,
    key: jax.Array,
    *,
    tau: float = 1.0,
    n_steps: int = 10,
    integrator: str = "leapfrog",
    tau_jitter: float = 0.0,
    meas_every: int = 1,
    n_therm: int = 0,
    measure: Any = None,
) -> FlowHMCResult:
    """HMC on ``z`` with ``S~`` (module docstring); same arguments and random numbers as ``hmc.run_chain``.

    ``z0``: initial flowed field ``(*batch, L1, L2)`` (e.g. ``F^{-1}`` of a configuration, or a prior draw).
    ``measure``: optional hashable ``phi -> pytree`` applied to ``F(z)`` inside the scan, so that memory does
    not grow with ``n_traj x volume`` (``None`` keeps every configuration).
    """
    p64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
    eff = FlowedAction(flow, p64, action, 2)
    res = run_chain(
        eff,
        z0,
        n_traj,
        key,
        tau=tau,
        n_steps=n_steps,
        integrator=integrator,
        tau_jitter=tau_jitter,
        meas_every=meas_every,
        n_therm=n_therm,
        measure=measure,
    )
    phi = res.measurements if measure is not None else map_to_target(flow, p64, res.measurements)
    return FlowHMCResult(res.phi, phi, res.dH, res.accepted, res.acceptance)
