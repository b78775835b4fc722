"""Strong and weak scaling: small-block task throughput vs Dask workers, MPI HMC vs ranks, sharded training vs
devices; speed-up and efficiency curves, and where (and why) each stops scaling.

Each measurement launches its own system in a fresh subprocess, so that it does not share a process (or an
already-imported JAX with a fixed device count) with the Dask worker that runs it:

* ``throughput_task``: ``python -m olrg_hpc.scaling throughput`` starts a LocalCluster of ``n_workers``
  single-threaded worker processes, warms every worker up (imports, one untimed task each) and pushes
  ``n_tasks`` exact quenches of ``n_sites``-site chains (:func:`olrg_hpc.spins.quench.quench_task`, one
  HDF5 shard each) through :func:`olrg_hpc.runner.run_tasks`. Time: wall seconds of ``run_tasks``.
* ``mpi_hmc_task``: ``mpiexec -n r`` (``srun --mpi=pmi2 -n r`` inside a SLURM allocation; see
  :func:`olrg_hpc.mpi.mpi_launcher`) ``python -m olrg_hpc.lattice.mpi_hmc`` on an explicit process grid.
  Time: seconds per molecular-dynamics step (slowest rank), with the halo-exchange share of MD time
  (time inside ``Sendrecv``, including waiting for a slower neighbour).
* ``training_task``: ``python -m olrg_hpc.scaling training`` with
  ``XLA_FLAGS=--xla_force_host_platform_device_count=d`` (``platform="cpu"``: ``d`` emulated CPU devices
  sharing the cores) or JAX's own devices (``platform="default"``: GPUs when present); reverse-KL steps of a
  Real-NVP flow (:func:`olrg_hpc.flows.train.train`) with the batch sharded over ``d`` devices. Time:
  seconds per step, compile excluded (an untimed warm-up call compiles first).

Every result carries the host facts: ``cpu_count`` (logical CPUs), ``usable_cpus``
(``len(os.sched_getaffinity(0))``), ``physical_cores`` (psutil) and ``background_busy_cores`` (cores kept busy
by other processes during 0.5 s just before the measurement, from psutil's CPU counters).

Curves (:func:`scaling_curve`; ``r0`` is the smallest resource count measured, ``T`` the time above):

* strong (fixed total work): speed-up ``S(r) = r0 T(r0) / T(r)`` (ideal ``S = r``), efficiency ``E = S / r``;
* weak (work proportional to ``r``): efficiency ``E(r) = T(r0) / T(r)`` (ideal 1), scaled speed-up ``r E``.

A curve *stops scaling* at the first ``r`` with ``E(r) < threshold``; :func:`explain_stop` names the likely
causes from the recorded timings (oversubscription, other load, halo share, slower tasks, dispatch
overhead, small per-device batches).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: the time each part's curves are built from, the rate shown next to it, and the resource's name
PARTS: dict[str, dict[str, str]] = {
    "throughput": {"time": "seconds", "rate": "tasks_per_s", "rate_unit": "tasks/s", "resource": "Dask workers"},
    "mpi_hmc": {"time": "md_step_s", "rate": "site_updates_per_s", "rate_unit": "site updates/s",
                "resource": "MPI ranks"},
    "training": {"time": "step_s", "rate": "samples_per_s", "rate_unit": "samples/s", "resource": "devices"},
}


# ------------------------------------------------------------------------------------------------ host facts
def host_facts(sample_s: float = 0.5) -> dict[str, Any]:
    """Cores of this host and how many of them other processes kept busy during ``sample_s`` seconds."""
    import psutil

    cpus = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    busy = psutil.cpu_percent(interval=sample_s) / 100.0 * cpus if sample_s > 0 else float("nan")
    return {"host": socket.gethostname(), "cpu_count": cpus, "usable_cpus": usable,
            "physical_cores": psutil.cpu_count(logical=False) or cpus, "background_busy_cores": busy,
            "load_avg_1min": os.getloadavg()[0]}


def process_grid(n_ranks: int) -> tuple[int, int]:
    """The balanced 2-D process grid ``(Py, Px)``, ``Py >= Px``, that ``MPI_Dims_create(n, 2)`` gives."""
    if n_ranks < 1:
        raise ValueError(f"need at least one rank (got {n_ranks})")
    px = max(d for d in range(1, math.isqrt(n_ranks) + 1) if n_ranks % d == 0)
    return n_ranks // px, px


def _spread(times: Sequence[float]) -> dict[str, Any]:
    """The repeats' times and their spread (slowest / fastest; near 1 on a quiet machine)."""
    return {"repeat_times": list(times), "repeat_spread": max(times) / min(times)}


# ------------------------------------------------------------------------------------------------ subprocesses
def _thread_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """This environment with one BLAS/OpenMP thread per process (each worker or rank is one core's work)."""
    out = dict(os.environ if env is None else env)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        out[var] = "1"
    return out


def _run_json(cmd: Sequence[str], env: Mapping[str, str], timeout_s: float, what: str) -> dict[str, Any]:
    """Run ``cmd``, return the JSON object printed on its last stdout line; RuntimeError in one line otherwise."""
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, env=dict(env), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what}: no result within {timeout_s:g} s (timeout_s)") from None
    except OSError as exc:
        raise RuntimeError(f"{what}: cannot start {cmd[0]} ({exc.strerror})") from None
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    if out.returncode != 0 or not lines:
        err = [ln for ln in out.stderr.splitlines() if ln.strip()]
        tail = " | ".join(err[-3:])[-600:] or "no output"
        raise RuntimeError(f"{what}: exit status {out.returncode}: {tail}")
    try:
        return json.loads(lines[-1])
    except ValueError:
        raise RuntimeError(f"{what}: last output line is not JSON: {lines[-1][:200]!r}") from None


def _module_cmd(kind: str, params: Mapping[str, Any]) -> list[str]:
    return [sys.executable, "-m", "olrg_hpc.scaling", kind, "--json", json.dumps(dict(params))]


# ------------------------------------------------------------------------------------------------ (a) throughput
def quench_params(i: int, n_tasks: int, model: str, n_sites: int, t_max: float, n_times: int) -> dict[str, Any]:
    from olrg_hpc.spins.models import MODELS

    # each task its own coupling, so that no two tasks are the same computation: the model's defaults, its last
    # coupling shifted by i / n_tasks
    couplings = dict(MODELS[model].couplings)
    last = MODELS[model].coupling_names[-1]
    couplings[last] += i / n_tasks
    return {"model": model, "n_sites": n_sites, "couplings": couplings, "method": "ed", "t_max": t_max,
            "n_times": n_times, "initial": "up", "profile_sites": 2}


def _warm_up(model: str, n_sites: int, t_max: float, n_times: int) -> None:
    from olrg_hpc.spins.quench import quench_task

    quench_task(**quench_params(0, 1, model, n_sites, t_max, n_times))


def measure_throughput(n_workers: int, n_tasks: int, model: str = "tfim", n_sites: int = 10, t_max: float = 2.0,
                       n_times: int = 21, repeats: int = 1) -> dict[str, Any]:
    """Tasks per second of ``n_tasks`` small-block quench tasks through the runner on ``n_workers`` workers.

    Run in a process that may start worker processes (``python -m olrg_hpc.scaling throughput``), not on a
    Dask worker. Worker start-up and the first (importing) task of each worker are not timed. The batch runs
    ``repeats`` times (fresh shards each time); the fastest run is reported.
    """
    import logging
    import shutil
    import tempfile
    from pathlib import Path

    from distributed import Client, LocalCluster

    from olrg_hpc.runner import run_tasks
    from olrg_hpc.spins.quench import quench_task
    from olrg_hpc.tasks import Task

    t0 = time.perf_counter()
    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        client.wait_for_workers(n_workers)
        client.run(_warm_up, model, n_sites, t_max, n_times)
        start_s = time.perf_counter() - t0
        tasks = [Task(f"block-{i}", quench_task, quench_params(i, n_tasks, model, n_sites, t_max, n_times))
                 for i in range(n_tasks)]
        runs = []
        for _ in range(repeats):
            tmp = Path(tempfile.mkdtemp(prefix="olrg-scaling-"))
            try:
                s = run_tasks(tasks, tmp, client, progress=False, gather_results=False)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if not s.ok or s.computed != n_tasks:
                raise RuntimeError(f"throughput run: {len(s.failed)} of {n_tasks} tasks failed ({s.failed[:1]})")
            runs.append(s)
    s = min(runs, key=lambda r: r.seconds)
    busy = s.compute_seconds + s.write_seconds
    return {"n_workers": n_workers, "n_tasks": n_tasks, "tasks_per_worker": n_tasks / n_workers,
            "seconds": s.seconds, "tasks_per_s": n_tasks / s.seconds,
            "compute_ms_per_task": 1e3 * s.compute_seconds / n_tasks,
            "write_ms_per_task": 1e3 * s.write_seconds / n_tasks,
            # share of the workers' wall time not spent inside tasks: scheduling, transfers, idle tails
            "overhead_share": max(0.0, 1.0 - busy / (n_workers * s.seconds)),
            "cluster_start_s": start_s, **_spread([r.seconds for r in runs])}


def throughput_task(n_workers: int, n_tasks: int, model: str = "tfim", n_sites: int = 10, t_max: float = 2.0,
                    n_times: int = 21, repeats: int = 1, timeout_s: float = 600) -> dict[str, Any]:
    """One throughput point (:func:`measure_throughput` in a subprocess) plus the host facts."""
    facts = host_facts()
    params = {"n_workers": n_workers, "n_tasks": n_tasks, "model": model, "n_sites": n_sites, "t_max": t_max,
              "n_times": n_times, "repeats": repeats}
    res = _run_json(_module_cmd("throughput", params), _thread_env(), timeout_s,
                    f"throughput with {n_workers} workers")
    return {**res, **facts, "resources": n_workers}


# ------------------------------------------------------------------------------------------------ (b) MPI HMC
def mpi_hmc_task(n_ranks: int, spec: Mapping[str, Any], launcher: str = "auto", repeats: int = 1,
                 timeout_s: float = 600) -> dict[str, Any]:
    """Time per MD step of ``olrg_hpc.lattice.mpi_hmc`` on ``n_ranks`` ranks.

    ``spec``: the run (:class:`~olrg_hpc.lattice.mpi_hmc_spec.MPIHMCSpec` fields: lattice ``L``, process grid
    ``dims``, couplings, ``n_traj``, ...; the program's defaults for the rest); the kernel's parts are timed
    (``profile``). ``launcher``: ``auto`` (srun inside a SLURM allocation, mpiexec elsewhere), ``mpiexec`` or
    ``srun``. The couplings only fix the work per site; timings do not depend on them. The program runs
    ``repeats`` times; the run with the shortest MD time is reported.
    """
    from olrg_hpc.lattice.mpi_hmc_spec import MPIHMCSpec, to_argv
    from olrg_hpc.mpi import mpi_launcher

    run = MPIHMCSpec.model_validate({**spec, "profile": True})
    facts = host_facts()
    use_srun = {"auto": None, "mpiexec": False, "srun": True}[launcher]
    cmd = [*mpi_launcher(n_ranks, use_srun=use_srun), sys.executable, "-m", "olrg_hpc.lattice.mpi_hmc",
           *to_argv(run)]
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        summary = _run_json(cmd, _thread_env(), timeout_s, f"MPI HMC on {n_ranks} ranks")
        runs.append((summary, time.perf_counter() - t0))
    summary, wall = min(runs, key=lambda sw: sw[0]["timings"]["md_s"])
    t = summary["timings"]
    step = t["md_s"] / (run.n_traj * run.n_steps)
    (ly, lx), (py, px) = run.shape, summary["dims"]
    return {"n_ranks": n_ranks, "shape": list(run.shape), "dims": [py, px], "local_block": [ly // py, lx // px],
            "md_step_s": step, "traj_s": t["total_s"] / run.n_traj,
            "halo_share": t["halo_s"] / t["md_s"], "force_share": t["force_s"] / t["md_s"],
            "rng_share": t["rng_s"] / t["total_s"], "reduce_share": t["reduce_s"] / t["total_s"],
            "site_updates_per_s": ly * lx / step, "acceptance": summary["acceptance"],
            "wall_s_incl_startup": wall, "command": " ".join(cmd[:4]) + " ... mpi_hmc",
            **_spread([sw[0]["timings"]["md_s"] for sw in runs]), **facts, "resources": n_ranks}


# ------------------------------------------------------------------------------------------------ (c) training
def measure_training(n_devices: int, batch_size: int, n_steps: int = 20, warmup_steps: int = 2, L: int = 8,
                     n_layers: int = 2, hidden: Sequence[int] = (8, 8), kernel_size: int = 3, m2: float = -4.0,
                     lam: float = 8.0, sync_every: int = 5, repeats: int = 1) -> dict[str, Any]:
    """Seconds per reverse-KL step of a Real-NVP flow with the batch sharded over the first ``n_devices``.

    Run in a fresh process whose JAX sees at least ``n_devices`` devices (``python -m olrg_hpc.scaling
    training`` after the caller set ``XLA_FLAGS``). Compilation happens in an untimed warm-up call; then
    ``repeats`` segments of ``n_steps`` steps continue the training, and the fastest segment is reported.
    """
    import jax

    from olrg_hpc.flows.model import GaussianPrior, count_params, init_flow, tutorial_flow
    from olrg_hpc.flows.train import train
    from olrg_hpc.lattice.phi4 import Phi4Action

    devs = jax.devices()
    if len(devs) < n_devices:
        raise RuntimeError(f"{n_devices} devices requested, JAX sees {len(devs)} ({devs[0].platform})")
    flow = tutorial_flow(n_layers=n_layers, hidden=tuple(hidden), kernel_size=kernel_size)
    prior = GaussianPrior((L, L), "float32")
    action = Phi4Action(m2, lam)
    params = init_flow(flow, 1, (L, L))
    t0 = time.perf_counter()
    warm = train(flow, prior, action, n_steps=warmup_steps, batch_size=batch_size, key=1, params=params,
                 devices=n_devices, sync_every=warmup_steps)
    compile_s = time.perf_counter() - t0
    state, walls = warm.state, []
    for _ in range(repeats):
        res = train(flow, prior, action, n_steps=state.step + n_steps, batch_size=batch_size, key=1, state=state,
                    devices=n_devices, sync_every=sync_every)
        state = res.state
        walls.append(res.wall_s)
    best = min(walls)
    return {"n_devices": n_devices, "batch_size": batch_size, "per_device_batch": batch_size // n_devices,
            "n_steps": n_steps, "seconds": best, "step_s": best / n_steps,
            "samples_per_s": batch_size * n_steps / best, "first_calls_s_incl_compile": compile_s,
            "n_params": count_params(params), "platform": devs[0].platform, "device_kind": devs[0].device_kind,
            "devices_seen": len(devs), "final_loss": float(res.losses[-1]), **_spread(walls)}


_DEVICE_FLAG = re.compile(r"--xla_force_host_platform_device_count=\d+")


def training_env(n_devices: int, platform: str = "cpu") -> dict[str, str]:
    """Environment for a training subprocess: ``n_devices`` emulated CPU devices (``platform="cpu"``) or
    JAX's default backend (``"default"``: GPUs when present; the emulation flag only affects CPUs)."""
    env = dict(os.environ)
    flags = _DEVICE_FLAG.sub("", env.get("XLA_FLAGS", "")).split()
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={n_devices}"])
    if platform == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
    else:
        env.pop("JAX_PLATFORMS", None)
    return env


def training_task(n_devices: int, batch_size: int, n_steps: int = 20, warmup_steps: int = 2, L: int = 8,
                  n_layers: int = 2, hidden: Sequence[int] = (8, 8), kernel_size: int = 3, m2: float = -4.0,
                  lam: float = 8.0, platform: str = "cpu", repeats: int = 1, timeout_s: float = 600) -> dict[str, Any]:
    """One sharded-training point (:func:`measure_training` in a subprocess) plus the host facts."""
    facts = host_facts()
    params = {"n_devices": n_devices, "batch_size": batch_size, "n_steps": n_steps, "warmup_steps": warmup_steps,
              "L": L, "n_layers": n_layers, "hidden": list(hidden), "kernel_size": kernel_size, "m2": m2, "lam": lam,
              "repeats": repeats}
    res = _run_json(_module_cmd("training", params), training_env(n_devices, platform), timeout_s,
                    f"training on {n_devices} devices")
    return {**res, **facts, "resources": n_devices}


# ------------------------------------------------------------------------------------------------ curves
def scaling_curve(resources: Sequence[float], seconds: Sequence[float], mode: str) -> tuple[np.ndarray, np.ndarray]:
    """``(speed-up, efficiency)`` per point (module docstring); ``resources`` ascending, ``seconds`` > 0."""
    r = np.asarray(resources, dtype=float)
    t = np.asarray(seconds, dtype=float)
    if mode == "strong":
        speedup = r[0] * t[0] / t
        return speedup, speedup / r
    if mode == "weak":
        eff = t[0] / t
        return r * eff, eff
    raise ValueError(f"mode must be 'strong' or 'weak' (got {mode!r})")


def stop_point(resources: Sequence[int], efficiency: Sequence[float], threshold: float) -> int | None:
    """The first resource count whose efficiency is below ``threshold`` (None: scales over the whole range)."""
    for r, e in zip(resources, efficiency, strict=True):
        if e < threshold:
            return int(r)
    return None


def explain_stop(part: str, mode: str, points: Sequence[Mapping[str, Any]], index: int) -> str:
    """Likely reasons why ``points[index]`` is less efficient than ``points[0]``, from the recorded timings."""
    p, base = points[index], points[0]
    r = int(p["resources"])
    unit = PARTS[part]["resource"]
    cores = int(p.get("usable_cpus", p.get("cpu_count", 1)))
    reasons = []
    if part == "training" and p.get("platform") == "cpu":
        reasons.append(f"{r} emulated CPU devices share {cores} cores (XLA already spreads one device's work "
                       "over them)")
    elif r > cores:
        reasons.append(f"{r} {unit} on {cores} usable cores: oversubscribed")
    busy = float(p.get("background_busy_cores", 0.0))
    if busy >= 0.5:
        reasons.append(f"other processes kept {busy:.1f} of {cores} cores busy just before the run")
    spread = float(p.get("repeat_spread", 1.0))
    if spread > 1.3:
        reasons.append(f"repeats differed by x{spread:.1f} (noisy timings)")
    if part == "mpi_hmc":
        h, h0 = float(p["halo_share"]), float(base["halo_share"])
        if h - h0 > 0.1:
            reasons.append(f"halo exchange {100 * h:.0f}% of MD time (from {100 * h0:.0f}%; includes waiting for "
                           f"slower ranks), local block {p['local_block'][0]}x{p['local_block'][1]}")
        if float(p["rng_share"]) > 0.25:
            reasons.append(f"momentum generation {100 * float(p['rng_share']):.0f}% of the run (rows are "
                           "generated at full width on every rank of a grid row)")
    if part == "throughput":
        c, c0 = float(p["compute_ms_per_task"]), float(base["compute_ms_per_task"])
        if c > 1.25 * c0:
            reasons.append(f"each task ran {c / c0:.2f}x slower than with {int(base['resources'])} worker(s) "
                           "(shared cores, memory bandwidth)")
        o = float(p["overhead_share"])
        if o > 0.2:
            reasons.append(f"workers outside tasks {100 * o:.0f}% of the time (scheduling, result round trips, "
                           f"idle tail; {c:.0f} ms compute + {float(p['write_ms_per_task']):.1f} ms shard write "
                           "per task)")
        if mode == "strong" and float(p["tasks_per_worker"]) < 8:
            reasons.append(f"only {float(p['tasks_per_worker']):.0f} tasks per worker: the idle tail dominates")
    if part == "training" and mode == "strong" and int(p["per_device_batch"]) < 32:
        reasons.append(f"per-device batch {int(p['per_device_batch'])}: fixed per-step costs (dispatch, "
                       f"all-reduce of {int(p['n_params'])} parameters) dominate")
    return "; ".join(reasons) or "no single cause identified from the recorded timings"


def scaling_curves(curves: Mapping[str, Mapping[str, Any]], threshold: float = 0.7,
                   deps: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Gather measurements into curves: ``curves[name] = {"part", "mode", "points": [[r, task_name], ...]}``.

    Per curve: ``resources``, ``seconds`` (the part's time per unit of work, see :data:`PARTS`), ``rate``,
    ``speedup``, ``efficiency``, the part's diagnostics, ``stops_at`` (0: never below ``threshold``) and
    ``reason`` (why it stops, or up to where it scales).
    """
    deps = deps or {}
    out: dict[str, Any] = {"threshold": float(threshold)}
    hosts: dict[str, Any] = {}
    for name, spec in curves.items():
        part, mode = spec["part"], spec["mode"]
        keys = PARTS[part]
        pts = [_plain(deps[task]) for _r, task in spec["points"]]
        res = np.array([int(p["resources"]) for p in pts])
        secs = np.array([float(p[keys["time"]]) for p in pts])
        speedup, eff = scaling_curve(res, secs, mode)
        stop = stop_point(res, eff, threshold)
        if stop is None:
            reason = f"efficiency >= {threshold:g} up to {int(res[-1])} {keys['resource']} (the largest measured)"
        else:
            i = int(np.flatnonzero(res == stop)[0])
            reason = explain_stop(part, mode, pts, i)
        g: dict[str, Any] = {"part": part, "mode": mode, "resources": res, "seconds": secs,
                             "rate": np.array([float(p[keys["rate"]]) for p in pts]), "speedup": speedup,
                             "efficiency": eff, "stops_at": stop or 0, "reason": reason,
                             "tasks": np.array([task for _r, task in spec["points"]]),
                             "background_busy_cores": np.array([float(p["background_busy_cores"]) for p in pts])}
        for diag in ("halo_share", "rng_share", "overhead_share", "compute_ms_per_task", "per_device_batch",
                     "n_tasks", "batch_size", "repeat_spread"):
            if diag in pts[0]:
                g[diag] = np.array([float(p[diag]) for p in pts])
        if part == "mpi_hmc":
            g["local_sites"] = np.array([int(np.prod(p["local_block"])) for p in pts])
        out[name] = g
        hosts.update({k: pts[0][k] for k in ("host", "cpu_count", "usable_cpus", "physical_cores")})
    out["host"] = hosts
    return out


def _plain(d: Mapping[str, Any]) -> dict[str, Any]:
    """Values read back from a shard (numpy scalars, 0-d arrays) as Python scalars; arrays as lists."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        a = np.asarray(v) if not isinstance(v, (str, Mapping)) else None
        out[k] = v if a is None else (a.item() if a.ndim == 0 else a.tolist())
    return out


# ------------------------------------------------------------------------------------------------ entry point
def main(argv: Sequence[str] | None = None) -> int:
    """``python -m olrg_hpc.scaling {throughput,training} --json PARAMS``: one measurement, JSON on stdout."""
    ap = argparse.ArgumentParser(prog="python -m olrg_hpc.scaling", description=__doc__.split("\n")[0])
    ap.add_argument("kind", choices=["throughput", "training"])
    ap.add_argument("--json", required=True, help="keyword arguments of measure_<kind> as a JSON object")
    args = ap.parse_args(argv)
    kwargs = json.loads(args.json)
    fn = measure_throughput if args.kind == "throughput" else measure_training
    print(json.dumps(fn(**kwargs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
