"""Reverse-KL training of flows (optax Adam), data-parallel over all JAX devices, with HDF5 checkpoints.

Conventions (docs/phi4-hmc.md, "Actions and conversions"; Albergo et al. arXiv:2101.08176 eq. (20); Albandea
et al. arXiv:2310.03381):

* Loss: ``L = (1/N) sum_i [log q(phi_i) + S(phi_i)]`` with ``phi_i = F(z_i)``, ``z_i ~ prior``; it equals
  ``KL(q || p) - log Z`` (``log Z`` unknown, so ``L`` is bounded below by ``-log Z``, not by 0).
* Reweighting factors ``log w = -S(phi) - log q(phi)``; effective sample size per sample
  ``ESS = (sum w)^2 / (N sum w^2)`` in ``(0, 1]``; independent Metropolis-Hastings (IMH) acceptance of a
  chain whose proposals are the flow samples (accept ``phi'`` with probability ``min(1, w'/w)``).
* Random numbers: step ``k`` (counted from 0 over the whole run, across resumes) uses
  ``fold_in(key, k)``; the prior draws with that key. Since ``jax_threefry_partitionable`` is on, the
  samples do not depend on the number of devices, so 1 and 8 devices give the same trajectory up to the
  order of floating-point reductions.
* Data parallelism: a 1-D mesh ``Mesh(devices, ("data",))``; the batch axis is sharded with
  ``NamedSharding(mesh, P("data"))`` (batch size must be a multiple of the device count), params and
  optimizer state are replicated. The loss and its gradient are computed under ``jax.shard_map``: every device
  differentiates its share of the batch and the gradients are all-reduced once per step.
* Steps between two synchronisations run in one compiled ``lax.fori_loop`` (one host call per chunk of at
  most ``min(sync_every, MAX_CHUNK)`` steps); the trajectory does not depend on the chunking. On CPU the step
  is compiled with :data:`CPU_COMPILER_OPTIONS`.
* Divergence: a step whose loss or updated parameters are not finite raises :class:`TrainingDivergedError`
  naming the step (checked on the host at every synchronisation, i.e. every ``sync_every`` steps).
* Checkpoints: HDF5 through :mod:`olrg_hpc.checkpoint` (pytrees params, optimizer state and key; attribute
  step; array loss history), written to a temporary sibling and renamed into place (atomic on POSIX).
* dtype: training runs in the dtype of the parameters and of the prior (float32 recommended for speed;
  float64 for exactness tests).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from olrg_hpc import checkpoint
from olrg_hpc.flows.model import Flow, Prior
from olrg_hpc.sharding import data_mesh, replicate

__all__ = [
    "TrainState",
    "TrainResult",
    "TrainingDivergedError",
    "make_optimizer",
    "make_mesh",
    "log_weights",
    "flowed_log_weights",
    "reverse_kl_loss",
    "effective_sample_size",
    "imh_acceptance",
    "evaluate",
    "init_state",
    "train",
    "save_checkpoint",
    "load_checkpoint",
]

Params = Any


class TrainingDivergedError(FloatingPointError):
    """Loss or parameters became NaN/inf; ``step`` is the first bad step (0-based)."""

    def __init__(self, step: int, loss: float) -> None:
        super().__init__(f"training diverged at step {step}: loss = {loss}, or non-finite parameters")
        self.step = step
        self.loss = loss


class TrainState(NamedTuple):
    """Everything needed to continue training: ``step`` = number of completed steps; ``key`` = base key."""

    params: Params
    opt_state: Any
    step: int
    key: jax.Array


@dataclass
class TrainResult:
    """``state`` after training; ``losses``: per step of this call (steps ``start .. n_steps - 1``);
    ``metrics``: list of dicts ``{step, ess, acceptance, loss, logw_var, wall_s, train_wall_s}`` (``train_wall_s``
    excludes the time spent in metrics and checkpoints; both include compilation); ``wall_s``: loop time."""

    state: TrainState
    losses: np.ndarray
    metrics: list[dict[str, float]] = field(default_factory=list)
    wall_s: float = 0.0


def make_optimizer(
    lr: float = 1e-3, *, cosine: bool = False, total_steps: int | None = None
) -> optax.GradientTransformation:
    """Adam with constant ``lr`` or, with ``cosine=True``, ``lr`` cosine-annealed to 0 over ``total_steps``."""
    if cosine:
        if not total_steps:
            raise ValueError("cosine schedule needs total_steps")
        return optax.adam(optax.cosine_decay_schedule(lr, total_steps))
    return optax.adam(lr)


def make_mesh(devices: Sequence[Any] | int | None = None) -> Mesh:
    """1-D mesh with axis ``"data"`` over ``devices`` (a list, the first ``n`` devices, or all):
    :func:`olrg_hpc.sharding.data_mesh`."""
    return data_mesh("data", devices)


def _as_key(key: Any) -> jax.Array:
    if isinstance(key, int):
        return jax.random.key(key)
    if jnp.issubdtype(jnp.asarray(key).dtype, jax.dtypes.prng_key):
        return key
    return jax.random.wrap_key_data(jnp.asarray(key, jnp.uint32))


def log_weights(
    flow: Flow, params: Params, prior: Prior, action: Any, key: jax.Array, n: int, sharding: Any = None
) -> tuple[jax.Array, jax.Array]:
    """``(phi, log w)`` for ``n`` flow samples, ``log w = -S(phi) - log q(phi)``."""
    z = prior.sample(key, n)
    if sharding is not None:
        z = jax.lax.with_sharding_constraint(z, sharding)
    return flowed_log_weights(flow, params, prior, action, z)


def flowed_log_weights(flow: Flow, params: Params, prior: Prior, action: Any, z: jax.Array) -> tuple[jax.Array, ...]:
    """``(phi, log w)`` of given prior draws ``z``: ``phi = F(z)``, ``log w = -S(phi) - log q(phi)``."""
    phi, log_q = _flowed(flow, params, prior, z)
    return phi, -action.action(phi) - log_q


def _flowed(flow: Flow, params: Params, prior: Prior, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(phi, log q(phi))`` of prior draws ``z``: ``phi = F(z)``, ``log q = log p(z) - log det J_F(z)``."""
    phi, log_det = flow.apply(params, z)
    return phi, prior.log_prob(z) - log_det


def reverse_kl_loss(
    params: Params, flow: Flow, prior: Prior, action: Any, key: jax.Array, batch_size: int, sharding: Any = None
) -> jax.Array:
    """``mean_i [log q(phi_i) + S(phi_i)]`` over ``batch_size`` flow samples (module docstring)."""
    _, logw = log_weights(flow, params, prior, action, key, batch_size, sharding)
    return -jnp.mean(logw)


def effective_sample_size(logw: jax.Array) -> jax.Array:
    """``(sum w)^2 / (N sum w^2)`` computed stably from ``log w``."""
    lw = logw - jnp.max(logw)
    w = jnp.exp(lw)
    return jnp.sum(w) ** 2 / (logw.shape[0] * jnp.sum(w * w))


def imh_acceptance(logw: jax.Array, key: jax.Array) -> jax.Array:
    """Acceptance rate of independent MH run through the proposals in order (first one accepted as start)."""
    log_u = jnp.log(jax.random.uniform(key, logw.shape[:1], dtype=logw.dtype))

    def body(cur: jax.Array, xs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        lw, lu = xs
        acc = lu < lw - cur
        return jnp.where(acc, lw, cur), acc

    _, acc = jax.lax.scan(body, logw[0], (logw[1:], log_u[1:]))
    return jnp.mean(acc.astype(logw.dtype))


def evaluate(
    flow: Flow, params: Params, prior: Prior, action: Any, key: jax.Array, n: int, mesh: Mesh | None = None
) -> dict[str, float]:
    """ESS, IMH acceptance, the loss estimate and the variance of ``log w`` on ``n`` fresh samples (sharded over
    ``mesh`` if given and ``n`` is a multiple of its size).

    ``logw_var`` does not depend on normalisations dropped from the prior (the coarse priors omit ``log Z_c``), so
    unlike the loss it compares flows with different priors; for nearly log-normal weights ``ESS ~ exp(-var)``.
    """
    sharding = None
    if mesh is not None and n % mesh.devices.size == 0:
        sharding = NamedSharding(mesh, P("data"))
    ess, acc, loss, var = _evaluate(flow, params, prior, action, key, n, sharding)
    return {"ess": float(ess), "acceptance": float(acc), "loss": float(loss), "logw_var": float(var)}


@partial(jax.jit, static_argnums=(0, 5, 6))
def _evaluate(
    flow: Flow, params: Params, prior: Prior, action: Any, key: jax.Array, n: int, sharding: Any
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    k1, k2 = jax.random.split(key)
    _, logw = log_weights(flow, params, prior, action, k1, n, sharding)
    if sharding is not None:
        logw = jax.lax.with_sharding_constraint(logw, NamedSharding(sharding.mesh, P()))
    return effective_sample_size(logw), imh_acceptance(logw, k2), -jnp.mean(logw), jnp.var(logw)


def init_state(params: Params, optimizer: optax.GradientTransformation, key: Any) -> TrainState:
    """Fresh :class:`TrainState` at step 0."""
    return TrainState(params, optimizer.init(params), 0, _as_key(key))


def _all_finite(tree: Any) -> jax.Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


#: jitted chunks of steps for the default optimizer, keyed by (flow, lr, cosine, total, batch, device ids)
_STEP_CACHE: dict[tuple[Any, ...], Callable[..., Any]] = {}

#: most steps run by one call of the compiled chunk function (losses come back in a buffer of this length)
MAX_CHUNK = 100


def _make_step(
    flow: Flow, optimizer: optax.GradientTransformation, batch_size: int, mesh: Mesh, chunk: int = MAX_CHUNK
) -> Callable[..., Any]:
    """Jitted ``(params, opt_state, prior, action, key, k0, n) -> (params, opt_state, losses, ok)`` running the
    ``n <= chunk`` steps ``k0 .. k0 + n - 1`` in one ``lax.fori_loop`` (``n`` is traced: one compilation for
    every chunk length, so ``sync_every`` does not recompile). ``losses``, ``ok`` have length ``chunk``;
    entries ``>= n`` are unused. One call per chunk instead of one per step: passing the ~300 arrays of
    parameters and Adam state costs ~1 ms per call on CPU, a few per cent of a step."""
    data = NamedSharding(mesh, P("data"))
    repl = NamedSharding(mesh, P())

    def local(params: Params, prior: Prior, action: Any, z: jax.Array) -> tuple[jax.Array, Params]:
        # this device's share of the batch; sum / batch_size, so that the psum is the batch mean
        def loss_fn(p: Params) -> jax.Array:
            # replicated -> per-device values here; the transpose of this cast is the psum of the gradients,
            # so they are all-reduced once per step, after the backward pass
            p = jax.tree.map(lambda a: jax.lax.pcast(a, ("data",), to="varying"), p)
            phi, log_q = _flowed(flow, p, prior, z)
            return jnp.sum(action.action(phi) + log_q) / batch_size

        loss, grads = jax.value_and_grad(loss_fn)(params)
        return jax.lax.psum(loss, "data"), grads

    # data parallel: every device differentiates its share of the batch, and the gradients are all-reduced
    # once per step. (Under plain sharding propagation XLA all-reduces every kernel gradient inside the scan over
    # layers: 8 emulated devices ran 2x slower than with this.)
    local_grads = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P(), P("data")), out_specs=P())

    def one(
        params: Params, opt_state: Any, prior: Prior, action: Any, key: jax.Array, k: jax.Array
    ) -> tuple[Params, Any, jax.Array, jax.Array]:
        kk = jax.random.fold_in(key, k)
        z = jax.lax.with_sharding_constraint(prior.sample(kk, batch_size), data)
        loss, grads = local_grads(params, prior, action, z)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ok = jnp.isfinite(loss) & _all_finite(params)
        return params, opt_state, loss, ok

    def steps(
        params: Params, opt_state: Any, prior: Prior, action: Any, key: jax.Array, k0: jax.Array, n: jax.Array
    ) -> tuple[Params, Any, jax.Array, jax.Array]:
        leaf = jax.tree.leaves(params)[0]
        losses = jnp.full((chunk,), jnp.nan, leaf.dtype)
        oks = jnp.ones((chunk,), bool)

        def body(i: jax.Array, carry: tuple[Any, ...]) -> tuple[Any, ...]:
            p, o, ls, oks = carry
            p, o, loss, ok = one(p, o, prior, action, key, k0 + i)
            return p, o, ls.at[i].set(loss.astype(ls.dtype)), oks.at[i].set(ok)

        return jax.lax.fori_loop(0, n, body, (params, opt_state, losses, oks))

    options = compiler_options(d.platform for d in mesh.devices.flat)
    return jax.jit(steps, out_shardings=(repl, repl, repl, repl), compiler_options=options)


#: XLA options for the training step on CPU: LLVM -O1 instead of the default -O3 compiles ~20% faster and, for
#: the batch-last convolutions of :mod:`olrg_hpc.flows.layers`, also runs ~20% faster (measured on a 2-core AMD
#: EPYC, tutorial flow at L = 8: 13 vs 17 ms per step); it did not help the previous flax-Conv version
CPU_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def compiler_options(platforms: Iterable[str]) -> dict[str, Any] | None:
    """:data:`CPU_COMPILER_OPTIONS` for a computation that runs on CPUs only, else XLA's defaults (``None``)."""
    return dict(CPU_COMPILER_OPTIONS) if set(platforms) == {"cpu"} else None


def train(
    flow: Flow,
    prior: Prior,
    action: Any,
    *,
    n_steps: int,
    batch_size: int,
    key: Any = 0,
    params: Params | None = None,
    state: TrainState | None = None,
    optimizer: optax.GradientTransformation | None = None,
    lr: float = 1e-3,
    cosine: bool = False,
    devices: Sequence[Any] | int | None = None,
    sync_every: int = 10,
    metrics_every: int = 0,
    metrics_batch: int = 1024,
    checkpoint_path: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 0,
    callback: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train until ``state.step == n_steps`` (``n_steps`` is the *total*, so a resumed run continues).

    Give either ``params`` (fresh start with ``key``) or ``state`` (e.g. from :func:`load_checkpoint`).
    ``optimizer`` defaults to :func:`make_optimizer` (``lr``, ``cosine`` over ``n_steps``); a resumed run must
    use the same optimizer. ``devices``: mesh devices (list, count, or all). Every ``sync_every`` steps the
    host waits for the device (``block_until_ready``) and checks for divergence; every ``metrics_every``
    steps (0 = never) :func:`evaluate` runs on ``metrics_batch`` samples; every ``checkpoint_every`` steps
    and at the end a checkpoint is written to ``checkpoint_path`` if given. ``callback(step, loss)`` runs at
    every synchronisation for the last step.
    """
    cache_key: tuple[Any, ...] | None = None
    if optimizer is None:
        optimizer = make_optimizer(lr, cosine=cosine, total_steps=n_steps)
        cache_key = (flow, float(lr), bool(cosine), n_steps if cosine else None, batch_size)
    if state is None:
        if params is None:
            raise ValueError("give params or state")
        state = init_state(params, optimizer, key)
    mesh = make_mesh(devices)
    n_dev = mesh.devices.size
    if batch_size % n_dev:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the device count {n_dev}")
    params_d, opt_d, prior_d, action_d, key_d = replicate((state.params, state.opt_state, prior, action, state.key),
                                                          mesh)
    chunk = max(1, min(sync_every, MAX_CHUNK))  # steps per call (the compiled program takes up to MAX_CHUNK)
    if cache_key is not None:
        cache_key = (*cache_key, tuple(d.id for d in mesh.devices.flat))
        if cache_key not in _STEP_CACHE:
            if len(_STEP_CACHE) >= 16:
                _STEP_CACHE.pop(next(iter(_STEP_CACHE)))
            _STEP_CACHE[cache_key] = _make_step(flow, optimizer, batch_size, mesh)
        step_fn = _STEP_CACHE[cache_key]
    else:
        step_fn = _make_step(flow, optimizer, batch_size, mesh)

    losses: list[float] = []
    pending: list[tuple[int, int, jax.Array, jax.Array]] = []  # (first step, count, losses, ok)
    metrics: list[dict[str, float]] = []
    eval_key = jax.random.fold_in(state.key, 0x7FFFFFFF)
    start = state.step
    t0 = time.perf_counter()
    t_aside = 0.0  # seconds spent in metrics and checkpoints

    def flush() -> None:
        if not pending:
            return
        jax.block_until_ready(pending[-1][2])
        for k0, n, ls, oks in pending:
            ls_h, oks_h = np.asarray(ls), np.asarray(oks)
            for i in range(n):
                if not bool(oks_h[i]):
                    raise TrainingDivergedError(k0 + i, float(ls_h[i]))
                losses.append(float(ls_h[i]))
        if callback is not None:
            last = pending[-1]
            callback(last[0] + last[1] - 1, losses[-1])
        pending.clear()

    def next_stop(k: int) -> int:
        """First step count > k at which something happens (sync, metrics, checkpoint, end)."""
        stops = [n_steps, (k // chunk + 1) * chunk, (k // sync_every + 1) * sync_every]
        for every in (metrics_every, checkpoint_every if checkpoint_path is not None else 0):
            if every:
                stops.append((k // every + 1) * every)
        return min(stops)

    k = start
    while k < n_steps:
        done = next_stop(k)
        params_d, opt_d, ls, oks = step_fn(
            params_d, opt_d, prior_d, action_d, key_d, jnp.asarray(k, jnp.int32), jnp.asarray(done - k, jnp.int32)
        )
        pending.append((k, done - k, ls, oks))
        k = done
        if done % sync_every == 0 or done == n_steps:
            flush()
        if metrics_every and done % metrics_every == 0:
            flush()
            ta = time.perf_counter()
            m = evaluate(flow, params_d, prior_d, action_d, jax.random.fold_in(eval_key, done), metrics_batch, mesh)
            t_aside += time.perf_counter() - ta
            m.update(step=done, wall_s=time.perf_counter() - t0, train_wall_s=time.perf_counter() - t0 - t_aside)
            metrics.append(m)
        if checkpoint_path is not None and checkpoint_every and done % checkpoint_every == 0 and done < n_steps:
            flush()
            ta = time.perf_counter()
            save_checkpoint(checkpoint_path, TrainState(params_d, opt_d, done, state.key), losses=losses, offset=start)
            t_aside += time.perf_counter() - ta
    flush()
    wall = time.perf_counter() - t0
    final = TrainState(params_d, opt_d, max(n_steps, start), state.key)
    if checkpoint_path is not None:
        save_checkpoint(checkpoint_path, final, losses=losses, offset=start)
    return TrainResult(final, np.asarray(losses), metrics, wall)


# ------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(
    path: str | os.PathLike[str], state: TrainState, *, losses: Sequence[float] | None = None, offset: int = 0
) -> None:
    """Write ``state`` (and optionally the losses of steps ``offset ...``) atomically with
    :func:`olrg_hpc.checkpoint.save`: pytrees ``params``, ``opt_state``, ``key``; attribute ``step``;
    array ``losses``.

    If ``path`` already holds losses for steps before ``offset`` (an earlier segment of the run), they are
    kept, so the file always has the loss history of steps ``0 .. state.step - 1`` when every segment passed
    its losses.
    """
    arrays: dict[str, np.ndarray] = {}
    if losses is not None:
        arr = np.asarray(losses, dtype=np.float64)
        if offset > 0 and os.path.exists(path):
            with h5py.File(os.fspath(path), "r") as f:
                if "losses" in f:
                    arr = np.concatenate([np.asarray(f["losses"])[:offset], arr])
        arrays["losses"] = arr
    trees = {"params": jax.device_get(state.params), "opt_state": jax.device_get(state.opt_state), "key": state.key}
    checkpoint.save(path, trees, attrs={"step": int(state.step)}, arrays=arrays)


def load_checkpoint(
    path: str | os.PathLike[str], params_template: Params, optimizer: optax.GradientTransformation
) -> tuple[TrainState, np.ndarray | None]:
    """Read a checkpoint written by :func:`save_checkpoint`; the templates give tree structure and dtypes.

    Returns ``(state, losses)`` (``losses`` is ``None`` when the file has none).
    """
    like = {"params": params_template, "opt_state": optimizer.init(params_template), "key": jax.random.key(0)}
    trees, attrs, arrays = checkpoint.load(path, like)
    params = jax.tree.map(jnp.asarray, trees["params"])
    opt_state = jax.tree.map(jnp.asarray, trees["opt_state"])
    losses = np.asarray(arrays["losses"]) if "losses" in arrays else None
    return TrainState(params, opt_state, int(attrs["step"]), trees["key"]), losses
