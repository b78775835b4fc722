"""Benchmarks of the phi^4 HMC kernels (olrg_hpc.lattice): JAX leapfrog throughput against memory
bandwidth, and weak scaling of the numpy + MPI domain-decomposed HMC.

Measured in one run, each next to its baseline:

* memory bandwidth: best of ``--repeat`` ``np.copyto`` of a ``--bw-mib`` MiB float64 array (one thread,
  STREAM "copy" convention: 2 x size bytes per copy, write-allocate traffic not counted).
* JAX: a jitted ``hmc.leapfrog`` of ``n`` steps on one L x L field (tutorial action m2 = -4, lam = 8),
  L = 64 ... 1024; site updates per second = L^2 n / t (best of ``--repeat``, compile excluded). Bandwidth
  model: a fully fused leapfrog step reads phi and p and writes phi and p once, 4 x 8 = 32 bytes per site
  (neighbours from cache); the bandwidth-bound rate is ``bandwidth / 32 B`` and the achieved fraction is
  the measured rate over it. (XLA's un-fused drift + force/kick pair moves ~48 B/site; fields up to
  L = 1024, 8 MiB, fit in a 32 MiB L3, so fractions > 1 are possible there.)
* MPI weak scaling: ``mpiexec -n r python -m olrg_hpc.lattice.mpi_hmc`` with a ``--mpi-local`` ^2 block
  per rank (global 256x256, 512x256, 512x512 for r = 1, 2, 4), leapfrog, ``--mpi-n-traj`` trajectories
  of 10 steps; time per MD step (slowest rank), halo-exchange share of MD time (time inside Sendrecv,
  including waiting for a slower neighbour), efficiency t(1)/t(r).
  Ranks beyond the physical cores are oversubscribed (MPICH busy-polls), which the table flags.

Usage: ``python benchmarks/bench_hmc.py [--sizes 64 128 256 512 1024] [--out benchmarks/results/hmc.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BYTES_PER_SITE_STEP = 32  # fused leapfrog step: read phi, p; write phi, p (float64)


def measure_bandwidth(mib: int, repeat: int) -> dict[str, float]:
    """Single-thread copy bandwidth in bytes/s (STREAM copy convention)."""
    n = mib * 2**20 // 8
    src = np.ones(n)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return {"array_mib": mib, "copy_s": best, "bytes_per_s": 2 * src.nbytes / best}


def bench_jax_leapfrog(
    sizes: list[int], repeat: int, target_s: float, bandwidth: float
) -> list[dict[str, Any]]:
    import jax
    import jax.numpy as jnp

    from olrg_hpc.lattice import hmc
    from olrg_hpc.lattice.phi4 import Phi4Action

    act = Phi4Action(-4.0, 8.0)

    @jax.jit
    def run(phi: jax.Array, p: jax.Array, n: jax.Array) -> tuple[jax.Array, jax.Array]:
        return hmc.leapfrog(act, phi, p, 0.01, n)

    rows = []
    for L in sizes:
        key = jax.random.key(L)
        phi = 0.5 * jax.random.normal(key, (L, L), dtype=jnp.float64)
        p = jax.random.normal(jax.random.fold_in(key, 1), (L, L), dtype=jnp.float64)
        t0 = time.perf_counter()
        jax.block_until_ready(run(phi, p, 2))  # compile (n_steps is traced: one compile per L)
        compile_s = time.perf_counter() - t0
        # calibrate the step count to ~target_s
        n = 8
        while True:
            t0 = time.perf_counter()
            jax.block_until_ready(run(phi, p, n))
            dt = time.perf_counter() - t0
            if dt > 0.2 * target_s or n > 2**22:
                break
            n *= 4
        n = max(2, int(n * target_s / max(dt, 1e-6)))
        best = np.inf
        for _ in range(repeat):
            t0 = time.perf_counter()
            jax.block_until_ready(run(phi, p, n))
            best = min(best, time.perf_counter() - t0)
        rate = L * L * n / best
        bound = bandwidth / BYTES_PER_SITE_STEP
        rows.append(
            {
                "L": L,
                "n_steps": n,
                "seconds": best,
                "compile_s": compile_s,
                "site_updates_per_s": rate,
                "ns_per_site_step": 1e9 / rate,
                "bandwidth_bound_rate": bound,
                "fraction_of_bound": rate / bound,
                "field_mib": L * L * 8 / 2**20,
            }
        )
        print(
            f"  L={L:5d}  {rate / 1e6:9.1f} M site-steps/s  ({1e9 / rate:6.2f} ns)"
            f"  bound {bound / 1e6:8.1f} M/s  fraction {rate / bound:5.2f}  (n={n}, compile {compile_s:.1f} s)",
            flush=True,
        )
    return rows


def bench_mpi(ranks: list[int], local: int, n_traj: int, n_steps: int) -> list[dict[str, Any]]:
    from olrg_hpc.mpi import find_mpiexec

    exe = find_mpiexec()
    if exe is None:
        print("  no mpiexec found: MPI weak scaling skipped")
        return []
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    rows: list[dict[str, Any]] = []
    ncpu = os.cpu_count() or 1
    for r in ranks:
        dims = {1: (1, 1), 2: (2, 1), 4: (2, 2), 8: (4, 2), 16: (4, 4)}.get(r)
        if dims is None:
            print(f"  skipping {r} ranks (no square-ish grid)")
            continue
        shape = (local * dims[0], local * dims[1])
        cmd = [
            exe,
            "-n",
            str(r),
            sys.executable,
            "-m",
            "olrg_hpc.lattice.mpi_hmc",
            "--L",
            str(shape[0]),
            str(shape[1]),
            "--dims",
            str(dims[0]),
            str(dims[1]),
            "--m2",
            "-4",
            "--lam",
            "8",
            "--n-traj",
            str(n_traj),
            "--n-steps",
            str(n_steps),
            "--seed",
            "1",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
        if out.returncode != 0:
            print(f"  {r} ranks failed:\n{out.stderr[-2000:]}")
            continue
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        t = summary["timings"]
        md_steps = n_traj * n_steps
        step_s = t["md_s"] / md_steps
        row = {
            "ranks": r,
            "dims": summary["dims"],
            "global_shape": list(shape),
            "local_block": [local, local],
            "oversubscribed": r > ncpu,
            "md_step_s": step_s,
            "halo_share": t["halo_s"] / t["md_s"],
            "force_share": t["force_s"] / t["md_s"],
            "site_updates_per_s_per_rank": local * local / step_s,
            "site_updates_per_s_total": shape[0] * shape[1] / step_s,
            "total_s": t["total_s"],
            "acceptance": summary["acceptance"],
        }
        rows.append(row)
    if rows:
        t1 = next((row["md_step_s"] for row in rows if row["ranks"] == 1), rows[0]["md_step_s"])
        for row in rows:
            row["weak_efficiency"] = t1 / row["md_step_s"]
            print(
                f"  ranks={row['ranks']}  grid={row['dims']}  global={row['global_shape']}  "
                f"step {row['md_step_s'] * 1e3:8.2f} ms  halo {100 * row['halo_share']:5.1f} %  "
                f"{row['site_updates_per_s_total'] / 1e6:7.1f} M site-steps/s  efficiency "
                f"{row['weak_efficiency']:5.2f}{'  (oversubscribed)' if row['oversubscribed'] else ''}",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--target-s", type=float, default=0.5, help="approximate seconds per timed JAX call")
    ap.add_argument("--bw-mib", type=int, default=256, help="array size for the bandwidth copy")
    ap.add_argument("--mpi-ranks", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--mpi-local", type=int, default=256, help="local block edge per rank (weak scaling)")
    ap.add_argument("--mpi-n-traj", type=int, default=10)
    ap.add_argument("--mpi-n-steps", type=int, default=10)
    ap.add_argument("--out", default="benchmarks/results/hmc.json")
    args = ap.parse_args(argv)

    import jax

    from olrg_hpc.jaxsetup import enable_x64

    enable_x64()
    print(f"host {platform.node()}, {os.cpu_count()} CPUs, JAX {jax.__version__} on {jax.devices()[0]}")
    bw = measure_bandwidth(args.bw_mib, args.repeat)
    print(f"memory bandwidth (1 thread, numpy copy of {args.bw_mib} MiB): {bw['bytes_per_s'] / 1e9:.2f} GB/s")
    print(f"JAX leapfrog (float64, bandwidth model {BYTES_PER_SITE_STEP} B/site/step):")
    jax_rows = bench_jax_leapfrog(args.sizes, args.repeat, args.target_s, bw["bytes_per_s"])
    print(f"MPI weak scaling ({args.mpi_local}^2 sites per rank, numpy + mpi4py):")
    mpi_rows = (
        bench_mpi(args.mpi_ranks, args.mpi_local, args.mpi_n_traj, args.mpi_n_steps) if args.mpi_ranks else []
    )
    result = {
        "benchmark": "phi4_hmc",
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "jax_version": jax.__version__,
        "jax_device": str(jax.devices()[0]),
        "numpy_version": np.__version__,
        "bandwidth": bw,
        "bytes_per_site_step_model": BYTES_PER_SITE_STEP,
        "jax_leapfrog": jax_rows,
        "mpi_weak_scaling": mpi_rows,
        "load_average": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
