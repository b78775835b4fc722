"""Benchmark of the flow samplers' cost per step against plain HMC, in one process (olrg_hpc.flows.mcmc).

Issue #6 asks flow-MH or flow-HMC to beat HMC in cost per independent chi2 sample, ``seconds per step x
2 tau_int(M^2)``. This script measures the first factor for every sampler on the same field; ``tau_int`` comes
from the study (``experiments/flow_line/config.yaml``). A flow's cost does not depend on its training, so the
flow here is freshly initialised, with that study's architecture (12 Z2 couplings, hidden [12], kernel 3, a
free-field layer first; float32 as in the study; ``--pointwise n`` adds site-wise odd maps).

* flow-MH: ``flow_imh`` with ``--n-chains`` chains for ``--imh-steps`` steps, with proposals drawn ``block``
  steps per flow call for each ``--blocks`` value (``block = 1`` is the step-by-step algorithm);
  seconds per proposal and the speed-up over ``block = 1``.
* HMC: ``run_chain`` (float64) with ``--n-chains`` chains, ``--hmc-traj`` trajectories of length 1 with the
  leapfrog step count tuned to acceptance >= 0.8 (as the study does); seconds per trajectory per chain.
  HMC is timed a second time with ``--hmc-wide`` chains (default 256): more chains per call make its
  trajectories cheaper too, so ``proposal_over_wide_trajectory`` compares the two at equal batch width.
* ``proposal_over_trajectory``: seconds per flow-MH proposal (best block) over seconds per HMC trajectory
  (``--n-chains`` chains, as in the study). flow-MH beats HMC when its ``tau_int(M^2)`` is below
  ``tau_int_HMC / proposal_over_trajectory`` (``break_even_tau`` for ``--hmc-tau`` when given).

Every sampler runs once to compile and is then timed ``--repeats`` times; the median is kept (the machine is
noisy: single runs scatter by about 15 %).

Usage: ``python benchmarks/bench_imh.py [--L 16 --beta 0.634] [--blocks 1 4 16 64] [--hmc-tau 12.4]
[--out benchmarks/results/imh.json]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from olrg_hpc.flows.mcmc import flow_imh  # noqa: E402
from olrg_hpc.flows.model import GaussianPrior, init_flow, make_flow  # noqa: E402
from olrg_hpc.jaxsetup import enable_x64  # noqa: E402
from olrg_hpc.lattice import hmc  # noqa: E402
from olrg_hpc.lattice.ensemble import action_for  # noqa: E402

enable_x64()


def _m(phi: jax.Array) -> jax.Array:
    return jnp.mean(phi, axis=(-2, -1))


def _timed(fn: Any, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after a first one that compiles (the machine is noisy: +-15 %)."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--L", type=int, default=16)
    ap.add_argument("--beta", type=float, default=0.634)
    ap.add_argument("--lam", type=float, default=0.5)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--hidden", type=int, nargs="*", default=[12])
    ap.add_argument("--pointwise", type=int, default=0, help="a site-wise odd map before every n-th coupling (0: none)")
    ap.add_argument("--n-chains", type=int, default=16)
    ap.add_argument("--imh-steps", type=int, default=1024)
    ap.add_argument("--blocks", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--hmc-traj", type=int, default=500)
    ap.add_argument("--hmc-wide", type=int, default=256, help="HMC chains of the second, wide HMC timing")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per sampler (the median is kept)")
    ap.add_argument("--hmc-tau", type=float, default=None, help="HMC's tau_int(M^2) at this point (for break-even)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "imh.json"))
    args = ap.parse_args(argv)
    if min(*args.blocks, args.repeats, args.n_chains, args.hmc_wide, args.imh_steps, args.hmc_traj) < 1:
        ap.error("--blocks, --repeats, --n-chains, --hmc-wide, --imh-steps and --hmc-traj must be positive")

    load_start = os.getloadavg()
    L, nc = args.L, args.n_chains
    action, _ = action_for({"beta": args.beta, "lam": args.lam})
    spec = {"kind": "z2", "n_layers": args.layers, "hidden": args.hidden, "kernel_size": 3, "free_field": True,
            "pointwise": args.pointwise}
    flow = make_flow(spec)
    params = init_flow(flow, 0, (L, L), jnp.float32)
    prior = GaussianPrior((L, L), "float32")

    imh = []
    for b in args.blocks:
        s = _timed(lambda b=b: flow_imh(flow, params, prior, action, jax.random.key(1), args.imh_steps, nc,
                                        measure=_m, block=b).acceptance, args.repeats)
        imh.append({"block": b, "proposals_per_call": b * nc, "seconds": s,
                    "us_per_proposal": 1e6 * s / (args.imh_steps * nc)})
        print(f"flow-MH block {b:4d} ({b * nc:5d} per call): {imh[-1]['us_per_proposal']:8.1f} us/proposal", flush=True)
    base = next((r for r in imh if r["block"] == 1), None)
    for r in imh:
        r["speedup_vs_block1"] = base["us_per_proposal"] / r["us_per_proposal"] if base else None

    key = jax.random.key(2, impl="rbg")
    phi0 = 0.5 * jax.random.normal(key, (nc, L, L), jnp.float64)
    n_steps, phi0, _ = hmc.tune_n_steps(action, phi0, jax.random.fold_in(key, 1))
    hmc_us = {}
    for width in (nc, args.hmc_wide):  # the study's chains, then a batch as wide as flow-MH's flow calls
        start = jnp.tile(phi0, (-(-width // nc), 1, 1))[:width]
        s = _timed(lambda start=start: hmc.run_chain(action, start, args.hmc_traj, jax.random.fold_in(key, 2),
                                                     n_steps=n_steps, measure=_m).acceptance, args.repeats)
        hmc_us[width] = 1e6 * s / (args.hmc_traj * width)
        print(f"HMC ({n_steps} leapfrog steps, {width} chains): {hmc_us[width]:8.1f} us/trajectory", flush=True)
    best = min(imh, key=lambda r: r["us_per_proposal"])
    ratio = best["us_per_proposal"] / hmc_us[nc]
    out: dict[str, Any] = {
        "benchmark": "imh",
        "jax_version": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "load_average_start": load_start,
        "platform": platform.platform(),
        "point": {"L": L, "beta": args.beta, "lam": args.lam},
        "flow": spec,
        "n_chains": nc,
        "repeats": args.repeats,
        "imh": imh,
        "hmc": {"n_steps": n_steps, "trajectories": args.hmc_traj, "us_per_trajectory": hmc_us[nc],
                "wide_chains": args.hmc_wide, "wide_us_per_trajectory": hmc_us[args.hmc_wide]},
        "best_block": best["block"],
        "proposal_over_trajectory": ratio,
        "proposal_over_wide_trajectory": best["us_per_proposal"] / hmc_us[args.hmc_wide],
        "hmc_tau": args.hmc_tau,
        "break_even_tau": args.hmc_tau / ratio if args.hmc_tau else None,
        "load_average_end": os.getloadavg(),
    }
    print(f"a flow proposal (block {best['block']}) costs {ratio:.1f} HMC trajectories"
          + (f"; flow-MH breaks even below tau_int {out['break_even_tau']:.2f}" if args.hmc_tau else ""))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
