"""Spin-chain quench sweep: (model, N, couplings) as independent tasks, gathered and compared.

Graph: one ``quench`` task per (model, N, couplings, method) -> one ``collect`` task per model that
gathers the C(t) = <Z_1 Z_2>(t) curves (and, where a point was computed both by exact diagonalization
and by free fermions, their largest difference) -> the study file -> figures of C(t) and profiles.
Optionally (``tobc:``) one task per (model, couplings, block size n) with the exact time-ordered
boundary correlations of orders 0..K on seeded times and signs: the OLRG training targets.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from olrg_hpc.config import Strict
from olrg_hpc.report import Table, WorkflowReport
from olrg_hpc.spins import quench, tobc
from olrg_hpc.spins.models import MODELS, ModelName
from olrg_hpc.tasks import Task

ED_MAX_SITES = 20


class Sweep(Strict):
    model: ModelName
    n_sites: list[int] = Field(min_length=1)
    couplings: dict[str, list[float]] = Field(default_factory=dict, description="grid: name -> values")
    methods: list[Literal["ed", "free_fermion"]] = Field(default_factory=lambda: ["ed"], min_length=1)

    @field_validator("n_sites")
    @classmethod
    def _sizes(cls, v: list[int]) -> list[int]:
        bad = [n for n in v if n < 2]
        if bad:
            raise ValueError(f"chain lengths of at least 2 sites (got {bad[0]})")
        return v

    @model_validator(mode="after")
    def _check(self) -> Sweep:
        allowed = MODELS[self.model].coupling_names
        for name, values in self.couplings.items():
            if name not in allowed:
                raise ValueError(f"coupling {name!r} is not a coupling of {self.model} (allowed: {', '.join(allowed)})")
            if not values:
                raise ValueError(f"coupling {name!r} needs at least one value")
        if "free_fermion" in self.methods and not MODELS[self.model].free_fermion:
            exact = [k for k, m in MODELS.items() if m.free_fermion]
            raise ValueError(f"method free_fermion is exact only for {', '.join(exact)}, not {self.model}")
        if "ed" in self.methods and max(self.n_sites) > ED_MAX_SITES:
            raise ValueError(f"method ed is limited to {ED_MAX_SITES} sites (got n_sites {max(self.n_sites)}); "
                             "use free_fermion for long TFIM chains")
        return self


class TobcTargets(Strict):
    """Exact TOBCs of small blocks (OLRG training targets): one task per (model, couplings, n)."""

    n_sites: list[int] = Field(min_length=1, description="block sizes (dense: at most 12 sites)")
    max_order: int = Field(2, ge=0, le=8)
    n_per_order: int = Field(20, ge=1)
    T: float = Field(1.0, gt=0)
    grid: int | None = Field(None, ge=2, description="draw times from linspace(0, T, grid)")

    @field_validator("n_sites")
    @classmethod
    def _small(cls, v: list[int]) -> list[int]:
        bad = [n for n in v if not 2 <= n <= 12]
        if bad:
            raise ValueError(f"block sizes from 2 to 12 sites (got {bad[0]})")
        return v


class Params(Strict):
    sweeps: list[Sweep] = Field(min_length=1)
    tobc: TobcTargets | None = Field(None, description="exact TOBC targets for every ED sweep point's couplings")
    t_max: float = Field(4.0, gt=0)
    n_times: int = Field(81, ge=2, le=100_000)
    initial: Literal["up", "plus"] = "up"
    profile_sites: int = Field(8, ge=1, description="bonds/sites from the left edge whose curves are stored")


def points(params: Params) -> list[dict]:
    """Every (model, n, couplings, method) of the sweep, in a stable order."""
    out = []
    for sw in params.sweeps:
        names = list(sw.couplings)
        for n, values, method in itertools.product(sw.n_sites, itertools.product(*sw.couplings.values()),
                                                   sw.methods):
            out.append({"model": sw.model, "n_sites": n, "couplings": dict(zip(names, values, strict=True)),
                        "method": method})
    return out


def task_name(p: dict) -> str:
    c = "-".join(f"{k}{v:g}" for k, v in sorted(p["couplings"].items()))
    return f"{p['model']}-N{p['n_sites']}-{c}-{p['method']}".replace("--", "-").rstrip("-")


def build(params: Params) -> list[Task]:
    tasks = []
    for p in points(params):
        tasks.append(Task(task_name(p), quench.quench_task,
                          {**p, "t_max": params.t_max, "n_times": params.n_times, "initial": params.initial,
                           "profile_sites": params.profile_sites}))
    if params.tobc is not None:
        tb = params.tobc
        seen = set()
        for p in points(params):
            key = (p["model"], tuple(sorted(p["couplings"].items())))
            if key in seen:
                continue
            seen.add(key)
            for n in tb.n_sites:
                c = "-".join(f"{k}{v:g}" for k, v in sorted(p["couplings"].items()))
                tasks.append(Task(f"tobc-{p['model']}-n{n}-{c}-K{tb.max_order}", tobc.tobc_task,
                                  {"model": p["model"], "n_sites": n, "couplings": p["couplings"],
                                   "max_order": tb.max_order, "n_per_order": tb.n_per_order, "T": tb.T,
                                   "grid": tb.grid}))
    for model in dict.fromkeys(p["model"] for p in points(params)):
        deps = tuple(t.name for t in tasks if t.params.get("model") == model and t.fn is quench.quench_task)
        tasks.append(Task(f"collect-{model}", quench.collect_curves, {}, deps=deps))
    return tasks


def _coupling_label(task: str) -> str:
    """'tfim-N12-J1-h0.5-ed' -> 'J1-h0.5' (the panel a curve belongs to)."""
    parts = task.split("-")
    return "-".join(p for p in parts[2:-1])


def report(study_file: Path, out_dir: Path) -> WorkflowReport:
    """One figure per model: a panel per coupling set with C(t)/4 for every N (ED solid, free fermions dashed)."""
    import h5py
    import matplotlib.pyplot as plt

    rep = WorkflowReport()
    rows = []
    with h5py.File(study_file, "r") as f:
        for name in sorted(f["tasks"]):
            if not name.startswith("collect-"):
                continue
            g = f["tasks"][name]
            labels = [s.decode() if isinstance(s, bytes) else str(s) for s in g["labels"][()]]
            times, curves, e0 = g["times"][()], g["c12"][()], g["e0"][()]
            panels = sorted({_coupling_label(lab) for lab in labels})
            fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True)
            for ax, panel in zip(axes[0], panels, strict=True):
                for lab, c in zip(labels, curves, strict=True):
                    if _coupling_label(lab) != panel:
                        continue
                    n = lab.split("-")[1]
                    ff = lab.endswith("free_fermion")
                    ax.plot(times, c / 4, ls="--" if ff else "-", lw=1.2 if ff else 2.0, alpha=0.9,
                            label=f"{n} {'free fermions' if ff else 'ED'}")
                ax.set_title(f"{name.removeprefix('collect-')}  {panel}", fontsize=9)
                ax.set_xlabel("t")
                ax.legend(fontsize=6)
            axes[0][0].set_ylabel(r"$\langle S^z_1 S^z_2\rangle(t)$ from $|0\dots0\rangle$")
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            rep.figures.append(path)
            for lab, c, e in zip(labels, curves, e0, strict=True):
                rows.append([lab, float(e), float(c[-1] / 4), float(np.min(c) / 4)])
            if "ed_vs_ff_max_diff" in g:
                rows.append([f"{name}: max |ED - free fermion|", float(np.max(g["ed_vs_ff_max_diff"][()])), "", ""])
    rep.tables.append(Table("Quench sweep: ground-state energy and <S^z_1 S^z_2>",
                            ["point", "E0", "C(t_max)/4", "min C/4"], rows))
    return rep
