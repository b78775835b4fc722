"""Coarse-lattice HMC ensembles of 2D phi^4 as parallel tasks, pooled and measured per coupling point.

Graph: ``replicas`` independent ``ens`` tasks per point (own seeds; each batches ``n_chains`` chains in one
jitted HMC scan and stores configurations, chunked and compressed, plus histories) -> one ``collect``
task per point pooling the replicas (Gamma-method errors with chains as replicas) -> study file -> report:
what was computed, a verdict per point (<exp(-dH)> = 1 always; at lam = 0 the free field's exact <phi^2> and
chi2; acceptance, tau_int and run length), <|M|>, chi2, Binder cumulant and <phi^2> per point, M histograms.
The stored configurations feed flow training (coarse-to-fine priors).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from olrg_hpc.config import Strict
from olrg_hpc.lattice import ensemble
from olrg_hpc.report import AGREE_SIGMA, COMPUTED, TENSION_SIGMA, Table, WorkflowReport, agreement, value_error
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


_OBSERVABLES = ("M = (1/V) sum_x phi_x in the field of each point's convention; <|M|>, chi2 = V <M^2>, connected "
                "chi2 = V (<M^2> - <|M|>^2), Binder U = 1 - <M^4> / (3 <M^2>^2), <phi^2>; tau_int(M^2) in "
                "measurements; errors: Gamma method (S = 1.5), chains as replicas")


def _pretty(point: dict[str, float]) -> str:
    """``L = 8: m2 = -4, lam = 8`` (the point's own convention)."""
    return f"L = {int(point['L'])}: " + ", ".join(f"{k} = {point[k]:g}" for k in ("m2", "beta", "lam") if k in point)


def free_field_exact(point: dict[str, float]) -> dict[str, float] | None:
    """Exact ``<phi^2>`` and ``chi2`` of a ``lam = 0`` point in its own field convention (``phi = c phi_tut``, so
    both scale with ``c^2``); ``None`` for an interacting point or an unstable free one (tutorial ``m2 <= 0``)."""
    from olrg_hpc.lattice.phi4 import free_field_values

    action, c = ensemble.action_for(point)
    if point["lam"] != 0 or action.m2 <= 0:
        return None
    L = int(point["L"])
    return {k: c**2 * v for k, v in free_field_values((L, L), action.m2).items()}


def _verdict(s: dict[str, float], exact: dict[str, float] | None, settings: dict) -> list[str]:
    """Agreement with the exact answers (pulls in standard deviations) and whether the run is long enough."""
    from olrg_hpc.flows.pipeline import MIN_CHAIN_TAUS, MIN_THERM_TAUS

    pulls = {"<exp(-dH)>": (s["exp_minus_dH"] - 1.0) / s["exp_minus_dH_err"]}
    cells = [f"{value_error(s['exp_minus_dH'], s['exp_minus_dH_err'])} vs 1"]
    for key, name in (("phi2", "<phi^2>"), ("chi2", "chi2")):
        if exact is None:
            cells.append("-")
        else:
            pulls[name] = (s[key] - exact[key]) / s[f"{key}_err"]
            cells.append(f"{value_error(s[key], s[f'{key}_err'])} vs {exact[key]:.4g}")
    tau = max(s["tau_int_M2"], 0.5)
    chain = settings["n_traj"] / settings["meas_every"] / tau
    therm = settings["n_therm"] / settings["meas_every"] / tau
    long_enough = chain >= MIN_CHAIN_TAUS and therm >= MIN_THERM_TAUS
    run = (f"{'long enough' if long_enough else 'too short for its errors'} ({chain:.0f} tau per chain, "
           f"{therm:.0f} of thermalisation)")
    return [*cells, agreement(pulls), value_error(s["tau_int_M2"], s["tau_int_M2_err"]), run]


def report(study_file: Path, out_dir: Path) -> WorkflowReport:
    """What was computed; per point the verdict (the exact answers: <exp(-dH)> = 1 always, <phi^2> and chi2 of
    the free field at lam = 0; acceptance, tau_int and run length); the observables; M histograms per point."""
    import json

    import h5py
    import matplotlib.pyplot as plt
    import numpy as np

    from olrg_hpc.flows.pipeline import MIN_CHAIN_TAUS, MIN_THERM_TAUS

    rep = WorkflowReport()
    rows, verdicts, hists = [], [], []
    with h5py.File(study_file, "r") as f:
        tasks = f["tasks"]
        labels = sorted((n.removeprefix("collect-") for n in tasks if n.startswith("collect-")),
                        key=lambda label: (int(label.split("-")[0].removeprefix("L")), label))  # by L
        settings: dict = {}
        for label in labels:
            g = tasks[f"collect-{label}"]
            replicas = sorted(n for n in tasks if n.startswith(f"ens-{label}-r"))
            settings = {**json.loads(tasks[replicas[0]].attrs["params"]), "replicas": len(replicas)}
            point = settings["point"]
            s = {k: float(v[()]) for k, v in g["summary"].items()}
            exact = free_field_exact(point)
            verdicts.append([_pretty(point), float(g["acceptance"][()]), *_verdict(s, exact, settings)])

            def pm(key: str, s: dict = s) -> str:
                return value_error(s[key], s[key + "_err"])

            rows.append([_pretty(point), pm("abs_M"), pm("chi2"), pm("chi2_connected"), pm("binder"), pm("phi2")])
            hists.append((_pretty(point), np.asarray(g["M"][()]).ravel(), exact, int(point["L"])))
    if not labels:
        return rep
    hmc = (f"{settings['n_chains']} chains x {settings['replicas']} replicas per point, {settings['n_therm']} "
           f"thermalisation + {settings['n_traj']} trajectories each, measured every {settings['meas_every']}; "
           f"tau = {settings['tau']:g}" + (f" +- {100 * settings['tau_jitter']:.0f}%" if settings["tau_jitter"] else "")
           + f", {settings['n_steps']} {settings['integrator']} steps")
    rep.tables.append(Table(COMPUTED, ["item", "value"], [
        ["model", "2D phi^4, periodic L x L; tutorial convention S = sum_x [-2 sum_mu phi_x phi_x+mu + (4 + m2) "
                  "phi_x^2 + lam phi_x^4], beta/lambda convention S = sum_x [-beta sum_mu chi_x chi_x+mu + "
                  "(1 - 2 lam) chi_x^2 + lam chi_x^4], chi = sqrt(2/beta) phi"],
        ["points", "; ".join(r[0] for r in rows)],
        ["sampling", f"HMC: {hmc}"],
        ["numbers", _OBSERVABLES],
        ["exact answers", "<exp(-dH)> = 1 for any action; at lam = 0 (free field, tutorial m2 > 0) <phi^2> = "
                          "(1/V) sum_p G(p) and chi2 = G(0), G(p) = 1 / [2 (p_hat^2 + m2)]"]]))
    rep.tables.append(Table(
        f"Verdict per point: the exact answers (agrees: every |pull| <= {AGREE_SIGMA:.0f} sigma; tension: <= "
        f"{TENSION_SIGMA:.0f}), tau_int(M^2) and run length (Gamma-method errors trustworthy from "
        f"{MIN_CHAIN_TAUS:.0f} tau_int per chain and {MIN_THERM_TAUS:.0f} of thermalisation)",
        ["point", "acceptance", "<exp(-dH)>", "<phi^2> (exact)", "chi2 (exact)", "agreement", "tau_int(M^2)",
         "run"], verdicts))
    rep.tables.append(Table("HMC ensembles: observables (field of each point's convention; errors: Gamma method, "
                            "S = 1.5, chains as replicas)",
                            ["point", "<|M|>", "chi2 = V<M^2>", "chi2 connected", "Binder U", "<phi^2>"], rows))
    cols = min(len(hists), 3)
    nrows = -(-len(hists) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    for ax, (title, m, exact, L) in zip(axes.ravel(), hists, strict=False):
        ax.hist(m, bins=60, density=True, histtype="step", lw=1.5, label="HMC")
        if exact is not None:  # M of the free field is Gaussian with <M^2> = chi2 / V
            sd = np.sqrt(exact["chi2"]) / L
            x = np.linspace(-4 * sd, 4 * sd, 200)
            ax.plot(x, np.exp(-0.5 * (x / sd) ** 2) / (sd * np.sqrt(2 * np.pi)), "k--", lw=1, label="exact (free)")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("M = (1/V) sum_x phi_x")
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(hists):]:
        ax.set_visible(False)
    axes[0][0].set_ylabel("density")
    fig.tight_layout()
    path = out_dir / "magnetization_histograms.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    rep.figures.append(path)
    return rep
