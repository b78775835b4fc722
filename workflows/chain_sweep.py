"""Spin-chain quench sweep: (model, N, couplings) as independent tasks, gathered and compared.

Graph: one ``quench`` task per (model, N, couplings, method) -> one ``collect`` task per model that
gathers the C(t) = <Z_1 Z_2>(t) curves (and, where a point was computed both by exact diagonalization
and by free fermions, their largest difference) -> the study file -> figures of C(t) and profiles.
Optionally (``tobc:``) one task per (model, couplings, block size n) with the exact time-ordered
boundary correlations of orders 0..K on seeded times and signs: the OLRG training targets. Report: what was
computed, the verdict of ED against free fermions where a point has both, C(t) per model and the points' table.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Literal

import h5py
import numpy as np
from pydantic import Field, field_validator, model_validator

from olrg_hpc.config import Strict
from olrg_hpc.report import COMPUTED, Table, WorkflowReport, sig3
from olrg_hpc.spins import quench, tobc
from olrg_hpc.spins.models import MODELS, ModelName
from olrg_hpc.tasks import Task

ED_MAX_SITES = 20
#: a TOBC sample of order k < max_order has times only in its first k columns: the rest is NaN padding
#: (olrg_hpc.spins.tobc.TOBCInputs), declared so to the finite-result check (Task.nan_ok)
TOBC_PADDING = ("times",)


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
                                   "grid": tb.grid}, nan_ok=TOBC_PADDING))
    for model in dict.fromkeys(p["model"] for p in points(params)):
        deps = tuple(t.name for t in tasks if t.params.get("model") == model and t.fn is quench.quench_task)
        tasks.append(Task(f"collect-{model}", quench.collect_curves, {}, deps=deps))
    return tasks


#: ED and free fermions are both exact for the TFIM: they must agree to rounding (observed ~1e-13 at N <= 12)
AGREE_TOL = 1e-10


def _params(g: h5py.Group) -> dict:
    return json.loads(g.attrs["params"]) if "params" in g.attrs else {}


def _couplings(p: dict) -> dict[str, float]:
    """All couplings of a point, the model's defaults filled in."""
    return {**dict(MODELS[p["model"]].couplings), **p["couplings"]}


def _point_text(c: dict[str, float]) -> str:
    return ", ".join(f"{k} = {v:g}" for k, v in c.items())


def _computed(quench: dict[str, dict], tobc_tasks: list[dict]) -> list[list[str]]:
    rows: list[list[str]] = []
    first = next(iter(quench.values()))
    for model in dict.fromkeys(p["model"] for p in quench.values()):
        mine = [p for p in quench.values() if p["model"] == model]
        by_n: dict[int, set[str]] = {}
        for p in mine:
            by_n.setdefault(p["n_sites"], set()).add("ED" if p["method"] == "ed" else "free fermions")
        sizes: dict[str, list[int]] = {}
        for n, methods in sorted(by_n.items()):
            sizes.setdefault(" and ".join(sorted(methods)), []).append(n)
        rows += [[model, MODELS[model].description + ", open chain"],
                 [f"{model}: chain lengths N", "; ".join(f"{', '.join(map(str, ns))} ({how})"
                                                        for how, ns in sizes.items())],
                 [f"{model}: couplings", "; ".join(dict.fromkeys(_point_text(_couplings(p)) for p in mine))]]
    start = "|0...0> (all Z = +1)" if first["initial"] == "up" else "|+...+> (all X = +1)"
    rows += [["quench", f"from {start}, {first['n_times']} times in [0, {first['t_max']:g}]"],
             ["numbers", "C(t) = <Z_1 Z_2>(t) on the first bond (figures: <S^z_1 S^z_2> = C/4), the ground-state "
                         "energy E0; ED: exact diagonalization, Krylov time evolution; free fermions: the exact "
                         "TFIM solution (Jordan-Wigner)"]]
    if tobc_tasks:
        t = tobc_tasks[0]
        rows.append(["TOBC targets (OLRG)", f"exact time-ordered boundary correlations of blocks n = "
                     f"{', '.join(str(n) for n in sorted({p['n_sites'] for p in tobc_tasks}))} at every point's "
                     f"couplings: orders 0..{t['max_order']}, {t['n_per_order']} samples per order, T = {t['T']:g}"])
    return rows


def _verdict_rows(tasks: h5py.Group, quench: dict[str, dict]) -> list[list[str]]:
    """ED against free fermions where a point has both: largest difference of every stored curve and of E0."""
    rows = []
    for name, p in quench.items():
        twin = name.removesuffix("-ed") + "-free_fermion"
        if p["method"] != "ed" or twin not in quench:
            continue
        a, b = tasks[name], tasks[twin]
        curves = max(float(np.max(np.abs(a[k][()] - b[k][()]))) for k in ("zz", "x"))
        e0 = abs(float(a["e0"][()]) - float(b["e0"][()]))
        worst = max(curves, e0)
        rows.append([f"{p['model']} N = {p['n_sites']}: {_point_text(_couplings(p))}", sig3(curves), sig3(e0),
                     f"agrees (< {AGREE_TOL:g})" if worst < AGREE_TOL else f"DISAGREES ({sig3(worst)})"])
    return rows


def report(study_file: Path, out_dir: Path) -> WorkflowReport:
    """What was computed; the verdict of ED against free fermions; per model one figure (a panel per coupling
    set, <S^z_1 S^z_2>(t) for every N, ED solid, free fermions dashed); the points' E0 and C(t)."""
    import matplotlib.pyplot as plt

    rep = WorkflowReport()
    rows = []
    with h5py.File(study_file, "r") as f:
        tasks = f["tasks"]
        params = {n: _params(tasks[n]) for n in sorted(tasks)}
        quench = {n: p for n, p in params.items() if "method" in p}
        quench = dict(sorted(quench.items(), key=lambda kv: (kv[1]["model"], kv[1]["n_sites"], kv[0])))
        if not quench:
            return rep
        tobc_tasks = [p for n, p in params.items() if n.startswith("tobc-")]
        rep.tables.append(Table(COMPUTED, ["item", "value"], _computed(quench, tobc_tasks)))
        verdicts = _verdict_rows(tasks, quench)
        rep.tables.append(Table(
            "Verdict: ED against free fermions (both exact for the TFIM): largest |difference| over bonds, sites and "
            f"times of <Z_i Z_i+1>(t) and <X_i>(t), and of E0; they agree below {AGREE_TOL:g}",
            ["point", "max |diff| of the curves", "|diff| of E0", "verdict"],
            verdicts or [["no point computed by both methods", "-", "-", "no exact comparison"]]))
        for model in dict.fromkeys(p["model"] for p in quench.values()):
            mine = {n: p for n, p in quench.items() if p["model"] == model}
            panels = list(dict.fromkeys(_point_text(_couplings(p)) for p in mine.values()))
            color = {n: f"C{i}" for i, n in enumerate(sorted({p["n_sites"] for p in mine.values()}))}
            fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True)
            for ax, panel in zip(axes[0], panels, strict=True):
                sizes = []
                for n, p in mine.items():
                    if _point_text(_couplings(p)) != panel:
                        continue
                    ff = p["method"] == "free_fermion"
                    g = tasks[n]
                    ax.plot(g["times"][()], g["zz"][()][:, 0] / 4, ls="--" if ff else "-", lw=1.2 if ff else 2.5,
                            color=color[p["n_sites"]], alpha=1.0 if ff else 0.5,
                            label=f"N = {p['n_sites']} {'free fermions' if ff else 'ED'}")
                    sizes.append(p["n_sites"])
                ax.set_title(f"{model}: {panel}\nN = {', '.join(map(str, sorted(set(sizes))))}", fontsize=9)
                ax.set_xlabel("t")
                ax.legend(fontsize=6)
            axes[0][0].set_ylabel(r"$\langle S^z_1 S^z_2\rangle(t) = C(t)/4$")
            fig.tight_layout()
            path = out_dir / f"quench-{model}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            rep.figures.append(path)
        points: dict[str, list[str]] = {}
        for n, p in quench.items():  # one row per point: ED's numbers where it ran (the verdict compares the two)
            points.setdefault(f"{p['model']} N = {p['n_sites']}: {_point_text(_couplings(p))}", []).append(n)
        for label, names in points.items():
            g = tasks[names[0]]
            c = g["zz"][()][:, 0] / 4
            drift = float(np.max(np.abs(g["energy"][()] - g["energy"][()][0]))) if "energy" in g else float("nan")
            methods = ", ".join("ED" if quench[n]["method"] == "ed" else "free fermions" for n in names)
            rows.append([label, methods, float(g["e0"][()]), float(g["e0"][()]) / quench[names[0]]["n_sites"],
                         float(c[-1]), float(np.min(c)), drift])
    rep.tables.append(Table("Quench points: ground-state energy and <S^z_1 S^z_2>(t) = C(t)/4 (ED conserves <H>(t): "
                            "its largest drift is the time evolution's error; - where only free fermions ran)",
                            ["point", "methods", "E0", "E0 / N", "C(t_max)/4", "min C/4",
                             "max |<H>(t) - <H>(0)|"], rows))
    return rep
