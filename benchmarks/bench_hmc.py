"""Benchmarks of the phi^4 HMC kernels (olrg_hpc.lattice): JAX leapfrog throughput against memory
bandwidth, and weak scaling of the numpy + MPI domain-decomposed HMC.

Measured in one run, each next to its baseline:

* memory bandwidth: best of ``--repeat`` ``np.copyto`` of a ``--bw-mib`` MiB float64 array (one thread,
  STREAM "copy" convention: 2 x size bytes per copy, write-allocate traffic not counted).
* JAX: a jitted ``hmc.leapfrog`` of ``n`` steps on one L x L field (tutorial action m2 = -4, lam = 8),
  L = 64 ... 1024; site updates per second = L^2 n / t (best of ``--repeat``, compile excluded). Bandwidth
  model: a fully fused leapfrog step reads phi and p and writes phi and p once, 4 x 8 = 32 bytes per site
  (neighbours from cache); the bandwidth-bound rate is ``bandwidth / 32 B`` and the achieved fraction is
  the measured rate over it. (XLA on CPU runs a step as two loop fusions, drift and force + kick, ~48 B/site;
  for L >= ``hmc.PAD_SHIFT_MIN_EXTENT`` the neighbour shifts are pad/select so that they fuse, before they
  were ``jnp.roll`` whose minor-axis concatenates were materialised, ~80 B/site. Fields up to L = 1024,
  8 MiB, fit in a 32 MiB L3, so fractions > 1 are possible there.)
* MPI program against the single-process JAX kernel (``--mpi-*`` flags), one XLA thread per process: for
  every ``--mpi-local`` block edge l (sites per rank l^2) and every rank count r in ``--mpi-ranks`` (grids
  1x1, 2x1, 2x2; global lattice l*dims), with every transport in ``--mpi-transports``:
  (a) *kernel*: the jitted ``hmc.leapfrog`` of ``--mpi-n-steps`` steps on the rank's block, halos fetched
  inside the program (what ``mpi_hmc`` runs), per-rank site-steps/s = l^2 n / t (t the slowest rank,
  best of ``--mpi-calls``), against the same ``hmc.leapfrog`` on one periodic l x l field in one process;
  (b) *program*: ``mpi_hmc.run_mpi_hmc`` for ``--mpi-n-traj`` trajectories (momenta, exchanges, global sums,
  Metropolis; compile excluded), per-rank site-steps/s = l^2 n n_traj / run_s, against ``hmc.run_chain`` of
  one l x l chain (same trajectories, compile excluded); couplings ``MPI_POINT`` (m2 = 1, lam = 0.5), where
  trajectories stay finite. Ratios (MPI per rank / single process) and the
  weak-scaling efficiency t(1 rank) / t(r ranks) are taken within each of ``--mpi-repeats`` interleaved
  rounds (every configuration once per round) and reported as median, min and max over rounds. Ranks beyond
  the physical cores are oversubscribed (MPICH busy-polls), which the table flags; the load average before
  and after the section is recorded.
* HMC cost per effectively independent sample of chi2 versus L at fixed physics (``--cost-*`` flags):
  the jitted batched HMC (:func:`olrg_hpc.lattice.hmc.run_chain`, ``--cost-chains`` independent chains)
  along the Albandea line lam = 0.5 (beta/lambda convention): L = 8, beta = 0.576 and L = 16,
  beta = 0.634 (the authors' coarse and fine points, docs/conventions.md section 2), L = 32, beta = 0.660 and L = 64,
  beta = 0.674 (matched here to the xi_2nd/L = 0.247 of L = 16; the naive ``beta_c - a / L`` line through the
  first two points gives 0.663 at L = 32, where xi/L = 0.271(7)), other L extrapolated (:func:`line_beta`) or given with
  ``--cost-betas``. xi_2nd/L and the Binder cumulant are printed to check how fixed the physics
  is. Per L: the leapfrog (or Omelyan) step count at trajectory length 1 is tuned on the
  thermalised chains to the smallest one with acceptance >= ``--cost-acc-min`` (0.8; doubling, then
  bisection, one block of all chains per trial); then
  ``--cost-traj`` trajectories per chain are run in blocks of ``--cost-block`` (one compile per L,
  excluded from the timings) measuring every trajectory. tau_int of chi2 (the history of V M^2, M in the
  field of the point) by the Gamma method (pyerrors, chains as replicas, S = 1.5); seconds per
  trajectory = the best block wall time / block length (all chains; the spread median - best is its
  uncertainty, large on a shared machine), and per chain trajectory
  (divided by the number of chains: the machine time one chain's trajectory costs in the batch);
  cost per effectively independent chi2 sample = ``2 tau_int x seconds per chain trajectory``, with
  the errors of tau_int and of the block timings in quadrature. With >= 2 L a weighted fit
  ``tau_int ~ L^z`` (and ``cost ~ L^z_cost``).

* Replica analysis (``--analysis-seeds N``): tau_int and errors of many-chain ensembles analysed with each
  chain's fluctuations about its own mean (pyerrors' replicas as they are) and about the mean over all chains
  (``olrg_hpc.lattice.autocorr``, Wolff), on the same data: AR(1) at tau_int 19.5 as 128 x 3000 and
  4 x 96000 over N seeds (with the exact error of the mean), and an L = 16, beta = 0.634 HMC ensemble
  (``--analysis-hmc CHAINS TRAJ THERM``). The cost study reports both tau_int(chi2) as well.

Usage: ``python benchmarks/bench_hmc.py [--sizes 64 128 256 512 1024] [--out benchmarks/results/hmc.json]``;
a section is skipped when its list is empty (``--sizes``, ``--mpi-ranks``, ``--cost-sizes`` with no values),
e.g. only the cost study: ``python benchmarks/bench_hmc.py --sizes --mpi-ranks``, at larger L:
``--cost-sizes 8 16 32 64 --cost-traj 4000``.
"""

from __future__ import annotations

import argparse
import json
import math
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


_GRIDS = {1: (1, 1), 2: (2, 1), 4: (2, 2), 8: (4, 2), 16: (4, 4)}
MPI_POINT = {"m2": 1.0, "lam": 0.5}  # the couplings of the MPI section (tutorial convention)
_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One measurement of the MPI section, in a fresh process (under mpiexec when ``spec["ranks"]`` is set):
    kernel seconds per call (slowest rank) and program seconds of ``n_traj`` trajectories."""
    import jax
    import jax.numpy as jnp

    from olrg_hpc.jaxsetup import enable_x64
    from olrg_hpc.lattice import hmc, mpi_hmc
    from olrg_hpc.lattice.phi4 import Phi4Action

    enable_x64()
    # a weakly coupled point where trajectories of step 0.1 stay finite from a hot start at any lattice size
    # (at the tutorial point m2 = -4, lam = 8 they diverge at L >= 256, and inf/NaN arithmetic is not the
    # workload); the work per site does not depend on the couplings
    act = Phi4Action(MPI_POINT["m2"], MPI_POINT["lam"])
    local, n_steps, n_traj = spec["local"], spec["n_steps"], spec["n_traj"]
    key = jax.random.key(1)
    out: dict[str, Any] = {}
    if spec.get("ranks"):
        from mpi4py import MPI

        from olrg_hpc.lattice.halo import Decomposition

        comm = MPI.COMM_WORLD
        dims = _GRIDS[comm.Get_size()]
        shape = (local * dims[0], local * dims[1])
        dec = Decomposition(comm, shape, dims, spec["transport"])
        depth = mpi_hmc.halo_depth(dec, hmc.force_evaluations(n_steps)) if spec.get("halo", "trajectory") == \
            "trajectory" else 0
        md = jax.jit(mpi_hmc.molecular_dynamics(dec, act, 0.01 * n_steps, n_steps, "leapfrog", depth))
        phi = 0.5 * jax.random.normal(jax.random.fold_in(key, dec.rank), (local, local), dtype=jnp.float64)
        mom = jax.random.normal(jax.random.fold_in(key, 1000 + dec.rank), (local, local), dtype=jnp.float64)
        jax.block_until_ready(md(phi, mom))
        times = []
        for _ in range(spec["calls"]):
            dec.cart.Barrier()
            t0 = time.perf_counter()
            jax.block_until_ready(md(phi, mom))
            times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
        dec.free()
        res = mpi_hmc.run_mpi_hmc({"L": list(shape), "dims": list(dims), **MPI_POINT, "seed": 1,
                                   "n_traj": n_traj, "n_steps": n_steps, "transport": spec["transport"],
                                   "halo": spec.get("halo", "trajectory")}, comm)
        out.update(kernel_s=min(times), program_s=res["timings"]["run_s"], transport=res["transport"],
                   dims=list(dims), acceptance=res["acceptance"], halo_depth=res["halo_depth"])
        if comm.Get_rank() != 0:
            return {}
    else:
        def md(phi: Any, p: Any) -> Any:  # the work of one trajectory's molecular dynamics, as the ranks do it
            phi1, p1 = hmc.leapfrog(act, phi, p, 0.01, n_steps)
            return act.action(phi), act.action(phi1), phi1, p1

        md = jax.jit(md)
        phi = 0.5 * jax.random.normal(key, (local, local), dtype=jnp.float64)
        mom = jax.random.normal(jax.random.fold_in(key, 1), (local, local), dtype=jnp.float64)
        jax.block_until_ready(md(phi, mom))
        times = []
        for _ in range(spec["calls"]):
            t0 = time.perf_counter()
            jax.block_until_ready(md(phi, mom))
            times.append(time.perf_counter() - t0)
        kw = {"n_steps": n_steps, "measure": _no_measure}
        jax.block_until_ready(hmc.run_chain(act, phi, n_traj, jax.random.key(2), **kw))  # compile
        t0 = time.perf_counter()
        jax.block_until_ready(hmc.run_chain(act, phi, n_traj, jax.random.key(3), **kw))
        out.update(kernel_s=min(times), program_s=time.perf_counter() - t0)
    return out


def _no_measure(phi: Any) -> Any:
    import jax.numpy as jnp

    return jnp.zeros((), phi.dtype)


def _run_worker(spec: dict[str, Any]) -> dict[str, Any] | None:
    from olrg_hpc.mpi import mpi_launcher

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "XLA_FLAGS": _ONE_THREAD}
    prefix = mpi_launcher(spec["ranks"], use_srun=False) if spec.get("ranks") else []
    cmd = [*prefix, sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=1800)
    if out.returncode != 0:
        print(f"  worker {spec} failed:\n{out.stderr[-2000:]}", flush=True)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _spread(x: list[float]) -> dict[str, float]:
    return {"median": float(np.median(x)), "min": float(np.min(x)), "max": float(np.max(x))}


def bench_mpi(ranks: list[int], locals_: list[int], transports: list[str], n_steps: int, n_traj: int,
              calls: int, repeats: int, halos: tuple[str, ...] = ("trajectory",)) -> dict[str, Any]:
    """The MPI section (module docstring): interleaved rounds, per-round ratios and efficiencies."""
    from olrg_hpc.mpi import find_mpiexec

    if find_mpiexec() is None:
        print("  no mpiexec found: MPI section skipped")
        return {}
    ranks = [r for r in ranks if r in _GRIDS]
    ncpu = os.cpu_count() or 1
    raw: dict[str, list[dict[str, Any]]] = {}
    load_before = os.getloadavg()
    for rnd in range(repeats):
        for local in locals_:
            base = {"local": local, "n_steps": n_steps, "n_traj": n_traj, "calls": calls}
            configs = [("single", base), *[(f"{t}-{h}-r{r}", {**base, "ranks": r, "transport": t, "halo": h})
                                           for t in transports for h in halos for r in ranks]]
            for name, spec in configs:
                got = _run_worker(spec)
                if got is not None:
                    raw.setdefault(f"l{local}-{name}", []).append({"round": rnd, **got})
        print(f"  round {rnd + 1}/{repeats} done (load {os.getloadavg()[0]:.1f})", flush=True)
    rows = []
    for local in locals_:
        single = {g["round"]: g for g in raw.get(f"l{local}-single", [])}
        for t, h in [(t, h) for t in transports for h in halos]:
            one = {g["round"]: g for g in raw.get(f"l{local}-{t}-{h}-r1", [])}
            for r in ranks:
                got = {g["round"]: g for g in raw.get(f"l{local}-{t}-{h}-r{r}", [])}
                rounds = sorted(set(got) & set(single))
                if not rounds:
                    continue
                sites = local * local
                row: dict[str, Any] = {
                    "local_block": [local, local], "ranks": r, "dims": got[rounds[0]]["dims"],
                    "transport": got[rounds[0]]["transport"], "halo": h,
                    "halo_depth": got[rounds[0]]["halo_depth"], "oversubscribed": r > ncpu, "rounds": len(rounds),
                    "kernel_site_steps_per_s_per_rank": _spread([sites * n_steps / got[i]["kernel_s"] for i in rounds]),
                    "single_kernel_site_steps_per_s": _spread(
                        [sites * n_steps / single[i]["kernel_s"] for i in rounds]),
                    "kernel_ratio": _spread([single[i]["kernel_s"] / got[i]["kernel_s"] for i in rounds]),
                    "program_site_steps_per_s_per_rank": _spread(
                        [sites * n_steps * n_traj / got[i]["program_s"] for i in rounds]),
                    "single_program_site_steps_per_s": _spread(
                        [sites * n_steps * n_traj / single[i]["program_s"] for i in rounds]),
                    "program_ratio": _spread([single[i]["program_s"] / got[i]["program_s"] for i in rounds]),
                }
                both = [i for i in rounds if i in one]
                if both:
                    row["weak_efficiency_kernel"] = _spread([one[i]["kernel_s"] / got[i]["kernel_s"] for i in both])
                    row["weak_efficiency_program"] = _spread(
                        [one[i]["program_s"] / got[i]["program_s"] for i in both])
                rows.append(row)
                eff = row.get("weak_efficiency_kernel", {}).get("median", float("nan"))
                print(f"  l={local:4d} {row['transport']:8s} halo {h:10s} (depth {row['halo_depth']:2d}) r={r} "
                      f"{row['dims']}: kernel "
                      f"{row['kernel_site_steps_per_s_per_rank']['median'] / 1e6:7.1f} M/s per rank "
                      f"(x{row['kernel_ratio']['median']:.2f} single), program "
                      f"{row['program_site_steps_per_s_per_rank']['median'] / 1e6:7.1f} M/s "
                      f"(x{row['program_ratio']['median']:.2f}), weak efficiency {eff:.2f}"
                      f"{'  (oversubscribed)' if r > ncpu else ''}", flush=True)
    return {"rows": rows, "raw": raw, "n_steps": n_steps, "n_traj": n_traj, "calls": calls, "repeats": repeats,
            "point": MPI_POINT, "xla_flags": _ONE_THREAD, "load_before": load_before, "load_after": os.getloadavg()}


# ------------------------------------------------------------------------------------------ replica analysis
def per_chain_mean_analysis(series: np.ndarray, S: float = 1.5) -> tuple[float, float, float]:
    """``(tau_int, dtau_int, error of the mean)`` of ``(n, chains)`` histories with pyerrors' replicas as they
    are, each chain's fluctuations about its own mean: the analysis before ``autocorr.to_obs`` re-centred them
    on the mean over all chains (kept here to measure what that changed)."""
    from olrg_hpc.lattice.autocorr import pe  # pyerrors, imported with its deprecation warnings silenced

    obs = pe.Obs([np.ascontiguousarray(series[:, r]) for r in range(series.shape[1])],
                 [f"ens|r{r}" for r in range(series.shape[1])])
    obs.gamma_method(S=S)
    return float(obs.e_tauint["ens"]), float(obs.e_dtauint["ens"]), float(obs.dvalue)


def bench_replica_analysis(seeds: int, hmc_chains: int, hmc_traj: int, hmc_therm: int) -> dict[str, Any]:
    """tau_int and errors before (:func:`per_chain_mean_analysis`) and after (``olrg_hpc.lattice.autocorr``) on
    the same data: AR(1) at rho = 0.95 (tau_int 19.5) as 128 x 3000 and 4 x 96000, averaged over ``seeds``
    seeds, with the exact error of the mean; and an HMC ensemble at L = 16, beta = 0.634, lam = 0.5 (leapfrog,
    10 steps, tau = 1): tau_int(M^2) and the errors of chi2 = V <M^2> and the Binder cumulant."""
    import jax
    import jax.numpy as jnp
    from scipy.signal import lfilter

    from olrg_hpc.lattice import autocorr, hmc
    from olrg_hpc.lattice.autocorr import pe
    from olrg_hpc.lattice.phi4 import Phi4Action

    out: dict[str, Any] = {"ar1": []}
    rho = 0.95
    c0 = 1 / (1 - rho**2)
    for chains, n in ((128, 3000), (4, 96_000)):
        rows = []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            e = rng.normal(size=(n, chains))
            e[0] /= np.sqrt(1 - rho**2)
            x = lfilter([1.0], [1.0, -rho], e, axis=0)
            tau_b, _, err_b = per_chain_mean_analysis(x)
            tau_a, _ = autocorr.tau_int(x)
            err_a = autocorr.mean_error(x)[1]
            rows.append((tau_b, err_b, tau_a, err_a))
        r = np.mean(rows, axis=0)
        t = np.arange(1, n)
        exact_err = float(np.sqrt(c0 / n * (1 + 2 * np.sum((1 - t / n) * rho**t)) / chains))
        out["ar1"].append({"chains": chains, "length": n, "seeds": seeds, "tau_int_exact": (1 + rho) / (2 * (1 - rho)),
                           "error_exact": exact_err, "tau_int_before": r[0], "error_before": r[1],
                           "tau_int_after": r[2], "error_after": r[3]})
        print(f"  AR(1) {chains} x {n}: tau_int {r[0]:.2f} -> {r[2]:.2f} (exact 19.5), error {r[1]:.5f} -> {r[3]:.5f}"
              f" (exact {exact_err:.5f})", flush=True)
    if hmc_chains:
        L, beta, lam = 16, 0.634, 0.5
        action, c = Phi4Action.from_beta_lambda(beta, lam)
        key = jax.random.key(7, impl="rbg")
        phi = 0.5 * jax.random.normal(jax.random.fold_in(key, 0), (hmc_chains, L, L), dtype=jnp.float64)
        t0 = time.perf_counter()
        res = hmc.run_chain(action, phi, hmc_traj, jax.random.fold_in(key, 1), n_steps=10, n_therm=hmc_therm,
                            measure=_cost_measure)
        M = c * np.asarray(res.measurements[0])  # (n_traj, chains), in the beta/lambda field
        run_s = time.perf_counter() - t0
        V = L * L
        chi2_hist = V * M**2
        tau_b, _, err_b = per_chain_mean_analysis(chi2_hist)
        tau_a, dtau_a = autocorr.tau_int(chi2_hist)
        chi2, err_a, _ = autocorr.mean_error(chi2_hist)
        cols = lambda a: [np.ascontiguousarray(a[:, r]) for r in range(a.shape[1])]  # noqa: E731
        names = [f"ens|r{r}" for r in range(hmc_chains)]
        ub = (lambda m4, m2: 1.0 - m4 / (3.0 * m2**2))(pe.Obs(cols(M**4), names), pe.Obs(cols(M**2), names))
        ub.gamma_method(S=autocorr.DEFAULT_S)
        u, du = autocorr.derived(lambda m4, m2: 1.0 - m4 / (3.0 * m2**2), M**4, M**2)
        out["hmc"] = {"L": L, "beta": beta, "lam": lam, "chains": hmc_chains, "trajectories": hmc_traj,
                      "therm": hmc_therm, "n_steps": 10, "acceptance": float(res.acceptance), "seconds": run_s,
                      "chi2": chi2, "tau_int_M2_before": tau_b, "tau_int_M2_after": tau_a,
                      "tau_int_M2_after_err": dtau_a, "chi2_err_before": err_b, "chi2_err_after": err_a,
                      "binder": u, "binder_err_before": float(ub.dvalue), "binder_err_after": du}
        print(f"  HMC L = 16, beta = 0.634, {hmc_chains} x {hmc_traj}: tau_int(M^2) {tau_b:.2f} -> {tau_a:.2f}"
              f"({dtau_a:.2f}), chi2 {chi2:.3f} error {err_b:.4f} -> {err_a:.4f}, Binder error {ub.dvalue:.5f} -> "
              f"{du:.5f} (acceptance {float(res.acceptance):.2f}, {run_s:.0f} s)", flush=True)
    return out


# ------------------------------------------------------------------------------------------ cost vs L
#: the constant-xi/L line at lam = 0.5: Albandea et al.'s coarse/fine points (L = 8, 16), L = 32 matched to
#: xi_2nd/L = 0.247(3) of L = 16 by a scan here (beta = 0.655, 0.658, 0.661, 0.663 -> xi/L = 0.222, 0.219,
#: 0.255, 0.271, each +- 0.007; 64 chains x 1000-2000 trajectories), L = 64 by a scan (beta = 0.672, 0.674, 0.676,
#: 0.678 -> xi/L = 0.219, 0.245, 0.288, 0.320, each +- 0.008-0.010; 64 chains x 4000 trajectories)
LINE_BETAS = {8: 0.576, 16: 0.634, 32: 0.660, 64: 0.674}
# beta_c - A L^-y through the three largest tabulated L (y ~ 1/nu, with corrections)
_L1, _L2, _L3 = sorted(LINE_BETAS)[-3:]
_LINE_Y = math.log2((LINE_BETAS[_L2] - LINE_BETAS[_L1]) / (LINE_BETAS[_L3] - LINE_BETAS[_L2]))
_LINE_A = (LINE_BETAS[_L2] - LINE_BETAS[_L1]) / (float(_L1) ** -_LINE_Y - float(_L2) ** -_LINE_Y)
LINE_BETA_C = LINE_BETAS[_L2] + _LINE_A * float(_L2) ** -_LINE_Y


def line_beta(L: int) -> float:
    """beta on the constant-xi/L line at lam = 0.5: the tabulated points, else the extrapolation
    ``beta_c - A L^-y`` through the three largest (y ~ 0.89, beta_c ~ 0.690; L = 80 -> 0.677, the authors' HMC
    point), rounded to 3 decimals. Unverified beyond L = 64: check the printed xi/L."""
    return LINE_BETAS.get(L, round(LINE_BETA_C - _LINE_A * float(L) ** -_LINE_Y, 3))


def _cost_measure(phi: Any) -> Any:
    """Per configuration (tutorial field): M and G~(p_min) = |sum_x phi_x e^{-i p.x}|^2 / V averaged over
    the two directions, p_min = 2 pi / L (for xi_2nd)."""
    import jax.numpy as jnp

    L = phi.shape[-1]
    V = phi.shape[-1] * phi.shape[-2]
    ph = jnp.exp(-2j * jnp.pi * jnp.arange(L) / L)
    gp = 0.0
    for ax in (-1, -2):
        proj = jnp.sum(phi, axis=ax)  # sums over one direction: a function of the other coordinate
        gp = gp + 0.5 * jnp.abs(proj @ ph) ** 2 / V
    return jnp.mean(phi, axis=(-2, -1)), gp


def _fit_power(L: np.ndarray, y: np.ndarray, dy: np.ndarray) -> dict[str, float]:
    """Weighted least squares ``ln y = z ln L + c`` (weights from ``dy / y``): z, its error, chi2/dof."""
    x, t, s = np.log(L), np.log(y), np.maximum(dy / y, 1e-12)
    w = 1.0 / s**2
    A = np.stack([x, np.ones_like(x)], axis=1)
    cov = np.linalg.inv(A.T @ (A * w[:, None]))
    z, c = cov @ (A.T @ (w * t))
    dof = len(L) - 2
    chi2 = float(np.sum(w * (t - (z * x + c)) ** 2))
    return {"z": float(z), "z_err": float(np.sqrt(cov[0, 0])), "chi2_per_dof": chi2 / dof if dof > 0 else None,
            "n_points": int(len(L))}


def _cost_point(L: int, beta: float, lam: float, n_chains: int, n_therm: int, n_traj: int, block: int,
                integrator: str, acc_min: float, seed: int) -> dict[str, Any]:
    """One L of :func:`bench_cost`: thermalise, tune n_steps, run, time, analyse."""
    import jax
    import jax.numpy as jnp

    from olrg_hpc.lattice import autocorr, hmc
    from olrg_hpc.lattice.observables import xi2_from_propagators
    from olrg_hpc.lattice.phi4 import Phi4Action

    action, c = Phi4Action.from_beta_lambda(beta, lam)
    V = L * L
    key = jax.random.key(seed + 1000 * L, impl="rbg")
    phi = 0.5 * jax.random.normal(jax.random.fold_in(key, 0), (n_chains, L, L), dtype=jnp.float64)
    calls = iter(range(1, 1 << 30))

    def run(phi: jax.Array, n_steps: int) -> tuple[Any, float]:
        t0 = time.perf_counter()
        res = jax.block_until_ready(hmc.run_chain(action, phi, block, jax.random.fold_in(key, next(calls)),
                                                  n_steps=n_steps, integrator=integrator, measure=_cost_measure))
        return res, time.perf_counter() - t0

    # thermalise with a safe step count (the first call compiles: one program per L, n_steps is traced)
    t0 = time.perf_counter()
    for _ in range(n_therm // block):
        phi = run(phi, 4 * max(4, L // 4))[0].phi
    therm_s = time.perf_counter() - t0
    # tune: smallest step count with acceptance >= acc_min (the pilots also thermalise further)
    n_steps, phi, tuning = hmc.tune_n_steps(action, phi, jax.random.fold_in(key, next(calls)), acc_min=acc_min,
                                            block=block, integrator=integrator)
    # production
    M, G, dH, accs, times = [], [], [], [], []
    for _ in range(n_traj // block):
        res, dt = run(phi, n_steps)
        phi = res.phi
        m, g = res.measurements
        M.append(c * np.asarray(m))
        G.append(c * c * np.asarray(g))
        dH.append(np.asarray(res.dH))
        accs.append(float(res.acceptance))
        times.append(dt)
    M, G, dH = np.concatenate(M), np.concatenate(G), np.concatenate(dH)  # (n_traj, n_chains)
    chi2_hist = V * M**2
    tau, dtau = autocorr.tau_int(chi2_hist)
    chi2, chi2_err, _ = autocorr.mean_error(chi2_hist)
    xi2, xi2_err = autocorr.derived(lambda g0, gp: xi2_from_propagators(g0, gp, L), chi2_hist, G)
    xi = float(np.sqrt(max(xi2, 0.0)))
    binder, binder_err = autocorr.derived(lambda m4, m2: 1.0 - m4 / (3.0 * m2**2), M**4, M**2)
    tau_pc, _, chi2_err_pc = per_chain_mean_analysis(chi2_hist)
    t = np.asarray(times)
    s_traj = float(np.min(t)) / block  # best of the blocks: load spikes of a shared machine removed
    s_traj_err = float(np.median(t) - np.min(t)) / block  # their spread, as the timing uncertainty
    s_chain = s_traj / n_chains
    cost = 2.0 * tau * s_chain
    cost_err = cost * float(np.hypot(dtau / tau, s_traj_err / s_traj))
    w = np.exp(-dH)
    return {
        "L": L, "beta": beta, "lam": lam, "m2_tutorial": float(action.m2), "lam_tutorial": float(action.lam),
        "integrator": integrator, "tau": 1.0, "n_steps": n_steps, "tuning": tuning,
        "acceptance": float(np.mean(accs)), "exp_minus_dH": float(np.mean(w)),
        "exp_minus_dH_err": float(np.std(w) / np.sqrt(w.size)),
        "n_chains": n_chains, "n_therm": n_therm, "n_traj": n_traj, "block": block,
        "chi2": chi2, "chi2_err": chi2_err, "tau_int_chi2": tau, "tau_int_chi2_err": dtau,
        "tau_int_chi2_per_chain_mean": tau_pc, "chi2_err_per_chain_mean": chi2_err_pc,
        "xi2nd": xi, "xi2nd_err": float(xi2_err / (2 * xi)) if xi > 0 else float("nan"),
        "xi2nd_over_L": xi / L, "binder": binder, "binder_err": binder_err,
        "seconds_per_traj": s_traj, "seconds_per_traj_err": s_traj_err,
        "seconds_per_traj_median": float(np.median(t)) / block,
        "seconds_per_chain_traj": s_chain, "cost_per_independent_s": cost, "cost_per_independent_err_s": cost_err,
        "block_seconds": times, "therm_and_compile_s": therm_s,
    }


def bench_cost(sizes: list[int], betas: list[float] | None, lam: float, n_chains: int, n_therm: int,
               n_traj: int, block: int, integrator: str, acc_min: float, seed: int) -> dict[str, Any]:
    if betas is not None and len(betas) != len(sizes):
        raise SystemExit("--cost-betas needs one beta per --cost-sizes entry")
    if n_therm % block or n_traj % block or n_traj < 2 * block:
        raise SystemExit("--cost-therm and --cost-traj must be multiples of --cost-block (traj >= 2 blocks)")
    rows = []
    for i, L in enumerate(sizes):
        beta = float(betas[i]) if betas else line_beta(L)
        row = _cost_point(L, beta, lam, n_chains, n_therm, n_traj, block, integrator, acc_min, seed)
        rows.append(row)
        print(f"  L={L:4d} beta={beta:.3f}  n_steps={row['n_steps']:3d} acc={row['acceptance']:.3f}  "
              f"chi2={row['chi2']:8.3f}({row['chi2_err']:.3f})  "
              f"xi/L={row['xi2nd_over_L']:.3f}({row['xi2nd_err'] / L:.3f})  "
              f"U={row['binder']:.3f}({row['binder_err']:.3f})  "
              f"tau_int={row['tau_int_chi2']:7.2f}({row['tau_int_chi2_err']:.2f})  "
              f"s/traj={row['seconds_per_traj'] * 1e3:8.3f} ms ({n_chains} chains) = "
              f"{row['seconds_per_chain_traj'] * 1e6:8.2f} us/chain  "
              f"cost={row['cost_per_independent_s'] * 1e6:9.2f}({row['cost_per_independent_err_s'] * 1e6:.2f}) us",
              flush=True)
    out: dict[str, Any] = {
        "beta_line": (f"constant xi_2nd/L at lam = 0.5: tabulated {LINE_BETAS} (8, 16: Albandea et al.; 32, 64: "
                      f"matched here); other L: beta = {LINE_BETA_C:.4f} - {_LINE_A:.4f} L^-{_LINE_Y:.4f}"),
        "cost_definition": "2 tau_int(chi2) x seconds per chain trajectory (batched chains, compile excluded)",
        "points": rows,
    }
    if len({r["L"] for r in rows}) >= 2:  # a beta scan at one L has no exponent to fit
        Ls = np.array([r["L"] for r in rows], dtype=float)
        out["z_fit"] = _fit_power(Ls, np.array([r["tau_int_chi2"] for r in rows]),
                                  np.array([r["tau_int_chi2_err"] for r in rows]))
        out["cost_exponent_fit"] = _fit_power(Ls, np.array([r["cost_per_independent_s"] for r in rows]),
                                              np.array([r["cost_per_independent_err_s"] for r in rows]))
        zf, cf = out["z_fit"], out["cost_exponent_fit"]
        dof = "" if zf["chi2_per_dof"] is None else f", chi2/dof {zf['chi2_per_dof']:.2f}"
        print(f"  tau_int(chi2) ~ L^z: z = {zf['z']:.2f} +- {zf['z_err']:.2f} ({zf['n_points']} L{dof}); "
              f"cost ~ L^{cf['z']:.2f} +- {cf['z_err']:.2f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 128, 256, 512, 1024],
                    help="JAX leapfrog lattice sizes (none: skip)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--target-s", type=float, default=0.5, help="approximate seconds per timed JAX call")
    ap.add_argument("--bw-mib", type=int, default=256, help="array size for the bandwidth copy")
    ap.add_argument("--mpi-ranks", type=int, nargs="*", default=[1, 2, 4])
    ap.add_argument("--mpi-local", type=int, nargs="+", default=[256, 512], help="block edges per rank")
    ap.add_argument("--mpi-transports", nargs="+", default=None,
                    help="mpi4jax and/or callback (default: both when mpi4jax is installed)")
    ap.add_argument("--mpi-halos", nargs="+", default=["trajectory"], choices=["trajectory", "force"],
                    help="halo exchange once per trajectory and/or at every force evaluation (mpi_hmc's halo)")
    ap.add_argument("--mpi-n-traj", type=int, default=20)
    ap.add_argument("--mpi-n-steps", type=int, default=10)
    ap.add_argument("--mpi-calls", type=int, default=5, help="timed kernel calls per measurement (best kept)")
    ap.add_argument("--mpi-repeats", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--analysis-seeds", type=int, default=0,
                    help="replica analysis before/after (AR(1) over this many seeds; 0: skip the section)")
    ap.add_argument("--analysis-hmc", type=int, nargs=3, default=[128, 4000, 500], metavar=("CHAINS", "TRAJ", "THERM"),
                    help="the L = 16 HMC ensemble of the replica analysis (CHAINS 0: skip it)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cost-sizes", type=int, nargs="*", default=[8, 16, 32],
                    help="L of the cost-per-independent-sample study (none: skip)")
    ap.add_argument("--cost-betas", type=float, nargs="*", default=None,
                    help="beta per --cost-sizes entry (default: the Albandea line, see above)")
    ap.add_argument("--cost-lam", type=float, default=0.5, help="lambda (beta/lambda convention)")
    ap.add_argument("--cost-chains", type=int, default=64, help="independent chains (batched)")
    ap.add_argument("--cost-therm", type=int, default=200, help="thermalisation trajectories per chain")
    ap.add_argument("--cost-traj", type=int, default=2000, help="production trajectories per chain")
    ap.add_argument("--cost-block", type=int, default=100, help="trajectories per jitted call (timing unit)")
    ap.add_argument("--cost-integrator", choices=["leapfrog", "omelyan"], default="leapfrog")
    ap.add_argument("--cost-acc-min", type=float, default=0.8, help="tuning target: smallest n_steps reaching it")
    ap.add_argument("--cost-seed", type=int, default=1)
    ap.add_argument("--out", default="benchmarks/results/hmc.json")
    args = ap.parse_args(argv)
    if args.worker:  # one measurement of the MPI section, in its own process
        got = _worker(json.loads(args.worker))
        if got:  # rank 0 of an MPI worker, or a single-process one
            print(json.dumps(got))
        return

    import jax

    from olrg_hpc.jaxsetup import enable_x64

    enable_x64()
    print(f"host {platform.node()}, {os.cpu_count()} CPUs, JAX {jax.__version__} on {jax.devices()[0]}")
    bw = measure_bandwidth(args.bw_mib, args.repeat)
    print(f"memory bandwidth (1 thread, numpy copy of {args.bw_mib} MiB): {bw['bytes_per_s'] / 1e9:.2f} GB/s")
    jax_rows: list[dict[str, Any]] = []
    if args.sizes:
        print(f"JAX leapfrog (float64, bandwidth model {BYTES_PER_SITE_STEP} B/site/step):")
        jax_rows = bench_jax_leapfrog(args.sizes, args.repeat, args.target_s, bw["bytes_per_s"])
    mpi_rows: dict[str, Any] = {}
    if args.mpi_ranks:
        from olrg_hpc.lattice.halo import TRANSPORTS, default_transport

        transports = args.mpi_transports or (list(TRANSPORTS) if default_transport() == "mpi4jax" else ["callback"])
        print(f"MPI program vs single-process JAX kernel ({args.mpi_local} sites per rank edge, {transports}, "
              f"{args.mpi_repeats} interleaved rounds):")
        mpi_rows = bench_mpi(args.mpi_ranks, args.mpi_local, transports, args.mpi_n_steps, args.mpi_n_traj,
                             args.mpi_calls, args.mpi_repeats, tuple(args.mpi_halos))
    analysis: dict[str, Any] = {}
    if args.analysis_seeds:
        print("Replica analysis: per-chain means (before) against Wolff's global mean (after):")
        analysis = bench_replica_analysis(args.analysis_seeds, *args.analysis_hmc)
    cost: dict[str, Any] = {}
    if args.cost_sizes:
        print(f"HMC cost per independent chi2 sample vs L (lam = {args.cost_lam}, {args.cost_chains} chains x "
              f"{args.cost_traj} trajectories, {args.cost_integrator}, tau = 1):")
        t0 = time.perf_counter()
        cost = bench_cost(args.cost_sizes, args.cost_betas, args.cost_lam, args.cost_chains, args.cost_therm,
                          args.cost_traj, args.cost_block, args.cost_integrator, args.cost_acc_min, args.cost_seed)
        cost["section_seconds"] = time.perf_counter() - t0
        print(f"  (section took {cost['section_seconds']:.0f} s)")
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
        "mpi_vs_single": mpi_rows,
        "cost_vs_L": cost,
        "replica_analysis": analysis,
        "load_average": os.getloadavg(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
