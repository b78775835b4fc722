"""Flow study: trivializing flows for 2D phi^4 from Gaussian and coarse-lattice priors, against plain HMC.

Graph, per fine point ``(L, beta, lam)`` (beta/lambda convention of arXiv:2310.03381):

1. ``ens-L<l>-beta<b>-rR``: ``ensembles.replicas`` HMC ensembles (configurations stored) in parallel at each
   point an ensemble prior draws from, ``(L/2, beta_coarse)`` for the coarse variants and ``(L, beta_prior)`` for
   ``same_L`` (:func:`olrg_hpc.lattice.ensemble.hmc_ensemble`) -> ``gather-L<l>-beta<b>``: configurations pooled,
   observables; a point that several variants or fine points need is run once;
2. training, one task per prior variant at equal ``steps x batch``: ``train-gaussian-L`` (N(0, 1) prior),
   ``train-coarse-L`` (interleaved coarse configurations), ``train-coarse_bilinear-L`` and
   ``train-coarse_noise-L`` (one coarse configuration plus noise sublattices, about its bilinear interpolation
   or about 0), ``train-same_L-L`` (one configuration at the same L and ``beta_prior``), ``train-warm-L``
   (Gaussian prior, parameters of ``pretrain-Ll``, a flow trained at the coarse
   point for ``warm_fraction`` of the steps; with ``training.ladder``, when the study also has the coarse point
   ``(L/2, beta_coarse)``, the parameters of that point's ``train-warm`` instead: 8 -> 16 -> 32 ..., every rung
   training the fine share of the steps; with ``training.ladder`` a coarse-prior flow likewise starts from the
   same variant's flow at ``(L/2, beta_coarse)`` when the study has that point, and trains the fine share; with
   ``training.rung: pretrain`` both start instead from a training at ``(L/2, beta_coarse)`` for the coarse share
   of the steps, ``pretrain-Ll`` and ``pretrain-<variant>-Ll``, so that every flow trains ``steps`` steps in all);
   each records acceptance and ESS versus training step and seconds and holds its trained parameters;
3. sampling in parallel: ``imh-<variant>-L`` (flow independent Metropolis-Hastings; ``imhN-<variant>-L`` the
   multiple-proposal chain with ``N`` candidates per step, for each ``N > 1`` in ``imh.candidates``),
   ``fhmc-<variant>-L``
   (flow-HMC, for ``flow_hmc.variants``; with ``flow_hmc.start: hmc``, the default, after ``hmc-L``, whose
   final configurations, mapped back by ``F^-1``, are its starting points), ``hmc-L`` (plain HMC on the fine
   lattice);
4. ``compare``: observables (|M|, chi2, Binder) with Gamma-method errors, tau_int(M^2), cost per
   independent chi2 sample (seconds per sample x 2 tau_int), pulls against HMC.

Report: acceptance and ESS versus training step and seconds per variant; tau_int and cost versus L per
sampler (with several L); observables with error bars per sampler; tables. Task functions live in
:mod:`olrg_hpc.flows.pipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from olrg_hpc.config import Strict
from olrg_hpc.flows import pipeline
from olrg_hpc.lattice import ensemble
from olrg_hpc.report import Table, WorkflowReport
from olrg_hpc.tasks import Task
from workflows.phi4_ensembles import HMCChains

Variant = Literal["gaussian", "coarse", "coarse_bilinear", "coarse_noise", "same_L", "warm", "multilevel"]


class Point(Strict):
    L: int = Field(ge=4, description="fine lattice extent (L x L, periodic, even)")
    beta: float = Field(gt=0, description="fine hopping coupling (beta/lambda convention)")
    beta_coarse: float | None = Field(None, gt=0, description="coupling of the L/2 prior lattice (default: beta)")
    beta_prior: float | None = Field(None, gt=0, description="coupling of the same-L prior ensemble (variant same_L; "
                                     "usually a smaller beta)")

    @model_validator(mode="after")
    def _even(self) -> Point:
        if self.L % 2:
            raise ValueError(f"L must be even: the coarse lattice is L/2 (got {self.L})")
        return self

    def fine(self, lam: float) -> dict[str, float]:
        return {"L": self.L, "beta": self.beta, "lam": lam}

    def coarse(self, lam: float) -> dict[str, float]:
        return {"L": self.L // 2, "beta": self.beta if self.beta_coarse is None else self.beta_coarse, "lam": lam}

    def prior(self, variant: str, lam: float) -> dict[str, float]:
        """The point of the HMC ensemble an ensemble-prior variant draws from."""
        if variant != "same_L":
            return self.coarse(lam)
        assert self.beta_prior is not None  # Params checks it
        return {"L": self.L, "beta": self.beta_prior, "lam": lam}


class FlowSettings(Strict):
    kind: Literal["z2", "tutorial"] = Field("z2", description="z2: Z2-equivariant couplings + global rescaling")
    n_layers: int = Field(4, ge=1, description="coupling layers (alternating checkerboard parity)")
    hidden: list[int] = Field(default_factory=lambda: [8], description="hidden channels of each coupling's net")
    kernel_size: int = Field(3, ge=1)
    free_field: bool = Field(False, description="z2 only: a trainable free-field layer (mass, normalisation) first, "
                             "in the flows with a Gaussian prior (gaussian, warm); never after an ensemble prior")
    sublattice: bool = Field(True, description="couplings with one head per sublattice of the 2 x 2 cell, in the "
                             "flows with a coarse-lattice prior (coarse, coarse_bilinear, coarse_noise), which puts "
                             "different things on the cell's four sites")
    pointwise: int = Field(0, ge=0, description="z2 only: a site-wise odd monotone map before every n-th coupling, "
                           "in every variant's flow (0: none)")

    @model_validator(mode="after")
    def _odd_kernel(self) -> FlowSettings:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {self.kernel_size})")
        for key in ("free_field", "pointwise"):
            if getattr(self, key) and self.kind != "z2":
                raise ValueError(f"{key} needs kind z2 (got kind {self.kind!r})")
        return self


class Ensembles(HMCChains):
    replicas: int = Field(2, ge=1, description="independent coarse HMC tasks per point")
    n_therm: int = Field(100, ge=0)
    n_traj: int = Field(400, ge=1)
    meas_every: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _enough_configs(self) -> Ensembles:
        if self.replicas * self.n_chains * (self.n_traj // self.meas_every) < 4:
            raise ValueError("the coarse prior draws 4 distinct configurations: store at least 4")
        return self


class Training(Strict):
    steps: int = Field(1000, ge=2, description="optimizer steps per variant (warm: coarse + fine together)")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-3, gt=0)
    cosine: bool = Field(True, description="cosine-anneal the learning rate to 0")
    metrics_every: int = Field(100, ge=1, description="steps between acceptance/ESS measurements")
    metrics_batch: int = Field(1024, ge=16, description="fresh flow samples per measurement")
    warm_fraction: float = Field(0.5, gt=0, lt=1, description="share of the warm variant's steps spent at L/2 "
                                 "(and of a laddered coarse-prior flow's)")
    ladder: bool = Field(True, description="a warm flow starts from the study's warm flow at (L/2, beta_coarse) "
                         "when there is one (8 -> 16 -> 32 ...), else from a fresh pretraining at L/2; a coarse-prior "
                         "flow (coarse, coarse_bilinear, coarse_noise) from the same variant's flow there, if any, "
                         "training the fine share of the steps")
    rung: Literal["final", "pretrain"] = Field(
        "final", description="with ladder, what a fine flow starts from. final: the study's flow of the same variant "
        "at (L/2, beta_coarse), which trained its own full steps, all counted on the step axis; pretrain: a training "
        "of that variant at (L/2, beta_coarse) for the coarse share of the steps (warm_fraction), so that every "
        "flow at a point trains `steps` steps in all, as the Gaussian flow does (a coarse-prior flow's pretraining "
        "takes its prior from the study's point at L/2; without that point the flow trains from scratch)")

    @model_validator(mode="after")
    def _split(self) -> Training:
        if self.steps % self.metrics_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of metrics_every ({self.metrics_every})")
        if self.rung == "pretrain" and not self.ladder:
            raise ValueError("rung 'pretrain' needs ladder: true (without a ladder no flow starts from L/2 but warm)")
        return self

    def warm_split(self) -> tuple[int, int]:
        """(coarse steps, fine steps) of the warm variant, each a multiple of ``metrics_every``."""
        n = self.steps // self.metrics_every
        k = min(max(round(self.warm_fraction * n), 1), n - 1)
        return k * self.metrics_every, (n - k) * self.metrics_every


class IMH(Strict):
    n_chains: int = Field(16, ge=1)
    n_steps: int = Field(2000, ge=10, description="Metropolis steps per chain after thermalisation")
    n_therm: int = Field(50, ge=0)
    block: int | None = Field(None, ge=1, description="steps whose proposals go through the flow in one call "
                              "(default: about 65536 sites per call); the chains do not depend on it")
    candidates: list[int] = Field([1], min_length=1, description="one flow-MH run per entry: 1 is the plain "
                                  "chain (task imh-...), N > 1 the multiple-proposal chain with N candidates per "
                                  "step and Rao-Blackwellised estimates (task imhN-...), whose n_steps and n_therm "
                                  "are divided by N - 1 (rounded up) so that it draws as many proposals; for the "
                                  "variants without a prior ensemble (gaussian, warm, multilevel)")

    @field_validator("candidates")
    @classmethod
    def _distinct_candidates(cls, v: list[int]) -> list[int]:
        if min(v) < 1 or len(set(v)) != len(v):
            raise ValueError(f"distinct counts of at least 1 (got {v})")
        return v

    def run(self, candidates: int) -> dict[str, Any]:
        """:func:`~olrg_hpc.flows.pipeline.flow_imh_task` arguments of the run with ``candidates`` (the plain
        chain's without a ``candidates`` entry, so that studies from before it keep their task keys)."""
        kw = self.model_dump(exclude={"candidates"})
        if candidates == 1:
            return kw
        per_step = candidates - 1
        return {**kw, "n_steps": -(-self.n_steps // per_step), "n_therm": -(-self.n_therm // per_step),
                "candidates": candidates}


_TUNE = ("tune the molecular-dynamics steps per L: the smallest count whose pilot acceptance reaches this "
         "(n_steps is then not used)")


class FlowHMC(Strict):
    variants: list[Variant] = Field(default_factory=lambda: ["gaussian"], description="flows to run flow-HMC with")
    n_chains: int = Field(8, ge=1)
    n_traj: int = Field(300, ge=10)
    n_therm: int = Field(30, ge=0)
    tau: float = Field(1.0, gt=0)
    n_steps: int = Field(10, ge=1)
    integrator: Literal["leapfrog", "omelyan"] = "leapfrog"
    tune_acceptance: float | None = Field(None, gt=0, lt=1, description=_TUNE)
    start: Literal["hmc", "prior"] = Field("hmc", description="hmc: chains start from the final configurations of "
                                           "the plain HMC run at the same L, mapped back by F^-1 (equilibrium); "
                                           "prior: from prior draws")


class HMCBaseline(HMCChains):
    n_traj: int = Field(2000, ge=10)
    tune_acceptance: float | None = Field(None, gt=0, lt=1, description=_TUNE)


class Params(Strict):
    lam: float = Field(0.5, ge=0, description="quartic coupling (beta/lambda convention)")
    points: list[Point] = Field(min_length=1)
    variants: list[Variant] = Field(default_factory=lambda: ["gaussian", "coarse", "warm"], min_length=1)
    prior_sigma: float | None = Field(None, gt=0, description="noise width of coarse_bilinear / coarse_noise "
                                      "(fine tutorial units; default from the coarse ensemble)")
    flow: FlowSettings = FlowSettings()
    ensembles: Ensembles = Ensembles()
    training: Training = Training()
    imh: IMH = IMH()
    flow_hmc: FlowHMC = Field(default_factory=FlowHMC, validate_default=True)
    hmc: HMCBaseline = HMCBaseline()

    @field_validator("points")
    @classmethod
    def _distinct_L(cls, v: list[Point]) -> list[Point]:
        Ls = [p.L for p in v]
        if len(set(Ls)) != len(Ls):
            raise ValueError(f"each L at most once (got {Ls})")
        return v

    @field_validator("variants")
    @classmethod
    def _distinct_variants(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"each variant at most once (got {v})")
        return v

    @field_validator("variants")
    @classmethod
    def _multilevel_lattices(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if "multilevel" in v:
            for i, p in enumerate(info.data.get("points", [])):
                if p.L % 4:
                    raise ValueError(f"points[{i}] (L = {p.L}): the multilevel variant needs L divisible by 4 "
                                     "(its coarse flow at L/2 has a checkerboard)")
        return v

    @field_validator("training")
    @classmethod
    def _multilevel_rung(cls, v: Training, info: ValidationInfo) -> Training:
        if "multilevel" in info.data.get("variants", []) and v.rung == "pretrain":
            raise ValueError("the multilevel variant refines the study's flow at L/2 (rung: final); rung 'pretrain' "
                             "does not apply to it")
        return v

    @model_validator(mode="after")
    def _same_L_has_beta_prior(self) -> Params:
        if "same_L" in self.variants:
            for i, p in enumerate(self.points):
                if p.beta_prior is None:
                    raise ValueError(f"points[{i}] (L = {p.L}): the same_L variant needs beta_prior")
        return self

    @field_validator("flow_hmc")
    @classmethod
    def _trained(cls, v: FlowHMC, info: ValidationInfo) -> FlowHMC:
        variants = info.data.get("variants", [])
        missing = [x for x in v.variants if x not in variants]
        if missing:
            raise ValueError(f"variants: {missing[0]!r} is not trained (params.variants: {variants})")
        return v

    @field_validator("hmc")
    @classmethod
    def _hmc_starts(cls, v: HMCBaseline, info: ValidationInfo) -> HMCBaseline:
        fh = info.data.get("flow_hmc")
        if fh is not None and fh.variants and fh.start == "hmc" and fh.n_chains > v.n_chains:
            raise ValueError(f"n_chains ({v.n_chains}) is below flow_hmc.n_chains ({fh.n_chains}): flow-HMC's "
                             "start 'hmc' takes one HMC configuration per chain")
        return v


def _flow_params(params: Params, variant: str) -> dict[str, Any]:
    """The flow of one variant. The free-field layer turns white noise into a free field, so it goes only into
    flows with a Gaussian prior: draws of an HMC-ensemble prior are correlated already, and in the reduced study
    (L = 6, three seeds) the coarse flow-MH fell from acceptance 0.13-0.14 without the layer to 0.08-0.11 with it.
    Heads per sublattice go only into flows with a coarse-lattice prior, the priors built on the 2 x 2 cell (the key
    is left out otherwise, so that other flows keep their task seeds). The site-wise maps (``pointwise``) go into
    every variant's flow; the key is left out when it is 0, for the same reason."""
    spec = params.flow.model_dump()
    sublattice = spec.pop("sublattice")
    if not spec["pointwise"]:
        del spec["pointwise"]
    if variant in pipeline.ENSEMBLE_VARIANTS:
        spec["free_field"] = False
    if variant == "multilevel":  # the refined coarse field is correlated already, and it lives on the 2 x 2 cell
        spec["free_field"] = False
    if sublattice and variant in (*pipeline.COARSE_VARIANTS, "multilevel"):
        spec["sublattice"] = True
    return spec


def _prior_kw(variant: str, p: Point, params: Params) -> dict[str, Any]:
    """Prior arguments of an ensemble-prior variant (``prior_sigma`` only for the one-configuration priors)."""
    kw: dict[str, Any] = {"prior_point": p.prior(variant, params.lam)}
    if variant in pipeline.REFINE_VARIANTS and params.prior_sigma is not None:
        kw["prior_sigma"] = params.prior_sigma
    return kw


def _point_tag(point: Mapping[str, float]) -> str:
    return f"L{point['L']}-beta{point['beta']:g}"


def build(params: Params) -> list[Task]:
    tr = params.training
    lam = params.lam
    train_kw = {"batch_size": tr.batch_size, "lr": tr.lr, "cosine": tr.cosine,
                "metrics_every": tr.metrics_every, "metrics_batch": tr.metrics_batch}
    tasks: list[Task] = []
    samplers: list[str] = []
    warm_at: dict[tuple[int, float], Task] = {}  # trained warm flows by (L, beta): the ladder's rungs
    multilevel_at: dict[tuple[int, float], Task] = {}  # trained multilevel flows by (L, beta): theirs
    pretrains: dict[str, Task] = {}  # Gaussian pretrainings at L/2, by name: warm and multilevel may share one
    coarse_at: dict[tuple[str, int, float], Task] = {}  # trained coarse-prior flows by (variant, L, beta): theirs
    gathers: dict[str, Task] = {}  # pooled HMC ensembles of the priors, by point: one per point, however many use it

    def gather_at(point: dict[str, float]) -> Task:
        ptag = _point_tag(point)
        if ptag not in gathers:
            ens = params.ensembles
            reps = []
            for r in range(ens.replicas):
                t = Task(f"ens-{ptag}-r{r}", ensemble.hmc_ensemble,
                         {"point": point, "n_chains": ens.n_chains, "n_therm": ens.n_therm, "n_traj": ens.n_traj,
                          "meas_every": ens.meas_every, "store_configs": True, "replica": r, **ens.hmc.model_dump()})
                tasks.append(t)
                reps.append(t.name)
            gathers[ptag] = Task(f"gather-{ptag}", pipeline.gather_coarse_ensemble, {}, deps=tuple(reps))
            tasks.append(gathers[ptag])
        return gathers[ptag]

    def rung_below(variant: str, coarse: dict[str, float], flow: dict[str, Any]) -> Task | None:
        """The flow a coarse-prior flow at L starts from (``training.rung``), or ``None``: train from scratch."""
        if variant not in pipeline.COARSE_VARIANTS:
            return None
        if tr.rung == "final":
            return coarse_at.get((variant, coarse["L"], coarse["beta"]))
        q = next((x for x in params.points if (x.L, x.beta) == (coarse["L"], coarse["beta"])), None)
        if q is None:
            return None
        t = Task(f"pretrain-{variant}-{_point_tag(coarse)}", pipeline.train_flow_task,
                 {"point": coarse, "variant": variant, "steps": tr.warm_split()[0], "flow": flow,
                  **_prior_kw(variant, q, params), **train_kw}, deps=(gather_at(q.prior(variant, lam)).name,))
        tasks.append(t)
        return t

    def pretrain_at(coarse: dict[str, float]) -> Task:
        """The Gaussian-prior flow trained at ``coarse`` for the coarse share of the steps (warm_fraction)."""
        name = f"pretrain-{_point_tag(coarse)}"
        if name not in pretrains:
            pretrains[name] = Task(name, pipeline.train_flow_task,
                                   {"point": coarse, "variant": "gaussian", "steps": tr.warm_split()[0],
                                    "flow": _flow_params(params, "gaussian"), **train_kw})
            tasks.append(pretrains[name])
        return pretrains[name]

    for p in sorted(params.points, key=lambda q: q.L):
        fine, coarse = p.fine(lam), p.coarse(lam)
        tag = f"L{p.L}"
        prior_gather = {v: gather_at(p.prior(v, lam)) for v in params.variants if v in pipeline.ENSEMBLE_VARIANTS}
        h = params.hmc
        hmc_t = Task(f"hmc-{tag}", pipeline.hmc_task,
                     {"point": fine, "n_chains": h.n_chains, "n_therm": h.n_therm, "n_traj": h.n_traj,
                      "meas_every": h.meas_every, "tune_acceptance": h.tune_acceptance, **h.hmc.model_dump()})
        tasks.append(hmc_t)
        samplers.append(hmc_t.name)
        trained: dict[str, Task] = {}
        for v in params.variants:
            flow = _flow_params(params, v)  # training and samplers of a variant share it (samplers: t.params)
            if v == "warm":
                pre = warm_at.get((coarse["L"], coarse["beta"])) if tr.ladder and tr.rung == "final" else None
                pre = pre or pretrain_at(coarse)  # the same flow: its parameters move to L unchanged
                t = Task(f"train-warm-{tag}", pipeline.train_flow_task,
                         {"point": fine, "variant": "warm", "steps": tr.warm_split()[1], "flow": flow, **train_kw},
                         deps=(pre.name,))
                warm_at[(p.L, p.beta)] = t
            elif v == "multilevel":
                pre = multilevel_at.get((coarse["L"], coarse["beta"])) if tr.ladder else None
                pre = pre or pretrain_at(coarse)
                flow = {**flow, "refine": {"coarse": pre.params["flow"], "scale": (p.beta / coarse["beta"]) ** 0.5}}
                t = Task(f"train-multilevel-{tag}", pipeline.train_flow_task,
                         {"point": fine, "variant": v, "steps": tr.warm_split()[1], "flow": flow, **train_kw},
                         deps=(pre.name,))
                multilevel_at[(p.L, p.beta)] = t
            elif v in prior_gather:
                below = rung_below(v, coarse, flow) if tr.ladder else None
                t = Task(f"train-{v}-{tag}", pipeline.train_flow_task,
                         {"point": fine, "variant": v, "steps": tr.warm_split()[1] if below else tr.steps,
                          "flow": flow, **_prior_kw(v, p, params), **train_kw},
                         deps=(prior_gather[v].name, *((below.name,) if below else ())))
                if v in pipeline.COARSE_VARIANTS:
                    coarse_at[(v, p.L, p.beta)] = t
            else:
                t = Task(f"train-{v}-{tag}", pipeline.train_flow_task,
                         {"point": fine, "variant": v, "steps": tr.steps, "flow": flow, **train_kw})
            tasks.append(t)
            trained[v] = t
        for v, t in trained.items():
            flow = t.params["flow"]
            deps = (t.name, prior_gather[v].name) if v in prior_gather else (t.name,)
            extra = _prior_kw(v, p, params) if v in prior_gather else {}
            for n in params.imh.candidates:
                if n > 1 and v in pipeline.ENSEMBLE_VARIANTS:
                    continue
                s = Task(f"imh{n if n > 1 else ''}-{v}-{tag}", pipeline.flow_imh_task,
                         {"point": fine, "variant": v, "flow": flow, **params.imh.run(n), **extra}, deps=deps)
                tasks.append(s)
                samplers.append(s.name)
            if v in params.flow_hmc.variants:
                fh = params.flow_hmc.model_dump(exclude={"variants"})
                start = (hmc_t.name,) if fh["start"] == "hmc" else ()
                s = Task(f"fhmc-{v}-{tag}", pipeline.flow_hmc_task,
                         {"point": fine, "variant": v, "flow": flow, **fh, **extra}, deps=deps + start)
                tasks.append(s)
                samplers.append(s.name)
    tasks.append(Task("compare", pipeline.compare_samplers, {}, deps=tuple(samplers)))
    return tasks


# ------------------------------------------------------------------------------------------------ report
def _sampler_label(method: str, variant: str) -> str:
    return f"{method} ({variant})" if variant else method


#: training-task results that :func:`head_start_rows` reads (``logw_var`` and ``work_offset`` where stored)
HEAD_START_KEYS = ("variant", "L", "metric_step", "acceptance", "metric_seconds", "step_offset", "logw_var",
                   "work_offset")


def first_reaching(steps: np.ndarray, values: np.ndarray, target: float, below: bool = False) -> int | None:
    """First measured training step whose value is at least ``target`` (at most, with ``below``; for Var(log w))
    (``None``: never reached)."""
    v = np.asarray(values)
    hit = np.flatnonzero(v <= target if below else v >= target)
    return int(np.asarray(steps)[hit[0]]) if hit.size else None


def _fractions(g: Mapping[str, Any], step: int, n_ref: int, t_ref: float) -> list[Any]:
    """Step, work and seconds fractions of the curves ``g`` at their measured ``step`` against the Gaussian flow's
    ``n_ref`` steps and ``t_ref`` seconds (work: fine steps plus ``work_offset``, "-" for a study file from before
    it was stored; seconds: NaN when ``t_ref`` is 0)."""
    fine = step - int(np.asarray(g["step_offset"]))
    work = (fine + float(np.asarray(g["work_offset"]))) / n_ref if "work_offset" in g else "-"
    secs = float(np.asarray(g["metric_seconds"])[np.flatnonzero(np.asarray(g["metric_step"]) == step)[0]])
    return [step / n_ref, work, secs / t_ref if t_ref > 0 else float("nan")]


def head_start_rows(groups: Mapping[str, Any]) -> list[list[Any]]:
    """Issue #6's coarse-lattice criterion, per L: steps (and work, and seconds) a coarse-derived flow needs to
    reach the acceptance the Gaussian-prior flow ends with, as a fraction of the Gaussian flow's (goal: <= 0.5);
    and the same for the Gaussian flow's final Var(log w) (reached when at or below it). At low acceptance the MH
    acceptance of a 2048-sample measurement is mostly noise (a Gaussian-prior flow at L = 16 read 0.045 / 0.007 /
    0.045 / 0.010 at steps 3000-4500, while its Var(log w) read 10.3 / 9.2 / 9.8 / 8.1), so the Var(log w)
    criterion is the steadier of the two; both are reported.

    ``groups`` maps ``train-*`` task names to their results (``variant``, ``L``, ``metric_step``, ``acceptance``,
    ``metric_seconds``, ``step_offset``, optionally ``logw_var`` and ``work_offset``). Three measures of the
    training that a warm or laddered flow had at coarser L: the step fraction counts every step there at full
    weight (an upper bound on the work), the work fraction counts each at its volume over this L's (a step at L/2
    is a quarter of one here: ``train_flow_task``'s ``work_offset``), the seconds fraction counts what it cost on
    this machine (with the prior ensembles' HMC). Row: L, flow, target acceptance, Gaussian steps, step reached,
    fine steps, step fraction, work fraction, seconds fraction, target Var(log w), step reached, step fraction,
    work fraction, seconds fraction.
    """
    rows = []
    by_L: dict[int, dict[str, Any]] = {}
    for g in groups.values():
        v = g["variant"]
        by_L.setdefault(int(np.asarray(g["L"])), {})[v.decode() if isinstance(v, bytes) else str(v)] = g
    for ell, variants in sorted(by_L.items()):
        ref = variants.get("gaussian")
        if ref is None:
            continue
        n_ref = int(np.asarray(ref["metric_step"])[-1])
        target = float(np.asarray(ref["acceptance"])[-1])
        t_ref = float(np.asarray(ref["metric_seconds"])[-1])
        v_target = float(np.asarray(ref["logw_var"])[-1]) if "logw_var" in ref else float("nan")
        for v in pipeline.VARIANTS[1:]:
            g = variants.get(v)
            if g is None:
                continue
            step = first_reaching(g["metric_step"], g["acceptance"], target)
            if step is None:
                row = [ell, v, target, n_ref, "not reached", "-", "-", "-", "-"]
            else:
                row = [ell, v, target, n_ref, step, step - int(np.asarray(g["step_offset"])),
                       *_fractions(g, step, n_ref, t_ref)]
            if "logw_var" not in g or not np.isfinite(v_target):  # a study file from before logw_var was stored
                rows.append(row + [v_target, "-", "-", "-", "-"])
                continue
            v_step = first_reaching(g["metric_step"], g["logw_var"], v_target, below=True)
            if v_step is None:
                rows.append(row + [v_target, "not reached", "-", "-", "-"])
                continue
            rows.append(row + [v_target, v_step, *_fractions(g, v_step, n_ref, t_ref)])
    return rows


def report(study_file: Path, out_dir: Path) -> WorkflowReport:
    import h5py
    import matplotlib.pyplot as plt

    def s(x: Any) -> str:
        return x.decode() if isinstance(x, bytes) else str(x)

    rep = WorkflowReport()
    with h5py.File(study_file, "r") as f:
        tasks = f["tasks"]
        train_names = sorted(n for n in tasks if n.startswith("train-"))
        Ls = sorted({int(tasks[n]["L"][()]) for n in train_names})

        # 1. acceptance and ESS versus training step and seconds, one row of panels per L
        if train_names:
            fig, axes = plt.subplots(len(Ls), 4, figsize=(15, 3.2 * len(Ls)), squeeze=False)
            for row, ell in enumerate(Ls):
                curves = []
                for n in train_names:
                    g = tasks[n]
                    if int(g["L"][()]) != ell:
                        continue
                    v = s(g["variant"][()])
                    curves.append((g, v, "o-"))
                    # where a warm or multilevel flow comes from: a Gaussian pretraining at L/2, or the ladder's
                    # rung below (a coarse-prior flow's rung below is on the L/2 row, unless it is a pretraining)
                    gaussian_below = v in ("warm", "multilevel")
                    prefix = f"pretrain-L{ell // 2}-" if gaussian_below else f"pretrain-{v}-L{ell // 2}-"
                    pre = [tasks[m] for m in tasks if m.startswith(prefix)]
                    pre += [tasks[m] for m in (f"train-{v}-L{ell // 2}",) if gaussian_below and m in tasks]
                    if pre:
                        curves.append((pre[0], f"{v}: its training at L = {ell // 2}", "o--"))
                for g, v, style in curves:
                    for col, (x, y) in enumerate([("metric_step", "acceptance"), ("metric_step", "ess"),
                                                  ("metric_seconds", "acceptance"), ("metric_seconds", "ess")]):
                        axes[row, col].plot(g[x][()], g[y][()], style, ms=3, label=v)
                for col, (xl, yl) in enumerate([("training step", "MH acceptance"), ("training step", "ESS"),
                                                ("training seconds", "MH acceptance"), ("training seconds", "ESS")]):
                    ax = axes[row, col]
                    ax.set_xlabel(xl)
                    ax.set_ylabel(f"{yl} (L = {ell})")
                    if yl == "ESS":
                        ax.set_yscale("log")
                    ax.legend(fontsize=7)
            fig.tight_layout()
            path = out_dir / "flow_training.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            rep.figures.append(path)

        rows = []
        for n in train_names:
            g = tasks[n]
            rows.append([n.removeprefix("train-"), int(g["L"][()]), int(g["n_params"][()]),
                         int(g["metric_step"][()][-1]), int(g["batch_size"][()]), float(g["acceptance"][()][0]),
                         float(g["acceptance"][()][-1]), float(g["ess"][()][-1]),
                         *(float(g["logw_var"][()][i]) if "logw_var" in g else float("nan") for i in (0, -1)),
                         float(g["metric_seconds"][()][-1]), float(g["compile_seconds"][()])])
        if rows:
            rep.tables.append(Table("Flow training (warm: steps and seconds include the training at coarser L; "
                                    "ensemble priors: seconds include their HMC ensemble; seconds exclude "
                                    "compilation and measurements)",
                                    ["flow", "L", "params", "steps", "batch", "acc. start", "acceptance", "ESS",
                                     "var log w start", "var log w", "train s", "compile s"], rows))
        head = head_start_rows({n: {k: tasks[n][k][()] for k in HEAD_START_KEYS if k in tasks[n]}
                                for n in train_names})
        if head:
            rep.tables.append(Table("Head start from the coarse lattice: first step at which each flow reaches the "
                                    "Gaussian-prior flow's final acceptance, and its final var log w (goal: "
                                    "fraction <= 0.5; steps count the training at coarser L at full weight, work "
                                    "at its volume, seconds at its cost)",
                                    ["L", "flow", "target acc.", "Gaussian steps", "step reached", "fine steps",
                                     "step fraction", "work fraction", "seconds fraction", "target var log w",
                                     "step reached (var)", "step fraction (var)", "work fraction (var)",
                                     "seconds fraction (var)"], head))

        if "compare" not in tasks:
            return rep
        c = tasks["compare"]
        names = [s(x) for x in c["labels"][()]]
        method = [s(x) for x in c["method"][()]]
        variant = [s(x) for x in c["variant"][()]]
        L = c["L"][()]
        labels = [_sampler_label(m, v) for m, v in zip(method, variant, strict=True)]
        kinds = sorted(set(labels), key=lambda x: (x.startswith("HMC"), x))

        # 2. observables with error bars per sampler (HMC band as reference)
        obs = [("abs_M", "<|M|>"), ("chi2", "chi2 = V <M^2>"), ("binder", "Binder U")]
        fig, axes = plt.subplots(len(set(L.tolist())), 3, figsize=(13, 3.2 * len(set(L.tolist()))), squeeze=False)
        for row, ell in enumerate(sorted(set(L.tolist()))):
            idx = sorted((i for i in range(len(names)) if L[i] == ell), key=lambda i: (method[i] != "HMC", labels[i]))
            for col, (key, title) in enumerate(obs):
                ax = axes[row, col]
                val, err = c[key][()], c[f"{key}_err"][()]
                for j, i in enumerate(idx):
                    ax.errorbar([j], [val[i]], yerr=[err[i]], fmt="o", capsize=3)
                    if method[i] == "HMC":
                        ax.axhspan(val[i] - err[i], val[i] + err[i], color="0.85", zorder=0)
                ax.set_xticks(range(len(idx)))
                ax.set_xticklabels([labels[i] for i in idx], rotation=30, ha="right", fontsize=7)
                ax.set_title(f"{title}, L = {ell}", fontsize=9)
        fig.tight_layout()
        path = out_dir / "observables.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        rep.figures.append(path)

        # 3. tau_int and cost per independent sample versus L (several L only)
        if len(set(L.tolist())) > 1:
            fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
            for k in kinds:
                idx = sorted((i for i in range(len(names)) if labels[i] == k), key=lambda i: L[i])
                ax_t.errorbar(L[idx], c["tau_int_M2"][()][idx], yerr=c["tau_int_M2_err"][()][idx], fmt="o-",
                              capsize=3, label=k)
                ax_c.plot(L[idx], c["cost_per_independent"][()][idx], "o-", label=k)
            for ax, yl in ((ax_t, "tau_int(M^2)"), (ax_c, "seconds per independent chi2 sample")):
                ax.set_xlabel("L")
                ax.set_ylabel(yl)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.legend(fontsize=7)
            fig.tight_layout()
            path = out_dir / "cost_vs_L.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            rep.figures.append(path)

        def pm(key: str, i: int) -> str:
            return f"{c[key][()][i]:.4g} ± {c[key + '_err'][()][i]:.2g}"

        def run_length(i: int) -> str:
            if "reliable" not in c:  # a study file written before run lengths were recorded
                return "-"
            text = f"{c['chain_over_tau'][()][i]:.0f} / {c['therm_over_tau'][()][i]:.1f}"
            reuse = float(c["prior_reuse"][()][i]) if "prior_reuse" in c else 0.0
            if reuse > pipeline.MAX_PRIOR_REUSE:
                return f"{text} prior reused {reuse:.2g}x"
            return text + ("" if c["reliable"][()][i] else " too short")

        rows = []
        for i in sorted(range(len(names)), key=lambda i: (L[i], method[i] != "HMC", labels[i])):
            rows.append([labels[i], int(L[i]), float(c["acceptance"][()][i]), pm("tau_int_M2", i),
                         float(c["seconds_per_sample"][()][i]), float(c["cost_per_independent"][()][i]),
                         float(c["cost_over_hmc"][()][i]) if "cost_over_hmc" in c else float("nan"),
                         float(c["train_seconds"][()][i]), pm("abs_M", i), pm("chi2", i), pm("binder", i),
                         " ".join(f"{c['pull_' + k][()][i]:+.1f}" for k, _ in obs), run_length(i)])
        rep.tables.append(Table("Samplers (errors: Gamma method, S = 1.5, chains as replicas; cost = s/sample x "
                                "2 tau_int(M^2), compilation and training excluded, an ensemble prior's HMC "
                                "included, also over HMC's at the same L; pulls vs HMC for |M|, chi2, U; run length "
                                "per chain / thermalisation in tau_int(M^2), errors trustworthy from "
                                f"{pipeline.MIN_CHAIN_TAUS:.0f} / {pipeline.MIN_THERM_TAUS:.0f}; flow-MH with an "
                                "ensemble prior also draws each independent prior configuration at most once; "
                                "flow-MH xN: s/sample per step of N - 1 proposals, tau_int the effective one of its "
                                "Rao-Blackwellised estimates, run length in their own tau_int)",
                                ["sampler", "L", "acceptance", "tau_int(M^2)", "s/sample", "s/indep. sample",
                                 "cost / HMC", "train s", "<|M|>", "chi2", "Binder U", "pulls",
                                 "run / therm. (tau)"], rows))
    return rep
