"""OLRG study steps as self-contained computations: train one map, evaluate one map, compare them.

These are the library calls the ``olrg_study`` workflow fans out (no Dask here):

- :func:`train_map_task`: train a learned map (``linear`` or ``omm``) on the TOBC loss of one
  (model, couplings, n0 -> n_final, T, K) with optax; returns the loss history, timings and the trained
  parameters as flat leaves (``params/00000`` ... in ``jax.tree_util`` order; the map's own ``init``
  gives the structure back, see :func:`params_from_leaves`).
- :func:`evaluate_map_task`: grow the exact ``n0``-site block to ``N`` sites with a map (trained, or a
  fixed one: ``identity``, ``nrg``, ``dmrg``) and compare ``C(t) = <Z_1 Z_2>(t)`` with the exact curve
  (free fermions for the TFIM, ED otherwise); ``tebd`` is the TEBD baseline at bond dimension ``chi = D``
  (:func:`~olrg_hpc.spins.tebd.tebd_curve`) in the same format.
- :func:`compare_maps`: one table of max |error| and max relative error per (map, D) on the time window.

``D = 2^n0`` (the exact initial block fixes the kept dimension).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from olrg_hpc import checkpoint
from olrg_hpc.olrg.evaluate import against_exact, error_curve, exact_curve
from olrg_hpc.olrg.loss import LossConfig, draw_samples, exact_chi
from olrg_hpc.olrg.maps import make_map
from olrg_hpc.olrg.train import TrainConfig, Trainer
from olrg_hpc.spins.models import make_model

LEARNED = ("linear", "omm")


def params_from_leaves(map_name: str, map_options: Mapping[str, Any], n0: int, n_final: int,
                       leaves: Mapping[str, np.ndarray]) -> Any:
    """Rebuild a trained map's parameters from stored leaves (:func:`olrg_hpc.checkpoint.from_leaves`), using the
    map's own ``init`` as template."""
    omap = make_map(map_name, **map_options)
    template = omap.init(jax.random.PRNGKey(0), 2 * 2**n0, 2**n0, n_final - n0)
    try:
        return checkpoint.from_leaves(leaves, template)
    except ValueError as e:
        raise ValueError(f"{map_name}: {e}") from None


#: Loss and optimizer settings of the paper-parity run (TFIM J = h = 1, D = 8, n 4 -> 10, order 2; measured in
#: benchmarks/bench_olrg.py, configs/olrg_paper.yaml): order weights ``delta^k / (2^k k!)`` with ``delta = 0.02``
#: (teal's "series" factors for a 0.02 time step: the order-0 curve dominates, orders 1 and 2 regularize; weights
#: 1/k! gave 2.7e-2 where these give 5e-3 - 9e-3), sampled final times on ``[0, T]``, the exact-target term on
#: every block up to ``n_final``, AdamW with cosine decay and gradient clipping, and one fixed batch (``resample``
#: only without exact targets: the exact TOBCs of 10-site blocks cost seconds per batch). The parity config adds
#: ``LinearIsometryMap(keep_state=True)`` and trains on ``[0, 2.2]`` for ``[0, 2]``. Without exact targets on the
#: blocks that matter these weights do not extrapolate (relative error 0.55 with exact targets up to 7 sites only).
RECIPE: dict[str, Any] = {"weights": "delta", "delta": 0.02, "optimizer": "adamw", "lr_schedule": "cosine",
                          "warmup": 0, "clip": 1.0}


def _loss_config(model: str, couplings: Mapping[str, float], n0: int, n_final: int, T: float, K: int,
                 n_per_order: int, exact_weight: float, sample_T: bool, weights: str, delta: float, enlarge: int,
                 n_order0: int | None, exact_max_n: int | None, consistency: str,
                 environments: Sequence[int | str] = (), env_weight: float = 1.0) -> LossConfig:
    """The loss of a training task; the exact-target task draws its samples from the same fields."""
    return LossConfig(model=make_model(model, n_final, **couplings), n0=n0, n_final=n_final, T=T, K=K,
                      n_per_order=n_per_order, weights=weights, delta=delta, exact_weight=exact_weight,
                      exact_max_n=n_final + enlarge if exact_max_n is None else exact_max_n, sample_T=sample_T,
                      enlarge=enlarge, n_order0=n_order0, consistency=consistency,
                      environments=tuple(environments), env_weight=env_weight)


def exact_targets_task(model: str, couplings: Mapping[str, float], n_sites: int, T: float, K: int,
                       n_per_order: int, batch_seed: int, sample_T: bool = True, n_order0: int | None = None,
                       weights: str = RECIPE["weights"], delta: float = RECIPE["delta"]) -> dict[str, Any]:
    """Exact TOBCs of the ``n_sites``-site chain (at most 12: the small-block solver) for the samples a training task
    with the same fields and ``batch_seed`` draws (:func:`~olrg_hpc.olrg.loss.draw_samples`): one task per block, so
    the exact targets of every block, coupling point and seed run in parallel and serve every ``D``."""
    cfg = _loss_config(model, couplings, 1, n_sites, T, K, n_per_order, 0.0, sample_T, weights, delta, 0, n_order0,
                       None, "joint")
    t0 = time.perf_counter()
    chi = exact_chi(cfg, draw_samples(cfg, batch_seed), n_sites)
    return {"chi": chi, "n_sites": n_sites, "seconds": time.perf_counter() - t0}


def train_map_task(model: str, couplings: Mapping[str, float], map_name: str, map_options: Mapping[str, Any],
                   n0: int, n_final: int, T: float, K: int, n_per_order: int, steps: int, lr: float,
                   schedule: str, seed: int, exact_weight: float = 1.0, sample_T: bool = True,
                   weights: str = RECIPE["weights"], delta: float = RECIPE["delta"],
                   warmup: int = RECIPE["warmup"], clip: float = RECIPE["clip"], enlarge: int = 0,
                   n_order0: int | None = None, exact_max_n: int | None = None, consistency: str = "joint",
                   environments: Sequence[int | str] = (), env_weight: float = 1.0, batch_seed: int | None = None,
                   deps: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Train one learned map end to end on the TOBC loss (all devices of this process, data parallel).

    Defaults are :data:`RECIPE`. Scales are the blocks ``n0 + 1 .. n_final``; the exact-target term covers chains up
    to ``exact_max_n`` sites (default ``n_final + enlarge``; never more than 12), the blocks beyond it are trained on
    the consistency term alone (``consistency``, :class:`~olrg_hpc.olrg.loss.LossConfig`), taken also in
    ``environments`` (weight ``env_weight``). ``enlarge``: the
    one-more-site comparison; ``n_order0``: the number of order-0 samples. ``batch_seed``: the seed of the TOBC
    samples and of the map's initial parameters (default: the task's ``seed``); exact targets from
    :func:`exact_targets_task` dependencies with the same ``batch_seed`` are used, the others computed here.
    """
    cfg = _loss_config(model, couplings, n0, n_final, T, K, n_per_order, exact_weight, sample_T, weights, delta,
                       enlarge, n_order0, exact_max_n, consistency, environments, env_weight)
    seed = (seed if batch_seed is None else batch_seed) % (2**31)
    tc = TrainConfig(steps=steps, optimizer=RECIPE["optimizer"], lr=lr, lr_schedule=RECIPE["lr_schedule"],
                     warmup=warmup, clip=clip, schedule=schedule, seed=seed,
                     resample=exact_weight == 0, sync_every=max(1, min(100, steps)))
    exact = {int(d["n_sites"]): np.asarray(d["chi"]) for d in (deps or {}).values() if "chi" in d}
    omap = make_map(map_name, **map_options)
    t0 = time.perf_counter()
    state = Trainer(omap, cfg, tc, exact=exact).run()
    seconds = time.perf_counter() - t0
    return {"loss": np.asarray(state.history), "train_seconds": seconds, "steps": steps,
            "devices": len(jax.devices()), "params": checkpoint.leaves(state.params)}


def evaluate_map_task(model: str, couplings: Mapping[str, float], map_name: str, map_options: Mapping[str, Any],
                      n0: int, n_final: int, N: int, t_max: float, n_times: int, enlarge: int = 0,
                      deps: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Error curve of C(t) on ``n_times`` times in ``[0, t_max]`` for one map grown to ``N`` sites.

    A map trained with ``enlarge`` is evaluated on its last mapped block plus ``enlarge`` exact sites
    (:func:`~olrg_hpc.olrg.evaluate.olrg_curve`; a decoupling map's last mapped block is its last trained one).
    """
    m = make_model(model, N, **couplings)
    times = np.linspace(0.0, t_max, n_times)
    train_seconds = 0.0
    if map_name == "tebd":
        from olrg_hpc.spins.tebd import tebd_curve

        chi = int(map_options.get("chi", 2**n0))
        t0 = time.perf_counter()
        curve = tebd_curve(m, N, times, chi=chi, dt=float(map_options.get("dt", 0.01)),
                           order=int(map_options.get("order", 2)))
        res = {**against_exact(m, N, times, curve), "chi": chi}
    elif map_name == "exact_block":  # the small-block solver alone: the exact chain of n_final sites, cut there
        t0 = time.perf_counter()
        res = against_exact(m, N, times, exact_curve(m.with_n(n_final), n_final, times))
    else:
        omap = make_map(map_name, **map_options)
        params = None
        if map_name in LEARNED:
            (trained,) = (deps or {}).values()
            params = params_from_leaves(map_name, map_options, n0, n_final, trained["params"])
            train_seconds = float(trained["train_seconds"])
        t0 = time.perf_counter()
        res = error_curve(m, N, omap, times, params=params, n0=n0, enlarge=enlarge)
    return {**res, "D": 2**n0, "N": N, "train_seconds": train_seconds, "eval_seconds": time.perf_counter() - t0}


def compare_maps(deps: Mapping[str, Mapping[str, Any]], windows: tuple[float, ...] = (2.0, 4.0)) -> dict[str, Any]:
    """Max |error| of C(t) per evaluated (map, D) on [0, w] for each window w, and max relative error on
    [0.1, 2] (the paper's Fig. 2 measure)."""
    names = sorted(deps)

    def worst(n: str, key: str, lo: float, hi: float) -> float:
        t = deps[n]["times"]
        sel = (t >= lo - 1e-12) & (t <= hi + 1e-12)
        return float(np.max(deps[n][key][sel])) if np.any(sel) else float("nan")

    out: dict[str, Any] = {"labels": np.array(names), "D": np.array([int(deps[n]["D"]) for n in names]),
                           "train_seconds": np.array([float(deps[n]["train_seconds"]) for n in names])}
    t_end = min(float(deps[n]["times"][-1]) for n in names)
    for w in [w for w in windows if w <= t_end + 1e-12] or [t_end]:
        out[f"max_abs_err_t{w:g}"] = np.array([worst(n, "abs_err", 0.0, w) for n in names])
    out["max_rel_err_0.1_2"] = np.array([worst(n, "rel_err", 0.1, 2.0) for n in names])
    return out
