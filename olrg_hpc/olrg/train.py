"""Training of OLRG operator maps with optax, data-parallel over devices, HDF5 checkpoints (docs/conventions.md,
section 1).

* Optimizer: ``adam`` or ``adamw`` (``weight_decay``), gradient clipping by global norm (``clip``, 0 = off),
  learning-rate schedule ``constant``, ``cosine`` (decay to ``lr * final_lr_factor``) or ``exponential``, with
  optional linear ``warmup`` steps.
* Schedules (docs/conventions.md "Training"): ``"together"``: all scales in one loss (teal); ``"gradual"``: stage ``j``
  trains the loss of scales ``0..j`` (blocks ``n0+1 .. n0+1+j``) for ``steps_per_stage`` steps, the optimizer
  state is re-initialised at each stage start (rogerluo-duck). Stage of a step: ``step // steps_per_stage``
  (capped at the last stage).
* Data parallelism: the sample axis of every order's block of the :class:`~olrg_hpc.olrg.loss.TOBCBatch` is
  sharded over a 1-D mesh ``jax.sharding.Mesh(devices, ("data",))`` with ``NamedSharding(mesh, P("data"))`` (each
  block is zero-weight padded to a multiple of the device count); parameters and optimizer state are replicated
  (``P()``). The step is one ``jax.jit`` with these shardings; XLA inserts the cross-device reduction of the loss
  and gradients. ``block_until_ready`` is called every ``sync_every`` steps (bounded dispatch queue, honest timings).
* Randomness is a pure function of ``(seed, step)``: the noise key of step ``s`` is
  ``fold_in(PRNGKey(seed), s)`` and (with ``resample=True``) the TOBC samples of step ``s`` use seed
  ``seed * 1_000_003 + s``, otherwise one fixed batch per stage (seed ``seed + stage``). Hence a resumed run
  reproduces the uninterrupted trajectory.
* Checkpoints: params + optimizer state + step + loss history in HDF5 through the project's shared
  :mod:`olrg_hpc.checkpoint` (pytree groups ``params`` and ``opt_state``, leaves ``00000`` ... in
  ``jax.tree_util`` order, the tree structure checked against the template at load time; written atomically by
  :func:`olrg_hpc.store.atomic_h5`). The mesh comes from :func:`olrg_hpc.sharding.data_mesh`, over all devices or
  the ``devices`` given to the :class:`Trainer`.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from olrg_hpc import checkpoint as ckpt
from olrg_hpc import sharding
from olrg_hpc.jaxsetup import blas_single_thread, enable_x64

from .loss import LossConfig, OrderBlock, TOBCBatch, make_batch, olrg_loss
from .maps import OperatorMap

enable_x64()

#: XLA options that halve CPU compile times of the (small) OLRG step at a small run-time cost (tests, short runs)
FAST_COMPILE: dict[str, Any] = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}

__all__ = [
    "FAST_COMPILE",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "make_optimizer",
    "save_checkpoint",
    "load_checkpoint",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimizer and schedule settings (module docstring)."""

    steps: int = 200
    optimizer: str = "adam"
    lr: float = 1e-2
    lr_schedule: str = "constant"
    final_lr_factor: float = 0.01
    warmup: int = 0
    weight_decay: float = 1e-4
    clip: float = 1.0
    schedule: str = "together"
    steps_per_stage: int | None = None
    seed: int = 0
    resample: bool = False
    sync_every: int = 10
    checkpoint_every: int = 0
    fast_compile: bool = False


def make_optimizer(tc: TrainConfig, steps: int | None = None) -> optax.GradientTransformation:
    """``clip -> adam/adamw`` with the configured learning-rate schedule over ``steps`` steps."""
    n = max(1, int(steps if steps is not None else tc.steps))
    if tc.lr_schedule == "constant":
        sched: Any = optax.constant_schedule(tc.lr)
    elif tc.lr_schedule == "cosine":
        sched = optax.cosine_decay_schedule(tc.lr, max(1, n - tc.warmup), alpha=tc.final_lr_factor)
    elif tc.lr_schedule == "exponential":
        sched = optax.exponential_decay(tc.lr, max(1, n - tc.warmup), tc.final_lr_factor)
    else:
        raise ValueError(f"unknown lr_schedule {tc.lr_schedule!r}")
    if tc.warmup > 0:
        sched = optax.join_schedules([optax.linear_schedule(0.0, tc.lr, tc.warmup), sched], [tc.warmup])
    if tc.optimizer == "adam":
        opt = optax.adam(sched)
    elif tc.optimizer == "adamw":
        opt = optax.adamw(sched, weight_decay=tc.weight_decay)
    else:
        raise ValueError(f"unknown optimizer {tc.optimizer!r}; use 'adam' or 'adamw'")
    return optax.chain(optax.clip_by_global_norm(tc.clip), opt) if tc.clip > 0 else opt


@dataclass
class TrainState:
    """Everything a resumed run needs."""

    params: Any
    opt_state: Any
    step: int = 0
    history: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: str | os.PathLike[str], state: TrainState, meta: dict[str, Any] | None = None) -> None:
    """Write ``state`` with :func:`olrg_hpc.checkpoint.save` (atomic); ``meta`` values are stored as strings."""
    attrs: dict[str, Any] = {"step": int(state.step)}
    attrs.update({f"meta_{k}": str(v) for k, v in (meta or {}).items()})
    ckpt.save(
        path,
        {"params": state.params, "opt_state": state.opt_state},
        attrs=attrs,
        arrays={"history": np.asarray(state.history, dtype=float)},
    )


def load_checkpoint(path: str | os.PathLike[str], like: TrainState) -> TrainState:
    """Read a checkpoint written by :func:`save_checkpoint`; ``like`` supplies the pytree structures."""
    trees, attrs, arrays = ckpt.load(path, {"params": like.params, "opt_state": like.opt_state})
    return TrainState(
        params=trees["params"],
        opt_state=trees["opt_state"],
        step=int(attrs["step"]),
        history=[float(x) for x in arrays["history"]],
    )


# --------------------------------------------------------------------------- trainer

#: jitted steps shared by Trainers with the same map object, stage config, optimizer and devices
_STEP_CACHE: dict[tuple[Any, ...], Any] = {}


class Trainer:
    """Train ``omap`` on the OLRG loss of ``cfg`` (module docstring for schedules, sharding and randomness)."""

    def __init__(
        self,
        omap: OperatorMap,
        cfg: LossConfig,
        tc: TrainConfig,
        devices: list[Any] | None = None,
        params: Any = None,
        exact: dict[int, np.ndarray] | None = None,
    ):
        if tc.schedule not in ("together", "gradual"):
            raise ValueError("schedule must be 'together' or 'gradual'")
        self.omap, self.cfg, self.tc = omap, cfg, tc
        self.exact = exact  # chain length -> exact chi of the batch of seed tc.seed (loss.make_batch's `exact`)
        self.mesh = sharding.data_mesh(devices=devices)
        self.n_dev = self.mesh.devices.size
        self.rep = NamedSharding(self.mesh, P())
        self.n_stages = cfg.n_scales if tc.schedule == "gradual" else 1
        self.steps_per_stage = tc.steps_per_stage or max(1, tc.steps // self.n_stages)
        if params is None:
            params = omap.init(jax.random.PRNGKey(tc.seed), 2 * cfg.dim, cfg.dim, cfg.n_scales)
        self.init_params = jax.device_put(params, self.rep)
        self._steps: dict[int, Any] = {}
        self._batches: dict[Any, TOBCBatch] = {}
        self.timings: list[float] = []

    # ---- stages
    def stage_of(self, step: int) -> int:
        return min(step // self.steps_per_stage, self.n_stages - 1)

    def stage_cfg(self, stage: int) -> LossConfig:
        if self.tc.schedule == "together":
            return self.cfg
        return replace(self.cfg, n_final=self.cfg.n0 + 1 + stage)

    def optimizer(self) -> optax.GradientTransformation:
        return make_optimizer(self.tc, self.steps_per_stage if self.tc.schedule == "gradual" else self.tc.steps)

    def initial_state(self) -> TrainState:
        params = self.init_params
        return TrainState(params=params, opt_state=jax.device_put(self.optimizer().init(params), self.rep))

    # ---- batches
    def batch_shardings(self) -> TOBCBatch:
        """Every block's sample axis over "data" (``exact`` is (n_exact, n): its second axis)."""
        d, e = NamedSharding(self.mesh, P("data")), NamedSharding(self.mesh, P(None, "data"))
        return TOBCBatch(tuple(OrderBlock(d, d, d, d, e, d) for _ in range(self.cfg.K + 1)))

    def batch_for(self, step: int) -> TOBCBatch:
        stage = self.stage_of(step)
        key = (stage, step) if self.tc.resample else (stage,)
        if key not in self._batches:
            seed = self.tc.seed * 1_000_003 + step if self.tc.resample else self.tc.seed + stage
            b = make_batch(self.stage_cfg(stage), seed=seed, pad_to=self.n_dev,
                           exact=self.exact if seed == self.tc.seed else None)
            if not self.tc.resample:
                self._batches.clear()
            self._batches[key] = jax.device_put(b, self.batch_shardings())
        return self._batches[key]

    # ---- the jitted step
    def _cache_key(self, stage: int) -> tuple[Any, ...]:
        opt_fields = (
            self.tc.fast_compile,
            self.tc.optimizer,
            self.tc.lr,
            self.tc.lr_schedule,
            self.tc.final_lr_factor,
            self.tc.warmup,
            self.tc.weight_decay,
            self.tc.clip,
            self.tc.schedule,
            self.steps_per_stage,
            self.tc.steps,
        )
        return (self.omap, self.stage_cfg(stage), opt_fields, tuple(d.id for d in self.mesh.devices.flat))

    def step_fn(self, stage: int) -> Any:
        """The jitted training step of a stage (cached per map, config, optimizer and devices)."""
        ck = self._cache_key(stage)
        if ck in _STEP_CACHE:
            self._steps[stage] = _STEP_CACHE[ck]
        if stage not in self._steps:
            cfg, omap, opt = self.stage_cfg(stage), self.omap, self.optimizer()

            def step(params: Any, opt_state: Any, batch: TOBCBatch, key: Any) -> tuple[Any, Any, Any]:
                loss, g = jax.value_and_grad(lambda p: olrg_loss(p, omap, cfg, batch, key))(params)
                updates, opt_state = opt.update(g, opt_state, params)
                return optax.apply_updates(params, updates), opt_state, loss

            self._steps[stage] = jax.jit(
                step,
                in_shardings=(self.rep, self.rep, self.batch_shardings(), self.rep),
                out_shardings=(self.rep, self.rep, self.rep),
                compiler_options=FAST_COMPILE if self.tc.fast_compile else None,
            )
            _STEP_CACHE[ck] = self._steps[stage]
        return self._steps[stage]

    def loss_fn(self, stage: int | None = None) -> Any:
        """Jitted ``(params, batch, key) -> loss`` of a stage (default: the full loss)."""
        cfg = self.cfg if stage is None else self.stage_cfg(stage)
        return jax.jit(lambda p, b, k: olrg_loss(p, self.omap, cfg, b, k))

    def run(
        self,
        steps: int | None = None,
        state: TrainState | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        callback: Any = None,
    ) -> TrainState:
        """Train until ``state.step == steps`` (default ``tc.steps``), from ``state`` or a fresh start.

        ``state.history[i]`` is the loss evaluated at the parameters *before* update ``i``. LAPACK runs single-threaded
        meanwhile (:func:`~olrg_hpc.jaxsetup.blas_single_thread`).
        """
        with blas_single_thread():
            return self._run(steps, state, checkpoint, callback)

    def _run(self, steps: int | None, state: TrainState | None, checkpoint: str | os.PathLike[str] | None,
             callback: Any) -> TrainState:
        total = self.tc.steps if steps is None else int(steps)
        st = self.initial_state() if state is None else state
        params, opt_state = jax.device_put(st.params, self.rep), jax.device_put(st.opt_state, self.rep)
        history = list(st.history)
        base = jax.random.PRNGKey(self.tc.seed)
        pending: list[Any] = []
        t0 = time.perf_counter()
        step = st.step
        while step < total:
            stage = self.stage_of(step)
            if self.tc.schedule == "gradual" and step > 0 and step % self.steps_per_stage == 0 and stage > 0:
                if step // self.steps_per_stage <= self.n_stages - 1:
                    opt_state = jax.device_put(self.optimizer().init(params), self.rep)
            key = jax.device_put(jax.random.fold_in(base, step), self.rep)
            params, opt_state, loss = self.step_fn(stage)(params, opt_state, self.batch_for(step), key)
            pending.append(loss)
            step += 1
            if len(pending) >= self.tc.sync_every or step == total:
                jax.block_until_ready(params)
                history.extend(float(x) for x in pending)
                pending = []
                self.timings.append(time.perf_counter() - t0)
                if callback is not None:
                    callback(step, history[-1], params)
            if checkpoint is not None and self.tc.checkpoint_every and step % self.tc.checkpoint_every == 0:
                history.extend(float(x) for x in pending)
                pending = []
                save_checkpoint(checkpoint, TrainState(params, opt_state, step, history), meta=asdict(self.tc))
        history.extend(float(x) for x in pending)
        out = TrainState(params=params, opt_state=opt_state, step=step, history=history)
        if checkpoint is not None:
            save_checkpoint(checkpoint, out, meta=asdict(self.tc))
        return out

    def resume(self, checkpoint: str | os.PathLike[str], steps: int | None = None) -> TrainState:
        """Load ``checkpoint`` (same map/config) and continue to ``steps``."""
        st = load_checkpoint(checkpoint, self.initial_state())
        st.params = jax.tree_util.tree_map(jnp.asarray, st.params)
        return self.run(steps, state=st, checkpoint=checkpoint)
