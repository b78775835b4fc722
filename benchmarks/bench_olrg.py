"""OLRG benchmark: training throughput on 1 vs all devices, time to a target error, baselines (science.md section 1).

Usage::

    python benchmarks/bench_olrg.py --out benchmarks/results/olrg.json            # timing + short training
    python benchmarks/bench_olrg.py --skip-train --dims 8 16 --timing-steps 20     # timing only
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python benchmarks/bench_olrg.py ...   # 8 emulated CPU devices

Records: ``jax.devices()``, steps/s of the jitted training step (learned linear map, TFIM J = h = 1, order 2)
on 1 device and on all devices for each kept dimension D (``n0 = log2 D``), the compile time, the error
curves of the NRG / DMRG-style baselines and of the trained map against free fermions (max relative error of
``C(t) = <Z_1 Z_2>(t)`` on ``[0.1, 2]``), the wall time at which the training first reached ``--target``
(time-to-target-error), and the peak resident memory of the process (``ru_maxrss``).
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from olrg_hpc.olrg import evaluate as E  # noqa: E402
from olrg_hpc.olrg import loss as L  # noqa: E402
from olrg_hpc.olrg import maps as M  # noqa: E402
from olrg_hpc.olrg import train as T  # noqa: E402
from olrg_hpc.spins import models  # noqa: E402


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
        "n_samples": int(batch.times.shape[0]),
        "n_scales": cfg.n_scales,
        "compile_s": t_compile,
        "steps_per_s": steps / dt,
    }


def baselines(n_sites: int, times: np.ndarray, n0: int) -> dict[str, Any]:
    """Error curves of the parameter-free maps against free fermions."""
    m = models.tfim(n_sites)
    out = {}
    for name, mp in (("nrg", M.NRGMap()), ("dmrg_time_averaged_T2", M.DMRGMap(T=2.0))):
        r = E.error_curve(m, n_sites, mp, times, n0=n0)
        out[name] = {"rel_err": r["rel_err"].tolist(), "max_rel_err": float(r["rel_err"].max())}
    return out


def train(args: argparse.Namespace, times: np.ndarray) -> dict[str, Any]:
    """Train the learned map at the paper's benchmark and track the error curve."""
    m = models.tfim(args.n_final)
    cfg = L.LossConfig(
        model=m,
        n0=args.n0,
        n_final=args.n_final,
        T=args.T,
        K=args.order,
        n_per_order=args.n_per_order,
        weights="inv_factorial",
        sample_T=not args.fixed_T,
        exact_weight=args.exact_weight,
        exact_max_n=args.n_final,
    )
    tc = T.TrainConfig(
        steps=args.steps,
        lr=args.lr,
        lr_schedule="cosine",
        optimizer="adamw",
        sync_every=args.eval_every,
        seed=args.seed,
        resample=args.exact_weight == 0,
    )
    if args.map == "omm":
        mp: M.OperatorMap = M.OperatorMatrixMap(width=args.width, depth=args.depth, n_noise=args.n_noise)
    else:
        mp = M.LinearIsometryMap(complex_=args.map == "linear_complex")
    tr = T.Trainer(mp, cfg, tc, devices=jax.devices()[: args.train_devices] if args.train_devices else None)
    trace: list[dict[str, float]] = []
    t0 = time.perf_counter()
    hit: dict[str, float] = {}

    def cb(step: int, loss: float, params: Any) -> None:
        r = E.error_curve(m, args.n_final, mp, times, params=params, n0=args.n0)
        err = float(r["rel_err"].max())
        trace.append({"step": step, "loss": loss, "max_rel_err": err, "wall_s": time.perf_counter() - t0})
        print(f"step {step} loss {loss:.3e} max rel err {err:.3e} ({time.perf_counter() - t0:.1f}s)", flush=True)
        if err <= args.target and not hit:
            hit.update(step=step, wall_s=time.perf_counter() - t0)

    st = tr.run(callback=cb)
    wall = time.perf_counter() - t0
    r = E.error_curve(m, args.n_final, mp, times, params=st.params, n0=args.n0)
    out = {
        "map": args.map,
        "config": {k: v for k, v in vars(args).items() if k != "out"},
        "train_wall_s": wall,
        "steps_per_s": args.steps / wall,
        "final_rel_err": r["rel_err"].tolist(),
        "final_max_rel_err": float(r["rel_err"].max()),
        "time_to_target": hit or None,
        "trace": trace,
    }
    for N in args.eval_sizes:
        rr = E.error_curve(models.tfim(N), N, mp, times, params=st.params, n0=args.n0)
        out[f"max_rel_err_N{N}"] = float(rr["rel_err"].max())
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/olrg.json")
    p.add_argument("--dims", type=int, nargs="+", default=[8, 16])
    p.add_argument("--timing-steps", type=int, default=20)
    p.add_argument("--timing-sites", type=int, default=10)
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--map", choices=["linear", "linear_complex", "omm"], default="linear")
    p.add_argument("--n0", type=int, default=3)
    p.add_argument("--n-final", type=int, default=10)
    p.add_argument("--T", type=float, default=2.0)
    p.add_argument("--fixed-T", action="store_true", help="train at the single final time T (paper) instead of T_s")
    p.add_argument("--order", type=int, default=2)
    p.add_argument("--n-per-order", type=int, default=40)
    p.add_argument("--exact-weight", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--n-noise", type=int, default=2)
    p.add_argument("--train-devices", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-sizes", type=int, nargs="*", default=[16, 32])
    p.add_argument("--target", type=float, default=1e-2)
    args = p.parse_args(argv)

    times = np.round(np.arange(0.1, 2.0001, 0.1), 10)
    result: dict[str, Any] = {
        "devices": [str(d) for d in jax.devices()],
        "jax_version": jax.__version__,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg(),
        "times": times.tolist(),
    }
    if not args.skip_timing:
        devs = jax.devices()
        result["timing"] = []
        for D in args.dims:
            for ds in ([devs[0]], devs) if len(devs) > 1 else ([devs[0]],):
                r = time_steps(D, ds, args.timing_steps, args.timing_sites, 20)
                print(r, flush=True)
                result["timing"].append(r)
    result["baselines"] = baselines(args.n_final, times, args.n0)
    if not args.skip_train:
        result["train"] = train(args, times)
    result["peak_rss_mib"] = peak_rss_mib()
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
