"""Coarse-lattice HMC ensembles of 2D phi^4 as parallel tasks, pooled and measured per coupling point.

Graph: ``replicas`` independent ``ens`` tasks per point (own seeds; each batches ``n_chains`` chains in one
jitted HMC scan and stores configurations, chunked and compressed, plus histories) -> one ``collect``
task per point pooling the replicas (Gamma-method errors with chains as replicas) -> study file -> report
with <|M|>, chi2, Binder cumulant, <phi^2>, tau_int and acceptance per point. The stored configurations
feed flow training (coarse-to-fine priors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from olrg_hpc.config import Strict
from olrg_hpc.lattice import ensemble
from olrg_hpc.report import Table, WorkflowReport, value_error
from olrg_hpc.tasks import Task


class Point(Strict):
    L: int = Field(ge=2, description="lattice extent (L x L, periodic)")
    m2: float | None = Field(None, description="tutorial convention mass term")
    beta: float | None = Field(None, gt=0, description="beta/lambda convention hopping")
    lam: float = Field(ge=0)

    @model_validator(mode="after")
    def _one_convention(self) -> Point:
        if (self.m2 is None) == (self.beta is None):
            raise ValueError("give either m2 (tutorial convention) or beta (beta/lambda convention), not both")
        return self

    def label(self) -> str:
        c = f"m2{self.m2:g}" if self.m2 is not None else f"beta{self.beta:g}"
        return f"L{self.L}-{c}-lam{self.lam:g}"

    def as_dict(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class HMCSettings(Strict):
    tau: float = Field(1.0, gt=0)
    n_steps: int = Field(10, ge=1)
    integrator: Literal["leapfrog", "omelyan"] = "leapfrog"
    tau_jitter: float = Field(0.0, ge=0, lt=1)


class HMCChains(Strict):
    """Batched HMC chains measured every ``meas_every`` trajectories (the phi^4 workflows share this block)."""

    n_chains: int = Field(8, ge=1, description="chains batched in each task")
    n_therm: int = Field(200, ge=0)
    n_traj: int = Field(1000, ge=10)
    meas_every: int = Field(1, ge=1)
    hmc: HMCSettings = HMCSettings()

    @model_validator(mode="after")
    def _measured_evenly(self) -> HMCChains:
        if self.n_traj % self.meas_every:
            raise ValueError(f"n_traj ({self.n_traj}) must be a multiple of meas_every ({self.meas_every})")
        return self


class Params(HMCChains):
    points: list[Point] = Field(min_length=1)
    replicas: int = Field(2, ge=1, description="independent tasks per point")
    store_configs: bool = True


def build(params: Params) -> list[Task]:
    tasks: list[Task] = []
    for p in params.points:
        reps = []
        for r in range(params.replicas):
            t = Task(f"ens-{p.label()}-r{r}", ensemble.hmc_ensemble,
                     {"point": p.as_dict(), "n_chains": params.n_chains, "n_therm": params.n_therm,
                      "n_traj": params.n_traj, "meas_every": params.meas_every, "store_configs": params.store_configs,
                      "replica": r, **params.hmc.model_dump()})
            tasks.append(t)
            reps.append(t.name)
        tasks.append(Task(f"collect-{p.label()}", ensemble.combine_replicas, {}, deps=tuple(reps)))
    return tasks


def report(study_file: Path, out_dir: Path) -> WorkflowReport:
    import h5py
    import matplotlib.pyplot as plt
    import numpy as np

    rep = WorkflowReport()
    rows = []
    fig, ax = plt.subplots(figsize=(6, 4))
    with h5py.File(study_file, "r") as f:
        for name in sorted(f["tasks"]):
            if not name.startswith("collect-"):
                continue
            g = f["tasks"][name]
            s = {k: float(v[()]) for k, v in g["summary"].items()}
            label = name.removeprefix("collect-")

            def pm(key: str, s: dict = s) -> str:
                return value_error(s[key], s[key + "_err"])

            rows.append([label, float(g["acceptance"][()]), pm("abs_M"), pm("chi2"), pm("chi2_connected"),
                         pm("binder"), pm("phi2"), pm("tau_int_M2"), pm("exp_minus_dH")])
            m = np.asarray(g["M"][()]).ravel()
            ax.hist(m, bins=60, density=True, histtype="step", label=label)
    ax.set_xlabel("M = (1/V) sum phi")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "magnetization_histograms.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    rep.figures.append(path)
    rep.tables.append(Table("HMC ensembles (errors: Gamma method, S = 1.5, chains as replicas)",
                            ["point", "acceptance", "<|M|>", "chi2 = V<M^2>", "chi2 connected", "Binder U",
                             "<phi^2>", "tau_int(M^2)", "<exp(-dH)>"], rows))
    return rep
