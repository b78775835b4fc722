"""OLRG benchmark: accuracy table of learned and fixed operator maps against exact C(t), and training throughput.

Usage::

    python benchmarks/bench_olrg.py --out benchmarks/results/olrg.json                 # paper case (D = 8, N = 10)
    python benchmarks/bench_olrg.py --cases paper n64 mixed --out ...          # + N = 64 (D = 8, 16), mixed field
    python benchmarks/bench_olrg.py --cases --timing --dims 8 16 --timing-steps 20   # training throughput only
    python benchmarks/bench_olrg.py --cases --formulations --complex-map --dims 8 16 32   # loss-gradient kernels
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/bench_olrg.py --timing ...  # 8 CPU devices

Cases (docs/conventions.md section 1 and issue #4; quench from ``|0...0>``, ``C(t) = <Z_1 Z_2>(t)``):

* ``paper``: TFIM ``J = h = 1``, ``D = 8`` (exact ``n0 = 3`` sites), blocks grown to ``N = 10``, order 2, trained on
  ``t in [0, 2]`` (the paper's Fig. 2: relative error at most 1e-2, typically 1e-3, for ``t in [0.1, 2]``).
* ``n64``: the same chain at ``N = 64`` with ``D = 8`` and ``D = 16``, one model per ``D`` trained on
  ``[0, --n64-T]`` (default 4; evaluated on ``[0, 4]``: at ``D = 16`` a model trained only to 4 has its error
  jump to 3e-3 in the last 0.05, against at most 2.5e-4 before ``t = 3.4``, so give it a margin, e.g. 4.4).
  The linear map is learned for the blocks up to ``--n64-train-final`` (default 12) sites, all with exact targets,
  and drops the sites beyond (``LinearIsometryMap(beyond="decouple")``, a partial trace: exact up to the light
  cone; exact ``C(t)`` of 12 and 64 sites differ by at most 5.7e-6 on ``[0, 4]``, of 16 and 64 by 2e-13).
  Reference TEBD max ``|error|`` on ``[0, 4]`` at ``N = 64``: 0.12 (chi = 4), 4.6e-3 (chi = 8), 6.2e-4 (chi = 16);
  ``--maps ... tebd`` measures it in the same run (:func:`olrg_hpc.spins.tebd.tebd_curve`, TeNPy, second order,
  ``--tebd-dt`` 0.01, bond dimensions ``--tebd-chis``, default ``D``; about a minute per chi at ``N = 64``).
  With ``--complex-map`` the learned isometry is complex (``LinearIsometryMap(complex_=True)``): a real subspace must
  hold the quench state on ``[-T, T]``, a complex one only on ``[0, T]``. At ``D = 16`` (seed 0, 4000 steps,
  ``--n64-T 4.4``) it gave 5.4e-4 on ``[0, 4]``, below TEBD at chi = 16, where the real map gave 1.6e-3 (seed 1:
  6.6e-4 against 7.7e-4); after 6000 steps 2.9e-4 and 3.1e-4 (seeds 0 and 1), half of TEBD's error.
  ``--orbit-tails`` records why: the weight of the 12-site quench orbit on ``[0, 4.4]`` that the best 16-dim
  subspace misses is 5.3e-4 for a complex one and 5.0e-2 for a real one.
* ``mixed``: mixed-field Ising ``h = 1, g = 0.5`` (non-integrable), ``N = 14`` against exact diagonalization,
  learned to ``--mixed-train-final`` (default 12) sites and decoupled beyond (ED: ``C(t)`` of 12 and 14 sites
  differ by at most 5.1e-6 on ``[0, 4]``), at ``D`` in ``--mixed-dims`` (default 8).

Without exact targets beyond the learned blocks' reach the method does not extrapolate with the parity weights
(order weights ``delta^k/(2^k k!)``, ``delta = 0.02``): exact targets only up to 7 sites gave relative error 0.55
at ``N = 10``, no exact targets at all 0.57 (seed 0, 600-1000 steps).

Every case has rows for NRG, the DMRG-style time-averaged map and the learned linear isometry (training recipe
:data:`olrg_hpc.olrg.pipeline.RECIPE`, ``keep_state=True`` unless ``--no-keep-state``), and with ``--maps ... omm``
the neural Operator Matrix Map trained the same way; each row records the max
relative error on ``[0.1, 2]``, the max ``|error|`` on ``[0, 2]`` and ``[0, 4]``, the training wall time and
steps. The table goes to ``--out`` (JSON) with the error curves, loss history and machine description.
``--timing`` measures, for each ``D`` in ``--dims`` and each device count in ``--timing-devices`` (default 1 and 8
emulated CPU devices, or 1 and all accelerators), in a fresh process each (``--measure``): steps/s of the jitted
training step (plain order weights, 20 samples per order), the time to target (the paper problem with the
:data:`RECIPE` at ``N = --timing-sites``, cosine schedule over ``--target-max-steps``, the max relative error on
``[0.1, 2]`` checked every ``--eval-every`` steps until it is at most ``--target-error``; evaluation excluded,
compilation included), and the process's peak memory (host RSS; on a GPU also XLA's peak bytes in use). The
device kind is recorded with every row, so the same command on a GPU machine gives the GPU figures.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import nullcontext  # noqa: E402
from typing import Any  # noqa: E402
from unittest import mock  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from olrg_hpc.jaxsetup import blas_single_thread  # noqa: E402
from olrg_hpc.olrg import evaluate as E  # noqa: E402
from olrg_hpc.olrg import loss as L  # noqa: E402
from olrg_hpc.olrg import maps as M  # noqa: E402
from olrg_hpc.olrg import train as T  # noqa: E402
from olrg_hpc.olrg.pipeline import RECIPE  # noqa: E402
from olrg_hpc.spins import models  # noqa: E402

#: evaluation grid: step 0.05 on [0, 4]
TIMES = np.round(np.arange(0.0, 4.0001, 0.05), 10)


def peak_rss_mib() -> float:
    """Peak resident set size of this process in MiB (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_steps(D: int, devices: list[Any], steps: int, n_sites: int, n_per_order: int) -> dict[str, float]:
    """Compile time and steps/s of the training step for kept dimension ``D`` on ``devices``."""
    n0 = int(round(math.log2(D)))
    cfg = L.LossConfig(model=models.tfim(n_sites), n0=n0, n_final=n_sites, T=2.0, K=2, n_per_order=n_per_order)
    tc = T.TrainConfig(steps=steps, lr=1e-2, sync_every=max(1, steps), seed=0)
    tr = T.Trainer(M.LinearIsometryMap(), cfg, tc, devices=devices)
    st = tr.initial_state()
    batch = tr.batch_for(0)
    key = jax.device_put(jax.random.PRNGKey(0), tr.rep)
    t0 = time.perf_counter()
    step = tr.step_fn(0)
    params, opt_state, loss = step(st.params, st.opt_state, batch, key)
    jax.block_until_ready(loss)
    t_compile = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        params, opt_state, loss = step(params, opt_state, batch, key)
    jax.block_until_ready(params)
    dt = time.perf_counter() - t0
    return {
        "D": D,
        "n_devices": len(devices),
        "n_samples": batch.n_samples,
        "n_scales": cfg.n_scales,
        "compile_s": t_compile,
        "steps_per_s": steps / dt,
    }


def time_formulations(D: int, args: argparse.Namespace, reps: int = 7) -> dict[str, Any]:
    """Seconds per jitted loss-and-gradient evaluation of the ``n64`` case at kept dimension ``D`` (``--n64-T``,
    ``--n64-train-final``, the learned map of this run's flags, no exact targets), one device, medians of ``reps``
    interleaved repetitions: the eigenbasis chi of :func:`olrg_hpc.olrg.loss.tobc_chi` against the evolution-matrix
    form it replaced (``_tobc_chi_expm``), both with one BLAS thread as in training, and the eigenbasis form with
    BLAS's default thread count (the contention :func:`olrg_hpc.jaxsetup.blas_single_thread` removes)."""
    spec = dict(model=models.tfim(args.n64_train_final), n0=int(round(math.log2(D))), n_final=args.n64_train_final,
                T=args.n64_T, beyond="decouple")
    cfg = L.LossConfig(model=spec["model"], n0=spec["n0"], n_final=spec["n_final"], T=spec["T"], K=args.order,
                       n_per_order=args.n_per_order, weights=RECIPE["weights"], delta=RECIPE["delta"], sample_T=True)
    batch = L.make_batch(cfg, args.seed)
    mp = learned_map("linear", spec, args)
    params = mp.init(jax.random.PRNGKey(args.seed), 2 * D, D, cfg.n_scales)
    variants = {"eig_1thread": (L.tobc_chi, blas_single_thread), "expm_1thread": (L._tobc_chi_expm, blas_single_thread),
                "eig_default_threads": (L.tobc_chi, nullcontext)}
    fns, secs = {}, {k: [] for k in variants}
    for name, (chi, _) in variants.items():
        with mock.patch.object(L, "tobc_chi", chi):
            fns[name] = jax.jit(jax.value_and_grad(lambda p: L.olrg_loss(p, mp, cfg, batch)))
            jax.block_until_ready(fns[name](params))  # compile while the patch holds
    for _ in range(reps):
        for name, (_, ctx) in variants.items():
            with ctx():
                t0 = time.perf_counter()
                jax.block_until_ready(fns[name](params))
                secs[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in secs.items()}
    return {"D": D, "n_samples": batch.n_samples, "n_scales": cfg.n_scales, "complex_map": args.complex_map,
            "seconds": med, "speedup_eig_vs_expm": med["expm_1thread"] / med["eig_1thread"],
            "speedup_one_blas_thread": med["eig_default_threads"] / med["eig_1thread"]}


def paper_trainer(D: int, args: argparse.Namespace, devices: list[Any], steps: int) -> tuple[T.Trainer, Any]:
    """Trainer of the paper problem (TFIM, ``N = --timing-sites``, order ``--order``, trained on ``[0, --paper-T]``)
    with the :data:`RECIPE` at kept dimension ``D`` (exact ``log2 D`` sites at the start), and its model."""
    N = args.timing_sites
    spec = dict(model=models.tfim(N), n0=int(round(math.log2(D))), n_final=N, T=args.paper_T, steps=steps,
                beyond="reuse")
    return recipe_trainer(spec, args, learned_map("linear", spec, args), devices, sync_every=steps), spec["model"]


def time_to_target(D: int, devices: list[Any], args: argparse.Namespace) -> dict[str, Any]:
    """Training seconds and steps until the max relative error of ``C(t)`` on ``[0.1, 2]`` is at most
    ``--target-error`` (the paper's 1e-2), checked every ``--eval-every`` steps of a cosine schedule over
    ``--target-max-steps``; the evaluations are not counted as training time, compilation is."""
    tr, m = paper_trainer(D, args, devices, args.target_max_steps)
    N, n0 = args.timing_sites, int(round(math.log2(D)))
    times = TIMES[(TIMES >= 0.1 - 1e-9) & (TIMES <= 2.0 + 1e-9)]
    exact = E.exact_curve(m, N, times)
    st, train_s, curve = None, 0.0, []
    while st is None or st.step < args.target_max_steps:
        t0 = time.perf_counter()
        st = tr.run(steps=(0 if st is None else st.step) + args.eval_every, state=st)
        jax.block_until_ready(st.params)
        train_s += time.perf_counter() - t0
        rel = float(np.max(np.abs(E.olrg_curve(m, N, tr.omap, times, st.params, n0) - exact) / np.abs(exact)))
        curve.append((st.step, train_s, rel))
        if rel <= args.target_error:
            break
    reached = curve[-1][2] <= args.target_error
    return {"target_error": args.target_error, "reached": reached,
            "steps_to_target": curve[-1][0] if reached else None,
            "seconds_to_target": curve[-1][1] if reached else None,
            "error_curve": [{"step": s, "train_s": t, "max_rel_err": e} for s, t, e in curve]}


def measure(D: int, n_devices: int, args: argparse.Namespace) -> dict[str, Any]:
    """Throughput (and with ``--target-error``, time to target) of one ``D`` on the first ``n_devices`` devices,
    with this process's peak memory: resident set (host) and, on accelerators, XLA's peak bytes in use."""
    devices = jax.devices()[:n_devices]
    with blas_single_thread():  # as in Trainer.run (time_steps calls the step function directly)
        steps = time_steps(D, devices, args.timing_steps, args.timing_sites, 20)
    r: dict[str, Any] = {"device_kind": devices[0].device_kind, "platform": devices[0].platform, **steps}
    if args.target_error:
        r.update(time_to_target(D, devices, args))
    r["peak_rss_mib"] = peak_rss_mib()
    stats = devices[0].memory_stats() if devices[0].platform != "cpu" else None
    r["peak_device_mib"] = stats["peak_bytes_in_use"] / 2**20 if stats and "peak_bytes_in_use" in stats else None
    return r


def measure_in_subprocess(D: int, n_devices: int, args: argparse.Namespace) -> dict[str, Any]:
    """:func:`measure` in a fresh interpreter (its own peak memory; on CPU exactly ``n_devices`` emulated
    devices), forwarding this run's options."""
    env = dict(os.environ)
    if jax.default_backend() == "cpu":
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={n_devices}"
    fwd = ["--timing-steps", args.timing_steps, "--timing-sites", args.timing_sites, "--order", args.order,
           "--n-per-order", args.n_per_order, "--paper-T", args.paper_T, "--lr", args.lr, "--seed", args.seed,
           "--exact-weight", args.exact_weight, "--enlarge", args.enlarge, "--target-error", args.target_error,
           "--target-max-steps", args.target_max_steps, "--eval-every", args.eval_every,
           "--keep-state" if args.keep_state else "--no-keep-state"]
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", str(D), str(n_devices), *map(str, fwd)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def window_errors(r: dict[str, np.ndarray]) -> dict[str, float]:
    """Max relative error on [0.1, 2] and max |error| on [0, 2] and [0, 4] of an :func:`error_curve` result."""
    t = r["times"]

    def worst(key: str, lo: float, hi: float) -> float:
        sel = (t >= lo - 1e-9) & (t <= hi + 1e-9)
        return float(np.max(r[key][sel]))

    return {
        "max_rel_err_0.1_2": worst("rel_err", 0.1, 2.0),
        "median_rel_err_0.1_2": float(np.median(r["rel_err"][(t >= 0.1 - 1e-9) & (t <= 2.0 + 1e-9)])),
        "max_abs_err_0_2": worst("abs_err", 0.0, 2.0),
        "max_abs_err_0_4": worst("abs_err", 0.0, 4.0),
    }


def case_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The (model, N, D, training) settings of the requested cases."""
    specs = []
    for case in args.cases:
        if case == "paper":
            specs.append(dict(case="paper", model=models.tfim(10), N=10, n0=3, n_final=10, T=args.paper_T,
                              steps=args.steps, beyond="reuse"))
        elif case == "n64":
            for D in args.n64_dims:
                n0 = int(round(math.log2(D)))
                specs.append(dict(case="n64", model=models.tfim(64), N=64, n0=n0, n_final=args.n64_train_final,
                                  T=args.n64_T, steps=args.n64_steps, beyond="decouple"))
        elif case == "mixed":
            for D in args.mixed_dims:
                specs.append(dict(case="mixed", model=models.mixed_field_ising(14, h=1.0, g=0.5), N=14,
                                  n0=int(round(math.log2(D))), n_final=args.mixed_train_final, T=args.mixed_T,
                                  steps=args.mixed_steps, beyond="decouple"))
        else:
            raise ValueError(f"unknown case {case!r}")
    return specs


def learned_map(name: str, spec: dict[str, Any], args: argparse.Namespace) -> M.OperatorMap:
    """``linear``: the learned isometry (``keep_state`` from ``--keep-state``); ``omm``: the neural Operator Matrix
    Map (width 64, ``--omm-depth`` layers, ``--omm-noise`` noise samples averaged)."""
    if name == "omm":
        cut = spec["n_final"] - spec["n0"] if spec["beyond"] == "decouple" else None
        return M.OperatorMatrixMap(width=64, depth=args.omm_depth, n_noise=args.omm_noise, decouple_after=cut)
    return M.LinearIsometryMap(beyond=spec["beyond"], keep_state=args.keep_state, complex_=args.complex_map)


def warm_params(cfg: L.LossConfig, args: argparse.Namespace, mp: M.OperatorMap) -> Any:
    """``--warm dmrg``: the linear map starts from the time-averaged DMRG map's isometries (``T`` of the loss) along
    its own flow to ``n_final`` sites (complex: ``--complex-map``); otherwise ``None`` (the map's own init)."""
    if args.warm != "dmrg" or not isinstance(mp, M.LinearIsometryMap):
        return None
    warm = E.fixed_map_isometries(cfg.model, cfg.n_final, M.DMRGMap(T=cfg.T), n0=cfg.n0)
    return mp.init(jax.random.PRNGKey(args.seed), 2 * cfg.dim, cfg.dim, cfg.n_scales, warm=warm)


def recipe_trainer(spec: dict[str, Any], args: argparse.Namespace, mp: M.OperatorMap, devices: list[Any] | None,
                   sync_every: int) -> T.Trainer:
    """Trainer of ``mp`` on one case (``model``, ``n0``, ``n_final``, ``T``, ``steps``) with the :data:`RECIPE`:
    exact targets on every block up to ``n_final``, order ``--order``, ``--n-per-order`` samples per order."""
    m = spec["model"].with_n(spec["n_final"])
    cfg = L.LossConfig(model=m, n0=spec["n0"], n_final=spec["n_final"], T=spec["T"], K=args.order,
                       n_per_order=args.n_per_order, weights=RECIPE["weights"], delta=RECIPE["delta"],
                       sample_T=True, stratify_T=args.stratify_T, n_order0=args.n_order0,
                       exact_weight=args.exact_weight, exact_max_n=spec["n_final"] + args.enlarge, enlarge=args.enlarge)
    tc = T.TrainConfig(steps=spec["steps"], lr=args.lr, lr_schedule=RECIPE["lr_schedule"],
                       optimizer=RECIPE["optimizer"], warmup=RECIPE["warmup"], clip=RECIPE["clip"],
                       sync_every=sync_every, seed=args.seed, resample=args.exact_weight == 0)
    return T.Trainer(mp, cfg, tc, devices=devices, params=warm_params(cfg, args, mp))


def train_learned(spec: dict[str, Any], args: argparse.Namespace,
                  name: str = "linear") -> tuple[M.OperatorMap, Any, dict[str, Any]]:
    """Train the learned map ``name`` of one case with the :data:`RECIPE` settings."""
    mp = learned_map(name, spec, args)
    tr = recipe_trainer(spec, args, mp, jax.devices()[: args.train_devices] if args.train_devices else None,
                        sync_every=max(1, min(100, spec["steps"])))
    t0 = time.perf_counter()
    t_batch = time.perf_counter()
    tr.batch_for(0)  # exact targets (ED of every block up to 12 sites): part of the training cost
    t_batch = time.perf_counter() - t_batch
    st = tr.run()
    wall = time.perf_counter() - t0
    info = {"train_s": wall, "batch_s": t_batch, "steps": spec["steps"], "loss_first": st.history[0],
            "loss_last": st.history[-1], "loss_history": st.history[:: max(1, len(st.history) // 50)]}
    return mp, st.params, info


def run_case(spec: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Table rows (fixed maps and the learned linear map) of one case."""
    m, N, n0 = spec["model"], spec["N"], spec["n0"]
    D = 2**n0
    base = {"case": spec["case"], "model": m.name, "couplings": dict(m.couplings), "N": N, "D": D}
    rows = []
    maps: list[tuple[str, M.OperatorMap]] = [("nrg", M.NRGMap()), (f"dmrg_T{spec['T']:g}", M.DMRGMap(T=spec["T"]))]
    for name, mp in maps:
        if name not in args.maps and name.split("_")[0] not in args.maps:
            continue
        t0 = time.perf_counter()
        r = E.error_curve(m, N, mp, TIMES, n0=n0)
        rows.append({**base, "map": name, **window_errors(r), "train_s": 0.0, "eval_s": time.perf_counter() - t0,
                     "abs_err": r["abs_err"].tolist()})
        print(rows[-1]["map"], {k: v for k, v in rows[-1].items() if k.startswith("max")}, flush=True)
    if "tebd" in args.maps:
        from olrg_hpc.spins.tebd import tebd_curve

        for chi in args.tebd_chis or [D]:
            t0 = time.perf_counter()
            approx = tebd_curve(m, N, TIMES, chi=chi, dt=args.tebd_dt)
            seconds = time.perf_counter() - t0
            r = E.against_exact(m, N, TIMES, approx)
            rows.append({**base, "map": f"tebd_chi{chi}", "chi": chi, "dt": args.tebd_dt, **window_errors(r),
                         "train_s": 0.0, "eval_s": seconds, "abs_err": r["abs_err"].tolist()})
            print(rows[-1]["map"], {k: v for k, v in rows[-1].items() if k.startswith("max")}, flush=True)
    for name in ("linear", "omm"):
        if name not in args.maps or args.skip_train:
            continue
        mp, params, info = train_learned(spec, args, name)
        t0 = time.perf_counter()
        # with --enlarge the system is the last mapped block plus that many exact sites (what the loss compared)
        r = E.error_curve(m, N, mp, TIMES, params=params, n0=n0, enlarge=args.enlarge)
        rows.append({**base, "map": name, "n_final_train": spec["n_final"], "T_train": spec["T"],
                     "enlarge": args.enlarge,
                     **window_errors(r), **info, "eval_s": time.perf_counter() - t0, "abs_err": r["abs_err"].tolist(),
                     "approx": r["approx"].tolist(), "exact": r["exact"].tolist()})
        print(name, {k: v for k, v in rows[-1].items() if k.startswith("max") or k == "train_s"}, flush=True)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = ["case", "map", "D", "N", "max_rel_err_0.1_2", "max_abs_err_0_2", "max_abs_err_0_4", "train_s"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r[c]:.2e}" if isinstance(r[c], float) and c != "train_s" else
                         (f"{r[c]:.0f}" if c == "train_s" else str(r[c])) for c in cols))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/olrg.json")
    p.add_argument("--cases", nargs="*", default=["paper"], choices=["paper", "n64", "mixed"])
    p.add_argument("--maps", nargs="+", default=["nrg", "dmrg", "linear"],
                   help="also: omm (neural map), tebd (TeNPy TEBD reference at bond dimension chi)")
    p.add_argument("--tebd-chis", type=int, nargs="+", default=None, help="TEBD bond dimensions (default: D)")
    p.add_argument("--tebd-dt", type=float, default=0.01, help="TEBD step (second-order Trotter)")
    p.add_argument("--omm-depth", type=int, default=4)
    p.add_argument("--omm-noise", type=int, default=3)
    p.add_argument("--skip-train", action="store_true", help="fixed maps only")
    p.add_argument("--steps", type=int, default=1500, help="training steps of the paper case")
    p.add_argument("--paper-T", type=float, default=2.2, help="training window of the paper case (evaluated on [0, 2])")
    p.add_argument("--keep-state", action=argparse.BooleanOptionalAction, default=True,
                   help="LinearIsometryMap(keep_state=...): the isometry keeps the block's state (C(0) exact)")
    p.add_argument("--complex-map", action="store_true",
                   help="LinearIsometryMap(complex_=True): a complex isometry (a complex D-dim subspace)")
    p.add_argument("--warm", choices=["none", "dmrg"], default="none",
                   help="start the linear map from the time-averaged DMRG map's isometries (with --complex-map)")
    p.add_argument("--orbit-tails", action="store_true",
                   help="also record, per case, the weight of the exact quench orbit on [0, T] of the n_final-site "
                        "chain that the best complex and the best real D-dim subspace miss (evaluate.orbit_tails)")
    p.add_argument("--n64-dims", type=int, nargs="+", default=[8, 16])
    p.add_argument("--n64-train-final", type=int, default=12, help="last block of the learned scales (N = 64)")
    p.add_argument("--n64-steps", type=int, default=600)
    p.add_argument("--n64-T", type=float, default=4.0, help="training window of the N = 64 case (evaluated on [0, 4])")
    p.add_argument("--mixed-dims", type=int, nargs="+", default=[8])
    p.add_argument("--mixed-T", type=float, default=4.0)
    p.add_argument("--mixed-train-final", type=int, default=12, help="last block of the learned scales (N = 14)")
    p.add_argument("--mixed-steps", type=int, default=1000)
    p.add_argument("--order", type=int, default=2)
    p.add_argument("--n-per-order", type=int, default=40)
    p.add_argument("--exact-weight", type=float, default=1.0)
    p.add_argument("--enlarge", type=int, default=0, choices=(0, 1, 2),
                   help="compare the TOBCs after this many more exact sites (LossConfig.enlarge; teal's enlarge_by)")
    p.add_argument("--n-order0", type=int, default=None, help="order-0 samples (default: --n-per-order)")
    p.add_argument("--stratify-T", action=argparse.BooleanOptionalAction, default=True,
                   help="stratified final times within each order (LossConfig.stratify_T)")
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-devices", type=int, default=1)
    p.add_argument("--timing", action="store_true", help="also time the training step on 1 and all devices")
    p.add_argument("--formulations", action="store_true",
                   help="time the loss gradient of the n64 case at each of --dims: eigenbasis chi against the "
                        "evolution-matrix form, one BLAS thread against the default")
    p.add_argument("--dims", type=int, nargs="+", default=[8, 16])
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--timing-sites", type=int, default=10)
    p.add_argument("--timing-devices", type=int, nargs="+", default=None,
                   help="device counts to time (default: 1 and every device of this backend)")
    p.add_argument("--target-error", type=float, default=1e-2,
                   help="with --timing: also train to this max rel. error on [0.1, 2] (0: throughput only)")
    p.add_argument("--target-max-steps", type=int, default=1500)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--measure", type=int, nargs=2, metavar=("D", "N_DEVICES"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.warm == "dmrg" and not args.complex_map:
        p.error("--warm dmrg needs --complex-map (the time-averaged DMRG isometries are complex)")
    if args.measure:  # one child of --timing: a JSON line on stdout
        print(json.dumps(measure(*args.measure, args)), flush=True)
        return {}

    result: dict[str, Any] = {
        "devices": [str(d) for d in jax.devices()],
        "jax_version": jax.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_avg_start": os.getloadavg(),
        "recipe": RECIPE,
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "times": TIMES.tolist(),
    }
    if args.timing:
        counts = args.timing_devices or sorted({1, 8 if jax.default_backend() == "cpu" else len(jax.devices())})
        result["timing"] = []
        for D in args.dims:
            for n in counts:
                r = measure_in_subprocess(D, n, args)
                print({k: v for k, v in r.items() if k != "error_curve"}, flush=True)
                result["timing"].append(r)
                _write(args.out, result)
    if args.formulations:
        result["formulations"] = []
        for D in args.dims:
            result["formulations"].append(time_formulations(D, args))
            print("formulations", result["formulations"][-1], flush=True)
            _write(args.out, result)
    if args.orbit_tails:
        result["orbit_tails"] = []
        for spec in case_specs(args):
            D = 2 ** spec["n0"]
            tails = E.orbit_tails(spec["model"], spec["n_final"], spec["T"], [D])
            result["orbit_tails"].append({"case": spec["case"], "n": spec["n_final"], "T": spec["T"], "D": D,
                                          **{kind: v[0] for kind, v in tails.items()}})
            print("orbit tail", result["orbit_tails"][-1], flush=True)
    rows: list[dict[str, Any]] = []
    for spec in case_specs(args):
        rows.extend(run_case(spec, args))
        result["table"] = rows
        _write(args.out, result)  # partial results survive an interrupted run
    result["table"] = rows
    result["load_avg_end"] = os.getloadavg()
    result["peak_rss_mib"] = peak_rss_mib()
    print_table(rows)
    _write(args.out, result)
    return result


def _write(out: str | None, result: dict[str, Any]) -> None:
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
