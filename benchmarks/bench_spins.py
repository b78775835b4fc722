"""Benchmarks of olrg_hpc.spins: free-fermion quench, sparse ED ground state and dynamics (one core).

Measured, each next to a baseline taken in the same process:

* free fermions: ``<Z_1 Z_2>(t)`` on 200 times for N = 1000 (and 4000 with ``--full``), cold (first call)
  and warm (best of ``--repeat``); baseline: one ``(200 x N) @ (N x N)`` GEMM, the kernel it is made of.
* ED, TFIM at h = J = 1, N = 16, 18 (and 20 with ``--full``), each size in a fresh spawned process so that
  its peak RSS (``ru_maxrss``) is its own: Hamiltonian build, Lanczos ground state, ``--n-times`` times of
  ``expm_multiply`` dynamics with ``<Z_1 Z_2>``, ``<X_1>`` and ``<H>``; baseline: one complex sparse
  mat-vec of ``-iH`` (reported as "equivalent mat-vecs"). Accuracy against free fermions is reported too.

Usage: ``python benchmarks/bench_spins.py [--full] [--out benchmarks/results/spins.json]``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy is imported

import argparse  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from olrg_hpc.spins import ed, freefermion, models  # noqa: E402


def _rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _best_of(fn, repeat: int) -> tuple[float, object]:
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_free_fermion(n: int, n_times: int, t_max: float, repeat: int) -> dict:
    times = np.linspace(t_max / n_times, t_max, n_times)

    def run():
        return freefermion.tfim_quench(n, 1.0, 1.0, times, initial="up", observables=("zz",), sites=[0])

    t0 = time.perf_counter()
    run()
    cold = time.perf_counter() - t0
    warm, res = _best_of(run, repeat)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n_times, n)), rng.standard_normal((n, n))
    gemm, _ = _best_of(lambda: a @ b, repeat)
    return {
        "n": n,
        "n_times": n_times,
        "t_max": t_max,
        "seconds_cold": cold,
        "seconds_warm": warm,
        "baseline_gemm_seconds": gemm,
        "ratio_to_gemm": warm / gemm,
        "c12_last": float(res["zz"][-1, 0]),
    }


def _ed_child(n: int, n_times: int, t_max: float, repeat: int, queue) -> None:
    out: dict = {"n": n, "dim": 2**n, "rss_start_mib": _rss_mib()}
    model = models.tfim(n, 1.0, 1.0)
    t0 = time.perf_counter()
    H = ed.sparse_hamiltonian(model)
    out["build_seconds"] = time.perf_counter() - t0
    out["nnz"] = int(H.nnz)
    out["hamiltonian_mib"] = (H.data.nbytes + H.indices.nbytes + H.indptr.nbytes) / 2**20
    out["state_mib"] = 16 * 2**n / 2**20
    # baseline: one mat-vec of -iH on a complex vector, as expm_multiply applies it
    A = ed.minus_i_h(H)
    v = np.random.default_rng(1).standard_normal(2**n) + 0j
    out["matvec_seconds"], _ = _best_of(lambda: A.matvec(v), max(repeat, 5))
    t0 = time.perf_counter()
    w, _ = ed.ground_state(H, k=1)
    out["ground_state_seconds"] = time.perf_counter() - t0
    out["ground_state_matvec_equiv"] = out["ground_state_seconds"] / out["matvec_seconds"]
    out["e0"] = float(w[0])
    out["e0_error_vs_free_fermion"] = abs(float(w[0]) - freefermion.tfim_ground_energy(n, 1.0, 1.0))
    times = np.linspace(0.0, t_max, n_times)
    obs = {
        "zz": ed.two_point(models.Z, 0, models.Z, 1, n).diagonal(),
        "x": ed.site_op(models.X, 0, n),
        "energy": H,
    }
    t0 = time.perf_counter()
    res = ed.evolve_expectations(H, ed.zero_state(n), obs, times)
    out["dynamics_seconds"] = time.perf_counter() - t0
    out["dynamics_n_times"] = n_times
    out["dynamics_t_max"] = t_max
    out["dynamics_matvec_equiv"] = out["dynamics_seconds"] / out["matvec_seconds"]
    ff = freefermion.tfim_quench(n, 1.0, 1.0, times, initial="up", sites=[0])
    out["dynamics_max_error_vs_free_fermion"] = float(
        max(np.abs(res["zz"] - ff["zz"][:, 0]).max(), np.abs(res["x"] - ff["x"][:, 0]).max())
    )
    out["energy_drift"] = float(np.abs(res["energy"] - res["energy"][0]).max())
    out["peak_rss_mib"] = _rss_mib()
    queue.put(out)


def bench_ed(n: int, n_times: int, t_max: float, repeat: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_ed_child, args=(n, n_times, t_max, repeat, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "spins.json"))
    ap.add_argument("--full", action="store_true", help="also ED at N = 20 and free fermions at N = 4000")
    ap.add_argument("--ed-sizes", type=int, nargs="*", default=None, help="override the ED sizes")
    ap.add_argument("--n-times", type=int, default=100, help="ED dynamics: number of times")
    ap.add_argument("--t-max", type=float, default=5.0, help="ED dynamics: final time")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    report: dict = {
        "meta": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "threads": 1,
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "free_fermion": [],
        "ed": [],
    }
    for n in (1000, 4000) if args.full else (1000,):
        r = bench_free_fermion(n, 200, 10.0, args.repeat)
        report["free_fermion"].append(r)
        print(
            f"free fermions N={n}: <Z1Z2>(t) on 200 times: cold {r['seconds_cold']:.3f} s, "
            f"warm {r['seconds_warm']:.3f} s (= {r['ratio_to_gemm']:.1f} GEMMs of 200x{n}x{n})",
            flush=True,
        )
    sizes = args.ed_sizes if args.ed_sizes is not None else ([16, 18, 20] if args.full else [16, 18])
    for n in sizes:
        r = bench_ed(n, args.n_times, args.t_max, args.repeat)
        report["ed"].append(r)
        print(
            f"ED N={n}: build {r['build_seconds']:.2f} s, H {r['hamiltonian_mib']:.0f} MiB, "
            f"mat-vec {1e3 * r['matvec_seconds']:.1f} ms, ground state {r['ground_state_seconds']:.2f} s "
            f"({r['ground_state_matvec_equiv']:.0f} mat-vecs), "
            f"dynamics {args.n_times} times to t={args.t_max}: "
            f"{r['dynamics_seconds']:.2f} s ({r['dynamics_matvec_equiv']:.0f} mat-vecs), "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB, "
            f"max |ED - FF| {r['dynamics_max_error_vs_free_fermion']:.1e}",
            flush=True,
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
