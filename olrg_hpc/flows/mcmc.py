"""Markov chains with flows: independent Metropolis-Hastings (flow as proposal), its multiple-proposal form, and
flow-HMC.

Conventions (docs/phi4-hmc.md, "Actions and conversions"; Albergo et al. arXiv:2101.08176 section IV; Albandea et al.
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
* Multiple-proposal MH (:func:`flow_multi_mh`; Tjelmeland, Stat. Comput. 2004; Calderhead, PNAS 111 (2014)
  17408; with independent proposals it is the iterated sampling-importance-resampling kernel of Andrieu, Lee and
  Vihola, Bernoulli 24 (2018) 842): at every step each chain forms ``N = n_candidates`` candidates, its current
  state and ``N - 1`` fresh flow proposals, and selects the next state among them with probability
  ``p_j = w_j / sum_i w_i`` (``jax.random.categorical``). The chain leaves ``p`` invariant for any ``N`` (the
  candidates given the current state are the conditional of the extended target ``p(x_J) prod_{i != J} q(x_i)``,
  and ``J`` given the candidates is ``~ w_J``). The step's estimate of an observable is the Rao-Blackwellised
  ``sum_j p_j O(x_j)``, the expectation of ``O`` at the next state given the candidates, so no proposal is
  wasted: as ``N`` grows it approaches self-normalised importance sampling with the flow, while staying a Markov
  chain with Gamma-method errors. One step costs ``N - 1`` proposals; the proposals of ``block`` steps go
  through the flow in one call, and step ``k``'s random numbers come from ``fold_in(key, k)`` as above.
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

__all__ = ["IMHResult", "flow_imh", "MultiMHResult", "flow_multi_mh", "FlowedAction", "FlowHMCResult", "flow_hmc",
           "map_to_target"]

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


def _step_proposals(flow: Flow, params: Params, prior: Prior, action: Any, key: jax.Array, ks: jax.Array,
                    n: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``n`` proposals for each step of ``ks`` from ``fold_in(key, k)``: ``phi`` ``(len(ks), n, L1, L2)``, their
    ``log w`` ``(len(ks), n)``, and each step's second key (for its accept or select decision)."""
    keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(key, k)))(ks)
    z = jax.vmap(lambda k: prior.sample(k, n))(keys[:, 0])
    phi, lw = flowed_log_weights(flow, params, prior, action, z.reshape((-1, *z.shape[2:])))
    return phi.reshape(z.shape), lw.reshape(ks.shape[0], n), keys[:, 1]


def _block_steps(n_steps: int, block: int) -> jax.Array:
    """Step numbers ``1 .. n_blocks x block`` as ``(n_blocks, block)``; those past ``n_steps`` are never taken."""
    n_blocks = -(-n_steps // block)
    return jnp.arange(1, n_blocks * block + 1).reshape(n_blocks, block)


def _last_taken(phi: jax.Array, candidates: jax.Array, last: jax.Array) -> jax.Array:
    """Each chain's state after a block: its proposal ``candidates[last, chain]`` (``(n, n_chains, L1, L2)``), or
    ``phi`` where it took none (``last < 0``)."""
    taken = candidates[jnp.maximum(last, 0), jnp.arange(phi.shape[0])]
    return jnp.where((last >= 0)[:, None, None], taken, phi)


def _checked_block(block: int | None, n_steps: int, per_step: int, prior: Prior) -> int:
    """``block``, or about :data:`IMH_SITES_PER_CALL` sites per call for ``per_step`` proposals per step."""
    if block is None:
        block = max(1, IMH_SITES_PER_CALL // (per_step * math.prod(prior.shape)))
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    return min(int(block), max(int(n_steps), 1))


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

    def run_block(carry: tuple[jax.Array, jax.Array, Any], ks: jax.Array) -> tuple[Any, Any]:
        phi, lw, obs = carry
        props, lwp, keys = _step_proposals(flow, params, prior, action, key, ks, n_chains)
        log_u = jax.vmap(lambda k: jnp.log(jax.random.uniform(k, (n_chains,), dtype=lwp.dtype)))(keys)
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
        return (_last_taken(phi, props, last), lw, obs), out

    (phi, _, _), (obs, acc, lws) = jax.lax.scan(run_block, (phi0, lw0, measure(phi0)), _block_steps(n_steps, block))
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
    imh = _imh_jit(jax.default_backend())
    return imh(flow, params, prior, action, key, n_steps=n_steps, n_chains=n_chains, measure=measure,
               block=_checked_block(block, n_steps, n_chains, prior))


class MultiMHResult(NamedTuple):
    """``phi``: final states ``(n_chains, L1, L2)``; ``estimates``: at every step, ``measure`` of the step's
    candidates averaged with their selection probabilities (the Rao-Blackwellised estimates; leading axis
    ``n_steps``); ``moved``: ``(n_steps, n_chains)``, whether a fresh candidate was selected; ``acceptance``:
    mean of ``moved``."""

    phi: jax.Array
    estimates: Any
    moved: jax.Array
    acceptance: jax.Array


def _multi_mh(
    flow: Flow,
    params: Params,
    prior: Prior,
    action: Any,
    key: jax.Array,
    *,
    n_steps: int,
    n_chains: int,
    n_candidates: int,
    measure: Callable[[jax.Array], Any],
    block: int,
) -> MultiMHResult:
    fresh = n_candidates - 1
    phi0, lw0 = log_weights(flow, params, prior, action, jax.random.fold_in(key, 0), n_chains)

    def run_block(carry: tuple[jax.Array, jax.Array, Any], ks: jax.Array) -> tuple[Any, Any]:
        phi, lw, obs = carry
        props, lwp, keys = _step_proposals(flow, params, prior, action, key, ks, fresh * n_chains)
        props = props.reshape(ks.shape[0], fresh, n_chains, *props.shape[2:])
        lwp = lwp.reshape(ks.shape[0], fresh, n_chains)
        obs_p = jax.vmap(jax.vmap(measure))(props)
        chains = jnp.arange(n_chains)

        def step(c: tuple[jax.Array, Any, jax.Array], x: tuple[Any, ...]) -> tuple[Any, Any]:
            lw_c, obs_c, last = c
            i, k, lw_i, key_i, obs_i = x
            lw_all = jnp.concatenate([lw_c[None], lw_i])  # (n_candidates, n_chains); the current state first
            obs_all = jax.tree.map(lambda cur, new: jnp.concatenate([cur[None], new]), obs_c, obs_i)
            p = jax.nn.softmax(lw_all, axis=0)
            est = jax.tree.map(lambda a: jnp.sum(p.reshape(p.shape + (1,) * (a.ndim - 2)) * a, axis=0), obs_all)
            j = jnp.where(k <= n_steps, jax.random.categorical(key_i, lw_all, axis=0), 0)  # past n_steps: stay
            obs_c = jax.tree.map(lambda a: a[j, chains], obs_all)
            last = jnp.where(j > 0, i * fresh + j - 1, last)
            return (lw_all[j, chains], obs_c, last), (est, j > 0)

        idx = jnp.arange(ks.shape[0])
        (lw, obs, last), out = jax.lax.scan(step, (lw, obs, jnp.full((n_chains,), -1)), (idx, ks, lwp, keys, obs_p))
        return (_last_taken(phi, props.reshape(-1, *props.shape[2:]), last), lw, obs), out

    (phi, _, _), (est, moved) = jax.lax.scan(run_block, (phi0, lw0, measure(phi0)), _block_steps(n_steps, block))
    est, moved = jax.tree.map(lambda a: a.reshape((-1, *a.shape[2:]))[:n_steps], (est, moved))
    return MultiMHResult(phi, est, moved, jnp.mean(moved.astype(lw0.dtype)))


@cache
def _multi_mh_jit(backend: str) -> Callable[..., MultiMHResult]:
    """``_multi_mh`` compiled for ``backend`` with the same CPU options as :func:`_imh_jit`."""
    return jax.jit(_multi_mh, static_argnames=("flow", "n_steps", "n_chains", "n_candidates", "measure", "block"),
                   compiler_options=compiler_options([backend]))


def flow_multi_mh(
    flow: Flow,
    params: Params,
    prior: Prior,
    action: Any,
    key: jax.Array,
    n_steps: int,
    n_chains: int,
    n_candidates: int,
    measure: Callable[[jax.Array], Any],
    block: int | None = None,
) -> MultiMHResult:
    """Multiple-proposal Metropolis-Hastings with the flow as independent proposal, and its Rao-Blackwellised
    estimator (module docstring), jitted ``lax.scan``.

    ``n_candidates`` (at least 2): the current state and ``n_candidates - 1`` fresh proposals per step and chain.
    ``measure`` (hashable) maps ``(n_chains, L1, L2) -> pytree`` of arrays with leading axis ``n_chains``; its
    estimates average it over the candidates, so measure every primary observable itself (``M^2``, not ``M``
    alone). ``block``: steps whose proposals go through the flow in one call (any ``block >= 1`` gives the same
    chains); ``None``: about :data:`IMH_SITES_PER_CALL` sites per call.
    """
    if n_candidates < 2:
        raise ValueError(f"n_candidates must be >= 2 (the current state and fresh proposals), got {n_candidates}")
    run = _multi_mh_jit(jax.default_backend())
    return run(flow, params, prior, action, key, n_steps=n_steps, n_chains=n_chains, n_candidates=n_candidates,
               measure=measure, block=_checked_block(block, n_steps, (n_candidates - 1) * n_chains, prior))


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
