"""Scaling study: strong and weak scaling of (a) small-block task throughput vs Dask workers, (b) MPI HMC vs
ranks, (c) sharded flow training vs devices; curves, and where and why each stops scaling.

Graph: one task per measurement (each launches its own measured system in a subprocess, see
:mod:`olrg_hpc.scaling`), chained so that each depends on the previous one: measurements never run at the
same time, whatever the number of study workers (the chain also means that changing one measurement's
settings re-measures everything after it). A point shared by the strong and the weak curve (e.g. 1 worker)
is measured once. Then one ``curves`` task computes speed-up and efficiency per curve, the first resource
count with efficiency below ``efficiency_threshold`` and the likely reason. Report: what was computed (the work
of every curve, the host, the definitions, the target ``efficiency_threshold``), the verdict per curve (target
met up to which count, why it stops), a table of every point and one figure per part (strong: speed-up vs
resources with the ideal line; weak: efficiency vs resources) where its curves have two or more points.

What is measured where: every measurement runs on the host of the study worker that picks it up.
(a) starts its own LocalCluster there (node-level throughput, at most the cores of that host or, on SLURM,
of the worker job: give the profile ``cores:`` >= the largest worker count; throughput across SLURM nodes is
``benchmarks/bench_slurm.py``); (b) launches ``mpiexec -n r`` there, or ``srun --mpi=pmi2 -n r`` inside a
SLURM allocation (``mpi.launcher``), so under SLURM the worker job must hold r tasks (``job_extra_directives:
["--ntasks=4"]``); (c) emulates d CPU devices on that host (``platform: cpu``) or uses its GPUs
(``platform: default``). Other processes on the host disturb the timings: each point records how many cores
were busy just before it ran, and the report names that as a reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from olrg_hpc import scaling
from olrg_hpc.config import Strict
from olrg_hpc.report import COMPUTED, Table, WorkflowReport, sig3
from olrg_hpc.spins.models import ModelName
from olrg_hpc.tasks import Task

Mode = Literal["strong", "weak"]


def _counts(v: list[int], what: str) -> list[int]:
    if any(n < 1 for n in v):
        raise ValueError(f"{what} of at least 1 (got {min(v)})")
    if len(set(v)) != len(v):
        raise ValueError(f"{what} must be distinct (got {v})")
    return sorted(v)


class Throughput(Strict):
    """(a) exact quenches of small chains (one HDF5 shard each) through the runner on a LocalCluster of w workers."""

    workers: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)
    strong_tasks: int = Field(48, ge=1, description="tasks at every worker count (strong scaling)")
    weak_tasks_per_worker: int = Field(24, ge=1, description="tasks per worker (weak scaling)")
    model: ModelName = "tfim"
    n_sites: int = Field(10, ge=2, le=16, description="chain length of each task (ED)")
    t_max: float = Field(2.0, gt=0)
    n_times: int = Field(21, ge=2)

    @field_validator("workers")
    @classmethod
    def _w(cls, v: list[int]) -> list[int]:
        return _counts(v, "worker counts")


class MPIScaling(Strict):
    """(b) the MPI HMC (olrg_hpc.lattice.mpi_hmc) on r ranks, process grid as MPI_Dims_create gives."""

    ranks: list[int] = Field(default_factory=lambda: [1, 2, 4], min_length=1)
    strong_L: int = Field(512, ge=4, description="global L x L lattice at every rank count (strong scaling)")
    weak_local: int = Field(256, ge=2, description="local block edge per rank (weak scaling)")
    n_traj: int = Field(10, ge=1)
    n_steps: int | None = Field(None, ge=1, description="MD steps per trajectory (default: the MPI HMC program's)")
    m2: float = Field(1.0, description="tutorial convention (the couplings only fix the work per site)")
    lam: float = Field(0.5, ge=0)
    launcher: Literal["auto", "mpiexec", "srun"] = "auto"

    @field_validator("ranks")
    @classmethod
    def _r(cls, v: list[int]) -> list[int]:
        return _counts(v, "rank counts")

    @model_validator(mode="after")
    def _divisible(self) -> MPIScaling:
        for r in self.ranks:
            py, px = scaling.process_grid(r)
            if self.strong_L % py or self.strong_L % px:
                raise ValueError(f"strong_L {self.strong_L} is not divisible by the {py}x{px} process grid of "
                                 f"{r} ranks")
        return self


class TrainingScaling(Strict):
    """(c) reverse-KL steps of a Real-NVP flow for 2D phi^4, batch sharded over d devices."""

    devices: list[int] = Field(default_factory=lambda: [1, 2, 4, 8], min_length=1)
    strong_batch: int = Field(256, ge=1, description="global batch at every device count (strong scaling)")
    weak_batch_per_device: int = Field(32, ge=1, description="batch per device (weak scaling)")
    n_steps: int = Field(20, ge=1, description="timed steps")
    warmup_steps: int = Field(2, ge=1, description="untimed steps (compilation)")
    L: int = Field(8, ge=2)
    n_layers: int = Field(2, ge=1)
    hidden: list[int] = Field(default_factory=lambda: [8, 8])
    kernel_size: int = Field(3, ge=1)
    m2: float = -4.0
    lam: float = Field(8.0, ge=0)
    platform: Literal["cpu", "default"] = Field("cpu", description="cpu: emulated CPU devices; default: JAX's "
                                                "backend (GPUs when present)")

    @field_validator("devices")
    @classmethod
    def _d(cls, v: list[int]) -> list[int]:
        return _counts(v, "device counts")

    @model_validator(mode="after")
    def _divisible(self) -> TrainingScaling:
        bad = [d for d in self.devices if self.strong_batch % d]
        if bad:
            raise ValueError(f"strong_batch {self.strong_batch} must be a multiple of every device count "
                             f"(not of {bad[0]})")
        return self


class Params(Strict):
    throughput: Throughput | None = None
    mpi: MPIScaling | None = None
    training: TrainingScaling | None = None
    modes: list[Mode] = Field(default_factory=lambda: ["strong", "weak"], min_length=1)
    efficiency_threshold: float = Field(0.7, gt=0, le=1, description="a curve stops scaling below this efficiency")
    repeats: int = Field(2, ge=1, description="timed runs per measurement; the fastest counts (busy machines)")
    timeout_s: float = Field(600.0, gt=0, description="per measurement")

    @model_validator(mode="after")
    def _something(self) -> Params:
        if self.throughput is None and self.mpi is None and self.training is None:
            raise ValueError("nothing to measure: give at least one of throughput, mpi, training")
        return self


def _points(params: Params) -> list[tuple[str, str, int, str, Any, dict[str, Any]]]:
    """(part, mode, resources, task name, task function, task params) of every curve point, in run order."""
    out: list[tuple[str, str, int, str, Any, dict[str, Any]]] = []
    tmo = {"repeats": params.repeats, "timeout_s": params.timeout_s}
    if (a := params.throughput) is not None:
        common = {"model": a.model, "n_sites": a.n_sites, "t_max": a.t_max, "n_times": a.n_times, **tmo}
        for mode in params.modes:
            for w in a.workers:
                m = a.strong_tasks if mode == "strong" else a.weak_tasks_per_worker * w
                out.append(("throughput", mode, w, f"throughput-w{w}-M{m}", scaling.throughput_task,
                            {"n_workers": w, "n_tasks": m, **common}))
    if (b := params.mpi) is not None:
        run = {k: v for k, v in b.model_dump(include={"m2", "lam", "n_traj", "n_steps"}).items() if v is not None}
        for mode in params.modes:
            for r in b.ranks:
                py, px = scaling.process_grid(r)
                shape = [b.strong_L] * 2 if mode == "strong" else [b.weak_local * py, b.weak_local * px]
                out.append(("mpi_hmc", mode, r, f"mpi-r{r}-L{shape[0]}x{shape[1]}", scaling.mpi_hmc_task,
                            {"n_ranks": r, "spec": {"L": shape, "dims": [py, px], **run}, "launcher": b.launcher,
                             **tmo}))
    if (c := params.training) is not None:
        common = {"n_steps": c.n_steps, "warmup_steps": c.warmup_steps, "L": c.L, "n_layers": c.n_layers,
                  "hidden": list(c.hidden), "kernel_size": c.kernel_size, "m2": c.m2, "lam": c.lam,
                  "platform": c.platform, **tmo}
        for mode in params.modes:
            for d in c.devices:
                batch = c.strong_batch if mode == "strong" else c.weak_batch_per_device * d
                out.append(("training", mode, d, f"train-d{d}-B{batch}", scaling.training_task,
                            {"n_devices": d, "batch_size": batch, **common}))
    return out


#: results that may be NaN, "not measured": the cores other processes kept busy, when the host was not sampled
#: (``scaling.host_facts(sample_s=0)``), in each point and in every curve of ``curves``
NOT_MEASURED = ("background_busy_cores", "*/background_busy_cores")


def build(params: Params) -> list[Task]:
    tasks: list[Task] = []
    seen: set[str] = set()
    curves: dict[str, dict[str, Any]] = {}
    for part, mode, r, name, fn, kw in _points(params):
        curves.setdefault(f"{part}-{mode}", {"part": part, "mode": mode, "points": []})["points"].append([r, name])
        if name in seen:  # the same measurement serves both curves
            continue
        seen.add(name)
        tasks.append(Task(name, fn, kw, deps=(tasks[-1].name,) if tasks else (), nan_ok=NOT_MEASURED))
    tasks.append(Task("curves", scaling.scaling_curves, {"curves": curves, "threshold": params.efficiency_threshold},
                      deps=tuple(t.name for t in tasks), nan_ok=NOT_MEASURED))
    return tasks


# ------------------------------------------------------------------------------------------------ report
def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _sizes(part: str, mode: str, p: dict[str, Any]) -> str:
    """The work of one measurement (its task's parameters): chains and tasks, lattice, or flow and batch."""
    if part == "throughput":
        count = p["n_tasks"] if mode == "strong" else f"{p['n_tasks'] // p['n_workers']} per worker"
        return f"ED quenches: {count}, {p['model']} N = {p['n_sites']}"
    if part == "mpi_hmc":
        (ly, lx), (py, px) = p["spec"]["L"], p["spec"]["dims"]
        return f"L = {ly} x {lx}" if mode == "strong" else f"{ly // py} x {lx // px} sites per rank"
    return f"batch {p['batch_size']}, L = {p['L']}" if mode == "strong" else \
        f"{p['batch_size'] // p['n_devices']} per device, L = {p['L']}"


#: what each part measures (the time of :data:`olrg_hpc.scaling.PARTS`), for the "What was computed" table
MEASURED = {"throughput": "wall-clock seconds of the batch of exact quench tasks (one HDF5 shard each) through the "
                          "runner on a LocalCluster of w single-threaded workers",
            "mpi_hmc": "wall-clock seconds per molecular-dynamics step (slowest rank) of the MPI HMC for 2D phi^4, "
                       "the lattice split over r ranks",
            "training": "wall-clock seconds per reverse-KL step of a Real-NVP flow for 2D phi^4, the batch sharded "
                        "over d devices (compilation excluded)"}


def _computed(curves: dict[str, dict[str, Any]], params: dict[str, dict[str, Any]], host: dict[str, Any],
              threshold: float) -> list[list[str]]:
    rows = []
    for part in scaling.PARTS:
        mine = {n: c for n, c in curves.items() if _text(c["part"]) == part}
        if not mine:
            continue
        rows.append([part, MEASURED[part]])
        for name, c in sorted(mine.items()):
            tasks = [_text(t) for t in c["tasks"]]
            work = [_sizes(part, _text(c["mode"]), params[t]) for t in tasks if t in params]
            where = ", ".join(f"{int(r)}" for r in c["resources"])
            rows.append([f"{name}: {scaling.PARTS[part]['resource']} {where}",
                         "; ".join(dict.fromkeys(work)) if work else ", ".join(tasks)])
    rows += [["host", f"{_text(host.get('host', '?'))}: {int(host.get('cpu_count', 0))} CPUs, "
                      f"{int(host.get('usable_cpus', 0))} usable, {int(host.get('physical_cores', 0))} physical cores"],
             ["curves", "strong (fixed total work): speed-up S(r) = r0 T(r0) / T(r), efficiency E = S / r; weak (work "
                        "proportional to r): E(r) = T(r0) / T(r); r0 the smallest count measured"],
             ["target", f"efficiency E >= {threshold:g} (the study's efficiency_threshold)"],
             ["timings", "wall clock, the fastest of the repeats: other processes on the host slow them (the cores "
                         "they kept busy are recorded per point)"]]
    return rows


def _verdict(c: dict[str, Any], threshold: float, unit: str) -> list[Any]:
    r, e = [int(v) for v in c["resources"]], [float(v) for v in c["efficiency"]]
    stop = int(c["stops_at"])
    met = [ri for ri, ei in zip(r, e, strict=True) if ri < stop or not stop]
    if not stop:
        word = f"met up to {r[-1]} {unit} (the largest measured)"
    elif met:
        word = f"met up to {met[-1]}, missed from {stop} {unit}"
    else:
        word = f"missed from {stop} {unit}"
    return [", ".join(f"{ri}: {sig3(ei)}" for ri, ei in zip(r, e, strict=True)), word,
            "-" if not stop else _text(c["reason"])]


def report(study_file: Path, out_dir: Path) -> WorkflowReport:
    """What was computed; the verdict per curve (efficiency against the study's target, and why it stops); every
    measured point; per part one figure (strong: speed-up with the ideal line; weak: efficiency with ideal 1 and
    the target) where its curves have two or more points."""
    import json

    import h5py
    import matplotlib.pyplot as plt
    import numpy as np

    rep = WorkflowReport()
    rows: list[list[Any]] = []
    verdicts: list[list[Any]] = []
    with h5py.File(study_file, "r") as f:
        g = f["tasks"]["curves"]
        threshold = float(g["threshold"][()])
        host = {k: g["host"][k][()] for k in g["host"]}
        cores = int(host.get("usable_cpus", 0))
        curves = {name: {k: (v[()] if isinstance(v, h5py.Dataset) else None) for k, v in g[name].items()}
                  for name in g if name not in ("threshold", "host")}
        params = {n: json.loads(f["tasks"][n].attrs["params"]) for n in f["tasks"]
                  if n != "curves" and "params" in f["tasks"][n].attrs}
    rep.tables.append(Table(COMPUTED, ["item", "value"], _computed(curves, params, host, threshold)))
    for part, keys in scaling.PARTS.items():
        mine = {n: c for n, c in curves.items() if _text(c["part"]) == part}
        if not mine:
            continue
        for name, c in sorted(mine.items()):
            verdicts.append([name, *_verdict(c, threshold, keys["resource"])])
        plotted = {n: c for n, c in mine.items() if len(c["resources"]) >= 2}  # one point: the tables say it
        if plotted:
            rep.figures.append(_figure(plt, np, out_dir, part, plotted, params, host, threshold))
        for name, c in sorted(mine.items()):
            for i, res in enumerate(c["resources"]):
                note = []
                if "halo_share" in c and c["halo_share"] is not None:
                    note.append(f"halo {100 * c['halo_share'][i]:.0f}%")
                if "overhead_share" in c and c["overhead_share"] is not None:
                    note.append(f"outside tasks {100 * c['overhead_share'][i]:.0f}%")
                if "per_device_batch" in c and c["per_device_batch"] is not None:
                    note.append(f"{c['per_device_batch'][i]:g}/device")
                note.append(f"others busy {c['background_busy_cores'][i]:.1f} cores")
                if "repeat_spread" in c and c["repeat_spread"] is not None and c["repeat_spread"][i] > 1.1:
                    note.append(f"repeats x{c['repeat_spread'][i]:.2f}")
                rows.append([name, int(res), float(c["seconds"][i]), f"{sig3(c['rate'][i])} {keys['rate_unit']}",
                             float(c["speedup"][i]), float(c["efficiency"][i]), ", ".join(note)])
    rep.tables.append(Table(f"Verdict per curve: efficiency against the target E >= {threshold:g} on "
                            f"{_text(host.get('host', '?'))} ({cores} usable cores)",
                            ["curve", "efficiency at each count", "target", "why it stops"], verdicts))
    rep.tables.append(Table("Scaling measurements (wall-clock time: throughput s per batch, MPI s per MD step, "
                            "training s per step; the fastest of the repeats)",
                            ["curve", "resources", "time (s)", "rate", "speed-up", "efficiency", "notes"], rows))
    return rep


def _figure(plt: Any, np: Any, out_dir: Path, part: str, mine: dict[str, dict[str, Any]],
            params: dict[str, dict[str, Any]], host: dict[str, Any], threshold: float) -> Path:
    """Strong: speed-up vs resources with the ideal line; weak: efficiency with ideal 1; both with the target."""
    keys = scaling.PARTS[part]
    cores = int(host.get("usable_cpus", 0))
    modes = [m for m in ("strong", "weak") if any(_text(c["mode"]) == m for c in mine.values())]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.2 * len(modes), 4.0), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        c = next(c for c in mine.values() if _text(c["mode"]) == mode)
        r = np.asarray(c["resources"], dtype=float)
        work = [_sizes(part, mode, params[_text(t)]) for t in c["tasks"] if _text(t) in params]
        size = f", {work[0]}" if work and len(set(work)) == 1 else ""
        if mode == "strong":
            ax.plot(r, c["speedup"], "o-", lw=2, label="measured")
            ax.plot(r, r, "k--", lw=1, label="ideal")
            ax.plot(r, threshold * r, ":", color="tab:red", lw=1, label=f"target: efficiency {threshold:g}")
            ax.set_ylabel(f"speed-up  (T({r[0]:g}) x {r[0]:g} / T)")
        else:
            ax.plot(r, c["efficiency"], "o-", lw=2, label="measured")
            ax.axhline(1.0, color="k", ls="--", lw=1, label="ideal")
            ax.axhline(threshold, color="tab:red", ls=":", lw=1, label=f"target: efficiency {threshold:g}")
            ax.set_ylim(0, max(1.15, float(np.max(c["efficiency"])) * 1.1))
            ax.set_ylabel(f"efficiency  T({r[0]:g}) / T")
        ax.set_title(f"{part}: {mode} scaling{size}", fontsize=9)
        if cores and r[0] <= cores <= r[-1]:
            ax.axvline(cores, color="gray", ls="-.", lw=1, label=f"{cores} usable cores")
        ax.set_xscale("log", base=2)
        ax.set_xticks(r, [f"{v:g}" for v in r])
        ax.set_xlabel(keys["resource"])
        ax.legend(fontsize=7)
    busy = max(float(np.max(c["background_busy_cores"])) for c in mine.values())
    fig.suptitle(f"{_text(host.get('host', '?'))}: {cores} usable cores; other processes kept up to {busy:.1f} "
                 "busy just before a measurement (wall-clock timings)", fontsize=9)
    fig.tight_layout()
    path = out_dir / f"scaling-{part}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
