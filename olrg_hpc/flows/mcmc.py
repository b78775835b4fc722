"""Markov chains with flows: independent Metropolis-Hastings (flow as proposal) and flow-HMC.

Conventions (science.md section 2; Albergo et al. arXiv:2101.08176 section IV; Albandea et al.
arXiv:2302.08408, arXiv:2310.03381):

* Independent MH (:func:`flow_imh`): ``n_chains`` independent chains; at every step each chain draws a fresh
  proposal ``phi' = F(z)``, ``z ~ prior``, with ``log w' = -S(phi') - log q(phi')`` and accepts it with
  probability ``min(1, w' / w)``. Step ``k`` (``k = 0 .. n_steps``) uses ``fold_in(key, k)``; step 0 only
  initialises the chains (the first proposal is taken unconditionally) and is not counted. The proposals do not
  depend on the chain, so they are drawn ``block`` steps at a time: one flow call on ``block x n_chains``
  configurations, then a ``lax.scan`` over the ``block`` accept/reject tests on scalars (``log w`` and the
  measurements of the proposals), and the final configurations are gathered from the last accepted proposal.
  The random numbers of step ``k`` do not depend on ``block``: every ``block`` gives the same chains, up to the
  rounding of the flow on a larger batch (the default ``block``: :data:`IMH_SITES_PER_CALL`).
* Flow-HMC (:func:`flow_hmc`): HMC in the flowed variables ``z`` with the effective action
  ``S~(z) = S(F(z)) - log det J_F(z)`` (forces ``-dS~/dz`` by ``jax.grad``), run by
  :func:`olrg_hpc.lattice.hmc.run_chain` (same integrators, random numbers and Metropolis test as plain
  HMC); the configurations are mapped back, ``phi = F(z)``. With the identity flow it *is* plain HMC.
  Runs in float64 (``run_chain`` casts the field; the parameters are cast too).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from olrg_hpc.flows.model import Flow, Prior
from olrg_hpc.flows.train import compiler_options, flowed_log_weights, log_weights
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


#: default flow-MH batch: proposals of about this many lattice sites go through the flow in one call. On 2 CPU
#: cores with flow_line's flow the gain over 16 configurations per call is 1.0-1.3x (L = 8, 16; none at 32;
#: ``benchmarks/bench_imh.py``): the flow is compute-bound there. Wide calls are meant for accelerators, where 16
#: small configurations leave the device idle (not yet measured on a GPU).
IMH_SITES_PER_CALL = 65536


def _identity(phi: jax.Array) -> jax.Array:
    return phi


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
    block: int,
) -> IMHResult:
    measure = _identity if measure is None else measure
    phi0, lw0 = log_weights(flow, params, prior, action, jax.random.fold_in(key, 0), n_chains)

    def proposals(ks: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Proposals, their ``log w`` and the uniform variates of steps ``ks``: ``(block, n_chains, ...)``."""
        keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(key, k)))(ks)
        z = jax.vmap(lambda k: prior.sample(k, n_chains))(keys[:, 0])
        phi, lw = flowed_log_weights(flow, params, prior, action, z.reshape((-1, *z.shape[2:])))
        log_u = jax.vmap(lambda k: jnp.log(jax.random.uniform(k, (n_chains,), dtype=lw.dtype)))(keys[:, 1])
        return phi.reshape(z.shape), lw.reshape(ks.shape[0], n_chains), log_u

    def run_block(carry: tuple[jax.Array, jax.Array, Any], ks: jax.Array) -> tuple[Any, Any]:
        phi, lw, obs = carry
        props, lwp, log_u = proposals(ks)
        obs_p = jax.vmap(measure)(props)

        def step(c: tuple[jax.Array, Any, jax.Array], x: tuple[jax.Array, ...]) -> tuple[Any, Any]:
            lw_c, obs_c, last = c
            i, k, lw_i, log_u_i, obs_i = x
            acc = (log_u_i < lw_i - lw_c) & (k <= n_steps)  # steps past n_steps (last block) are never taken
            lw_c = jnp.where(acc, lw_i, lw_c)
            obs_c = jax.tree.map(lambda new, old: jnp.where(acc.reshape(acc.shape + (1,) * (new.ndim - 1)), new, old),
                                 obs_i, obs_c)
            return (lw_c, obs_c, jnp.where(acc, i, last)), (obs_c, acc, lw_c)

        idx = jnp.arange(ks.shape[0])
        (lw, obs, last), out = jax.lax.scan(step, (lw, obs, jnp.full((n_chains,), -1)), (idx, ks, lwp, log_u, obs_p))
        taken = props[jnp.maximum(last, 0), jnp.arange(n_chains)]
        phi = jnp.where((last >= 0)[:, None, None], taken, phi)
        return (phi, lw, obs), out

    n_blocks = -(-n_steps // block)
    ks = jnp.arange(1, n_blocks * block + 1).reshape(n_blocks, block)
    (phi, _, _), (obs, acc, lws) = jax.lax.scan(run_block, (phi0, lw0, measure(phi0)), ks)
    obs, acc, lws = jax.tree.map(lambda a: a.reshape((-1, *a.shape[2:]))[:n_steps], (obs, acc, lws))
    return IMHResult(phi, obs, acc, lws, jnp.mean(acc.astype(lws.dtype)))


@cache
def _imh_jit(backend: str) -> Callable[..., IMHResult]:
    """``_imh`` compiled for ``backend``; on the CPU with training's
    :data:`~olrg_hpc.flows.train.CPU_COMPILER_OPTIONS`: at the default LLVM -O3 the coupling layers' ``lax.scan``
    ran 4.8x slower (L = 32, flow_line's flow, 16 chains, block 4: 476 against 99.5 us per proposal on 2 idle
    cores, the same accept decisions; ``benchmarks/bench_imh.py``)."""
    return jax.jit(_imh, static_argnames=("flow", "n_steps", "n_chains", "measure", "block"),
                   compiler_options=compiler_options([backend]))


def flow_imh(
    flow: Flow,
    params: Params,
    prior: Prior,
    action: Any,
    key: jax.Array,
    n_steps: int,
    n_chains: int = 1,
    measure: Callable[[jax.Array], Any] | None = None,
    block: int | None = None,
) -> IMHResult:
    """Independent Metropolis-Hastings with the flow as proposal (module docstring), jitted ``lax.scan``.

    ``measure`` (hashable, e.g. a module-level function) maps ``(n_chains, L1, L2) -> pytree`` of arrays with
    leading axis ``n_chains``, chain by chain (it is applied to the proposals and follows the accepted ones);
    ``None`` stores all configurations. ``block``: steps whose proposals go through the flow in one call
    (any ``block >= 1`` gives the same chains; module docstring); ``None`` chooses about
    :data:`IMH_SITES_PER_CALL` lattice sites per call.
    """
    if block is None:
        block = max(1, IMH_SITES_PER_CALL // (n_chains * math.prod(prior.shape)))
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    imh = _imh_jit(jax.default_backend())
    return imh(flow, params, prior, action, key, n_steps=n_steps, n_chains=n_chains, measure=measure,
               block=min(int(block), max(int(n_steps), 1)))


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
