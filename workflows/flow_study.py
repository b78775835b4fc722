"""Flow study: trivializing flows for 2D phi^4 from Gaussian and coarse-lattice priors, against plain HMC.

The prior kinds are the objects of :data:`olrg_hpc.flows.priors.KINDS`; ``params.variants`` names the ones a
study trains. The graph is built by one loop over the fine points ``(L, beta, lam)`` (beta/lambda convention of
arXiv:2310.03381) and, per point, over the kinds; every dependency is handed to its task under a role
(:data:`olrg_hpc.flows.pipeline.ROLES`):

1. ``ens-L<l>-beta<b>-rR``: ``ensembles.replicas`` HMC ensembles (configurations stored) at each point a kind's
   prior draws from (:meth:`Point.prior`) -> ``gather-L<l>-beta<b>`` (role ``prior_ensemble``); a point that
   several kinds or fine points need is run once;
2. ``train-<kind>-L<l>``, one per kind at equal ``steps x batch``. A kind that starts from a flow at ``L/2``
   (role ``below``) takes the study's own flow of the same kind at ``(L/2, beta_coarse)`` when ``training.ladder``
   is on and the study has that point (8 -> 16 -> 32 ...), else its pretraining there,
   ``pretrain-<pretrain kind>-L<l/2>-beta<b>`` (the Gaussian one for ``warm`` and ``multilevel``, shared), for
   the coarse share of the steps (``warm_fraction``); ``training.rung: pretrain`` always takes the pretraining,
   so that every flow at a point trains ``steps`` steps in all. A flow with a flow below trains the fine share;
   one without, all ``steps``;
3. samplers: ``imh-<kind>-L`` (flow independent Metropolis-Hastings; ``imhN-<kind>-L`` the multiple-proposal
   chain with ``N`` candidates per step, for each ``N > 1`` in ``imh.candidates`` and each kind without an
   ensemble), ``fhmc-<kind>-L`` (flow-HMC for ``flow_hmc.variants``; with ``flow_hmc.start: hmc`` it starts
   from ``hmc-L``'s final configurations, role ``hmc_start``), ``hmc-L`` (plain HMC on the fine lattice);
4. ``compare``: observables (|M|, chi2, Binder) with Gamma-method errors, tau_int(M^2), cost per independent
   chi2 sample (seconds per sample x 2 tau_int), pulls against HMC.

Report (:func:`report`): what was computed and a verdict per sampler first, then acceptance and Var(log w)
versus training step and seconds per L, observables per sampler against the HMC band, tau_int and cost versus L
(several L only), tables. Task functions live in :mod:`olrg_hpc.flows.pipeline`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from olrg_hpc.config import Strict
from olrg_hpc.flows import pipeline
from olrg_hpc.flows.model import FlowSpec
from olrg_hpc.flows.priors import KINDS, PriorKind
from olrg_hpc.lattice import ensemble
from olrg_hpc.report import AGREE_SIGMA, COMPUTED, TENSION_SIGMA, Table, WorkflowReport, sig3, value_error
from olrg_hpc.report import agreement as report_agreement
from olrg_hpc.tasks import Resources, Task
from workflows.phi4_ensembles import HMCChains

#: the names a study may list under ``variants`` (the registry's, in its order)
Variant = Literal[tuple(KINDS)]  # type: ignore[valid-type]


class Point(Strict):
    L: int = Field(ge=4, description="fine lattice extent (L x L, periodic, even)")
    beta: float = Field(gt=0, description="fine hopping coupling (beta/lambda convention)")
    beta_coarse: float | None = Field(None, gt=0, description="coupling of the L/2 prior lattice (default: beta)")
    beta_prior: float | None = Field(None, gt=0, description="coupling of the same-L prior ensemble (kinds whose "
                                     "ensemble is at beta_prior: same_L; usually a smaller beta)")

    @model_validator(mode="after")
    def _even(self) -> Point:
        if self.L % 2:
            raise ValueError(f"L must be even: the coarse lattice is L/2 (got {self.L})")
        return self

    def fine(self, lam: float) -> dict[str, float]:
        return {"L": self.L, "beta": self.beta, "lam": lam}

    def coarse(self, lam: float) -> dict[str, float]:
        return {"L": self.L // 2, "beta": self.beta if self.beta_coarse is None else self.beta_coarse, "lam": lam}

    def prior(self, k: PriorKind, lam: float) -> dict[str, float]:
        """The point of the HMC ensemble the prior of kind ``k`` draws from."""
        if k.ensemble_at == "coarse":
            return self.coarse(lam)
        assert self.beta_prior is not None  # Params checks it
        return {"L": self.L, "beta": self.beta_prior, "lam": lam}


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
    steps: int = Field(1000, ge=2, description="optimizer steps per flow (with a flow below: coarse + fine)")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(5e-3, gt=0)
    cosine: bool = Field(True, description="cosine-anneal the learning rate to 0")
    metrics_every: int = Field(100, ge=1, description="steps between acceptance/ESS measurements")
    metrics_batch: int = Field(1024, ge=16, description="fresh flow samples per measurement")
    warm_fraction: float = Field(0.5, gt=0, lt=1, description="share of the steps a pretraining at L/2 takes "
                                 "(the rest: the fine flow that starts from it, or a rung of the ladder)")
    ladder: bool = Field(True, description="a flow that starts from a flow at L/2 takes the study's flow of the same "
                         "kind at (L/2, beta_coarse) when there is one (8 -> 16 -> 32 ...), training the fine share "
                         "of the steps; else warm and multilevel start from a Gaussian pretraining at L/2 and the "
                         "coarse-prior kinds train from scratch")
    processes: int | None = Field(None, ge=1, description="run each training as one program of this many processes "
                                  "(jax.distributed; on a SLURM pool an srun step of its worker job); none: in the "
                                  "worker")
    devices_per_process: int | None = Field(None, ge=1, description="devices of each such process (CPU nodes: "
                                            "emulated); none: what the node gives")
    rung: Literal["final", "pretrain"] = Field(
        "final", description="with ladder, what a fine flow starts from. final: the study's flow of the same kind "
        "at (L/2, beta_coarse), which trained its own full steps, all counted on the step axis; pretrain: a training "
        "at (L/2, beta_coarse) for the coarse share of the steps (warm_fraction), so that every flow at a point "
        "trains `steps` steps in all, as the Gaussian flow does (a coarse-prior kind's pretraining takes its prior "
        "from the study's point at L/2; without that point the flow trains from scratch)")

    @model_validator(mode="after")
    def _split(self) -> Training:
        if self.steps % self.metrics_every:
            raise ValueError(f"steps ({self.steps}) must be a multiple of metrics_every ({self.metrics_every})")
        if self.rung == "pretrain" and not self.ladder:
            raise ValueError("rung 'pretrain' needs ladder: true (without a ladder no flow starts from L/2 but warm)")
        return self

    def warm_split(self) -> tuple[int, int]:
        """(coarse steps, fine steps) of a flow with a flow below, each a multiple of ``metrics_every``."""
        n = self.steps // self.metrics_every
        k = min(max(round(self.warm_fraction * n), 1), n - 1)
        return k * self.metrics_every, (n - k) * self.metrics_every

    def task_kw(self) -> dict[str, Any]:
        """The :func:`~olrg_hpc.flows.pipeline.train_flow_task` arguments every training shares."""
        return self.model_dump(include={"batch_size", "lr", "cosine", "metrics_every", "metrics_batch"})


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
                                  "kinds without a prior ensemble (gaussian, warm, multilevel)")

    @field_validator("candidates")
    @classmethod
    def _distinct_candidates(cls, v: list[int]) -> list[int]:
        if min(v) < 1 or len(set(v)) != len(v):
            raise ValueError(f"distinct counts of at least 1 (got {v})")
        return v

    def run(self, candidates: int) -> dict[str, Any]:
        """:func:`~olrg_hpc.flows.pipeline.flow_imh_task` arguments of the run with ``candidates``."""
        kw = self.model_dump(exclude={"candidates"})
        per_step = max(candidates - 1, 1)
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
    variants: list[Variant] = Field(default_factory=lambda: ["gaussian", "coarse", "warm"], min_length=1,
                                    description="prior kinds to train (olrg_hpc.flows.priors.KINDS)")
    prior_sigma: float | None = Field(None, gt=0, description="noise width of the kinds with noise sublattices "
                                      "(coarse_bilinear, coarse_noise; fine tutorial units; default from the "
                                      "coarse ensemble)")
    flow: FlowSpec = Field(FlowSpec(), description="the Gaussian flow's architecture; each prior kind adjusts it "
                           "(free-field layer only after a Gaussian prior, heads per sublattice after a prior on "
                           "the 2 x 2 cell)")
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
    def _distinct_variants(cls, v: list[str], info: ValidationInfo) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"each variant at most once (got {v})")
        for name in v:
            if KINDS[name].refines:
                for i, p in enumerate(info.data.get("points", [])):
                    if p.L % 4:
                        raise ValueError(f"points[{i}] (L = {p.L}): the {name} variant needs L divisible by 4 "
                                         "(its coarse flow at L/2 has a checkerboard)")
        return v

    @field_validator("flow")
    @classmethod
    def _no_refine(cls, v: FlowSpec) -> FlowSpec:
        if v.refine is not None:
            raise ValueError("refine is set by a refining prior kind (multilevel), not in the study's flow")
        return v

    @field_validator("training")
    @classmethod
    def _refine_rung(cls, v: Training, info: ValidationInfo) -> Training:
        for name in info.data.get("variants", []):
            if KINDS[name].refines and v.rung == "pretrain":
                raise ValueError(f"the {name} variant refines the study's flow at L/2 (rung: final); rung "
                                 "'pretrain' does not apply to it")
        return v

    @model_validator(mode="after")
    def _beta_prior(self) -> Params:
        for name in self.variants:
            if KINDS[name].ensemble_at == "beta_prior":
                for i, p in enumerate(self.points):
                    if p.beta_prior is None:
                        raise ValueError(f"points[{i}] (L = {p.L}): the {name} variant needs beta_prior")
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

    def kinds(self) -> list[PriorKind]:
        """The kinds the study trains, in the order of ``variants``."""
        return [KINDS[v] for v in self.variants]


def _point_tag(point: Mapping[str, float]) -> str:
    return f"L{point['L']}-beta{point['beta']:g}"


class _Graph:
    """The study's tasks as they are built: each ensemble point and each training once, found by what it is."""

    def __init__(self, params: Params) -> None:
        self.p = params
        self.tasks: list[Task] = []
        self.gathers: dict[str, Task] = {}  # pooled HMC ensembles, by point tag
        self.trained: dict[tuple[str, int, float], Task] = {}  # the study's flows, by (kind, L, beta)
        self.pretrains: dict[str, Task] = {}  # trainings at L/2 for the coarse share of the steps, by name

    def add(self, task: Task) -> Task:
        self.tasks.append(task)
        return task

    def gather(self, point: dict[str, float]) -> Task:
        """The pooled HMC ensemble at ``point`` (its replicas added the first time)."""
        tag = _point_tag(point)
        if tag not in self.gathers:
            ens = self.p.ensembles
            reps = [self.add(Task(f"ens-{tag}-r{r}", ensemble.hmc_ensemble,
                                  {"point": point, "n_chains": ens.n_chains, "n_therm": ens.n_therm,
                                   "n_traj": ens.n_traj, "meas_every": ens.meas_every, "store_configs": True,
                                   "replica": r, **ens.hmc.model_dump()})).name for r in range(ens.replicas)]
            self.gathers[tag] = self.add(Task(f"gather-{tag}", pipeline.gather_coarse_ensemble, {}, deps=tuple(reps)))
        return self.gathers[tag]

    def prior_inputs(self, k: PriorKind, p: Point) -> tuple[dict[str, str], dict[str, Any]]:
        """``(inputs, arguments)`` of kind ``k``'s prior at the study point ``p``: its ensemble and prior point."""
        if k.ensemble_at is None:
            return {}, {}
        point = p.prior(k, self.p.lam)
        kw: dict[str, Any] = {"prior_point": point}
        if k.noise and self.p.prior_sigma is not None:
            kw["prior_sigma"] = self.p.prior_sigma
        return {"prior_ensemble": self.gather(point).name}, kw

    def train_task(self, name: str, k: PriorKind, p: Point, point: dict[str, float], steps: int, flow: FlowSpec,
                   below: Task | None = None) -> Task:
        """A training of kind ``k`` at ``point`` (the study point ``p`` or its coarse point) with its prior."""
        inputs, kw = self.prior_inputs(k, p)
        if below is not None:
            inputs["below"] = below.name
        tr = self.p.training
        return self.add(Task(name, pipeline.train_flow_task,
                             {"point": point, "variant": k.name, "steps": steps, "flow": flow.model_dump(mode="json"),
                              "inputs": inputs, **kw, **tr.task_kw()}, deps=tuple(inputs.values()),
                             resources=Resources(accelerator=True, processes=tr.processes,
                                                 devices=tr.devices_per_process)))

    def pretrain(self, k: PriorKind, p: Point) -> Task | None:
        """The training of kind ``k`` at ``p``'s coarse point for the coarse share of the steps (``None`` when its
        prior needs an ensemble there and the study has no point at ``(L/2, beta_coarse)`` to take it from)."""
        coarse = p.coarse(self.p.lam)
        name = f"pretrain-{k.name}-{_point_tag(coarse)}"
        if name not in self.pretrains:
            q = p
            if k.ensemble_at is not None:
                q = next((x for x in self.p.points if (x.L, x.beta) == (coarse["L"], coarse["beta"])), None)
                if q is None:
                    return None
            self.pretrains[name] = self.train_task(name, k, q, coarse, self.p.training.warm_split()[0],
                                                   k.flow(self.p.flow))
        return self.pretrains[name]

    def below(self, k: PriorKind, p: Point) -> Task | None:
        """The flow at ``L/2`` kind ``k``'s flow at ``p`` starts from (module docstring), or ``None``."""
        tr = self.p.training
        if k.below == "none":
            return None
        coarse = p.coarse(self.p.lam)
        if tr.ladder and tr.rung == "final":
            rung = self.trained.get((k.name, coarse["L"], coarse["beta"]))
            if rung is not None:
                return rung
        if k.below == "required" or (tr.ladder and tr.rung == "pretrain"):
            return self.pretrain(KINDS[k.pretrain or k.name], p)
        return None

    def train(self, k: PriorKind, p: Point) -> Task:
        """The flow of kind ``k`` at the study point ``p``."""
        below = self.below(k, p)
        flow = k.flow(self.p.flow, FlowSpec.model_validate(below.params["flow"]) if below else None,
                      (p.beta / p.coarse(self.p.lam)["beta"]) ** 0.5)
        steps = self.p.training.warm_split()[1] if below else self.p.training.steps
        t = self.train_task(f"train-{k.name}-L{p.L}", k, p, p.fine(self.p.lam), steps, flow, below)
        self.trained[(k.name, p.L, p.beta)] = t
        return t


def build(params: Params) -> list[Task]:
    g = _Graph(params)
    samplers: list[str] = []
    for p in sorted(params.points, key=lambda q: q.L):
        fine, tag = p.fine(params.lam), f"L{p.L}"
        h = params.hmc
        hmc_t = g.add(Task(f"hmc-{tag}", pipeline.hmc_task,
                           {"point": fine, "n_chains": h.n_chains, "n_therm": h.n_therm, "n_traj": h.n_traj,
                            "meas_every": h.meas_every, "tune_acceptance": h.tune_acceptance, **h.hmc.model_dump()}))
        samplers.append(hmc_t.name)
        trained = [(k, g.train(k, p)) for k in params.kinds()]
        for k, t in trained:
            prior_inputs, prior_kw = g.prior_inputs(k, p)
            inputs = {"flow": t.name, **prior_inputs}
            common = {"point": fine, "variant": k.name, "flow": t.params["flow"], **prior_kw}
            for n in params.imh.candidates:
                if n > 1 and not k.multi_proposal:
                    continue
                s = g.add(Task(f"imh{n if n > 1 else ''}-{k.name}-{tag}", pipeline.flow_imh_task,
                               {**common, **params.imh.run(n), "inputs": inputs}, deps=tuple(inputs.values())))
                samplers.append(s.name)
            if k.name in params.flow_hmc.variants:
                fh = params.flow_hmc.model_dump(exclude={"variants"})
                fh_inputs = {**inputs, **({"hmc_start": hmc_t.name} if fh["start"] == "hmc" else {})}
                s = g.add(Task(f"fhmc-{k.name}-{tag}", pipeline.flow_hmc_task,
                               {**common, **fh, "inputs": fh_inputs}, deps=tuple(fh_inputs.values())))
                samplers.append(s.name)
    # NaN: "not measured", for a sampler at an L without an HMC run to compare with (pipeline.compare_samplers)
    g.add(Task("compare", pipeline.compare_samplers, {}, deps=tuple(samplers), nan_ok=("cost_over_hmc", "pull_*")))
    return g.tasks


# ------------------------------------------------------------------------------------------------ report
#: issue #6's goal for the training head start: a fraction of the Gaussian flow's training at most this
HEAD_START_GOAL = 0.5

#: training-task results that :func:`head_start_rows` reads (``logw_var`` and ``work_offset`` where stored)
HEAD_START_KEYS = ("variant", "L", "metric_step", "acceptance", "metric_seconds", "step_offset", "logw_var",
                   "work_offset")

_COMPARED = (("abs_M", "<|M|>"), ("chi2", "chi2"), ("binder", "U"))


def agreement(pulls: Mapping[str, float]) -> str:
    """Verdict on a sampler's pulls against HMC (``{observable: pull}``): :func:`olrg_hpc.report.agreement`."""
    return report_agreement(pulls, missing="no HMC at this L")


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
    reach the acceptance the Gaussian-prior flow ends with, as a fraction of the Gaussian flow's (goal:
    :data:`HEAD_START_GOAL`); and the same for the Gaussian flow's final Var(log w) (reached when at or below it).
    At low acceptance the MH acceptance of a 2048-sample measurement is mostly noise (a Gaussian-prior flow at
    L = 16 read 0.045 / 0.007 / 0.045 / 0.010 at steps 3000-4500, while its Var(log w) read 10.3 / 9.2 / 9.8 /
    8.1), so the Var(log w) criterion is the steadier of the two; both are reported.

    ``groups`` maps ``train-*`` task names to their results (``variant``, ``L``, ``metric_step``, ``acceptance``,
    ``metric_seconds``, ``step_offset``, optionally ``logw_var`` and ``work_offset``). Three measures of the
    training that a flow with a flow below had at coarser L: the step fraction counts every step there at full
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
        for v in list(KINDS)[1:]:
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


def head_start_table_row(r: list[Any]) -> list[Any]:
    """A :func:`head_start_rows` row for the report: three significant digits and a verdict per criterion, judged
    on the work fraction (the step fraction for a study file without ``work_offset``)."""
    def fmt(x: Any) -> Any:
        return x if isinstance(x, (str, int)) else sig3(x)

    def goal(reached: Any, step_fraction: Any, work_fraction: Any) -> str:
        if reached == "not reached":
            return "missed (not reached)"
        if reached == "-":
            return "-"
        fraction = step_fraction if isinstance(work_fraction, str) else work_fraction
        return "met" if fraction <= HEAD_START_GOAL else "missed"

    return [*r[:2], sig3(r[2]), *r[3:6], *map(fmt, r[6:9]), goal(r[4], r[6], r[7]), sig3(r[9]), r[10],
            *map(fmt, r[11:14]), goal(r[10], r[11], r[12])]


def _text(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _params_of(group: Any) -> dict[str, Any]:
    """A task's parameters, from its group's provenance attribute."""
    import json

    return json.loads(_text(group.attrs.get("params", "{}")))


def _flow_text(flow: Mapping[str, Any]) -> str:
    extras = [name for key, name in (("free_field", "free-field layer"), ("sublattice", "heads per sublattice"))
              if flow.get(key)]
    if flow.get("pointwise"):
        extras.append(f"site-wise map before every {flow['pointwise']}. coupling")
    if flow.get("refine"):
        extras.append("refines the flow at L/2")
    return (f"{flow.get('kind')}, {flow.get('n_layers')} couplings, hidden {list(flow.get('hidden', []))}, kernel "
            f"{flow.get('kernel_size')}" + "".join(f", {e}" for e in extras))


def computed_rows(tasks: Any) -> list[list[str]]:
    """What the study computed, read from its tasks' parameters: the action, the points (fine and prior), the
    flows (kind, architecture, training), the samplers and what their costs mean."""
    rows = [["action", "2D phi^4, beta/lambda convention (arXiv:2310.03381 eq. 1): S = sum_x [-beta sum_mu "
                       "phi_x phi_x+mu + (1 - 2 lam) phi_x^2 + lam phi_x^4], periodic L x L"]]
    hmc = {int(h["point"]["L"]): h for n in tasks if n.startswith("hmc-") and (h := _params_of(tasks[n]))}
    if hmc:
        rows.append(["lam", sig3(next(iter(hmc.values()))["point"]["lam"])])
    train = {n: t for n in sorted(tasks) if n.startswith("train-") and (t := _params_of(tasks[n]))}
    for ell, h in sorted(hmc.items()):
        priors = sorted({(int(t["prior_point"]["L"]), float(t["prior_point"]["beta"])) for t in train.values()
                         if "prior_point" in t and int(t["point"]["L"]) == ell})
        where = "; prior ensembles at " + ", ".join(f"L = {pl}, beta = {pb:g}" for pl, pb in priors) if priors else ""
        rows.append([f"L = {ell}", f"beta = {h['point']['beta']:g}{where}"])
    for name, t in train.items():
        below = t.get("inputs", {}).get("below")
        rows.append([f"flow {name.removeprefix('train-')}",
                     f"{KINDS[t['variant']].description}; {_flow_text(t['flow'])}; {t['steps']} steps x batch "
                     f"{t['batch_size']}" + (f" after {below}" if below else "")])
    samplers: dict[str, list[str]] = {}
    for n in sorted(tasks):
        if not n.startswith(("hmc-", "imh", "fhmc-")):
            continue
        q = _params_of(tasks[n])
        if not q:  # a hand-made study file
            continue
        if n.startswith("hmc-"):
            what = f"HMC: {q['n_chains']} chains x {q['n_traj']} trajectories"
        elif n.startswith("fhmc-"):
            what = f"flow-HMC: {q['n_chains']} chains x {q['n_traj']} trajectories, start {q['start']}"
        else:
            n_cand = int(q.get("candidates", 1))
            label = "flow-MH" if n_cand == 1 else f"flow-MH x{n_cand} (multiple proposals)"
            what = f"{label}: {q['n_chains']} chains x {q['n_steps']} steps"
        samplers.setdefault(what, [])
        if q.get("variant") and q["variant"] not in samplers[what]:
            samplers[what].append(q["variant"])
    for what, kinds in samplers.items():
        rows.append(["sampler", what + (f", flows {', '.join(kinds)}" if kinds else "")])
    rows.append(["observables", "<|M|>, chi2 = V <M^2>, Binder U = 1 - <M^4> / (3 <M^2>^2); Gamma-method errors "
                                "(S = 1.5, chains as replicas); pull = (x - x_HMC) / sqrt(err^2 + err_HMC^2)"])
    rows.append(["costs", "wall-clock seconds of each task on the machine that ran it (compilation excluded): "
                          "other jobs on that machine move them; cost per independent chi2 sample = s/sample x "
                          "2 tau_int(M^2), training excluded, an ensemble prior's HMC included"])
    return rows


def verdict_rows(c: Any) -> list[list[str]]:
    """One row per sampler: chi2 against HMC's at its L, the agreement of |M|, chi2 and U (:func:`agreement`),
    whether its run is long enough for its errors, and the cost goal (below HMC's per independent sample)."""
    names = [_text(x) for x in c["labels"][()]]
    method, variant = [_text(x) for x in c["method"][()]], [_text(x) for x in c["variant"][()]]
    L = c["L"][()]
    hmc_at = {int(L[i]): i for i in range(len(names)) if method[i] == "HMC"}
    rows = []
    for i in sorted(range(len(names)), key=lambda i: (L[i], method[i] != "HMC", method[i], variant[i])):
        chi2 = value_error(c["chi2"][()][i], c["chi2_err"][()][i])
        ref = hmc_at.get(int(L[i]))
        ref_chi2 = value_error(c["chi2"][()][ref], c["chi2_err"][()][ref]) if ref is not None else "-"
        if "reliable" not in c:
            run = "-"
        elif bool(c["reliable"][()][i]):
            run = f"long enough ({c['chain_over_tau'][()][i]:.0f} tau per chain)"
        elif "prior_reuse" in c and float(c["prior_reuse"][()][i]) > pipeline.MAX_PRIOR_REUSE:
            run = f"errors too small: prior reused {float(c['prior_reuse'][()][i]):.2g}x"
        else:
            run = f"too short for its errors ({c['chain_over_tau'][()][i]:.0f} tau per chain)"
        if method[i] == "HMC":
            rows.append([int(L[i]), "HMC", chi2, ref_chi2, "reference", run, "reference"])
            continue
        pulls = {label: c[f"pull_{key}"][()][i] for key, label in _COMPARED}
        ratio = float(c["cost_over_hmc"][()][i]) if "cost_over_hmc" in c else float("nan")
        cost = (f"{sig3(ratio)} x HMC: {'met' if ratio < 1 else 'missed'}" if np.isfinite(ratio) else "-")
        rows.append([int(L[i]), f"{method[i]} ({variant[i]})", chi2, ref_chi2, agreement(pulls), run, cost])
    return rows


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _training_figure(tasks: Any, train_names: list[str], out: Path) -> Path | None:
    """Acceptance and Var(log w) versus training step and seconds, one row of panels per L; a flow with a flow
    below also shows that flow's curve (dashed), found by its ``below`` input."""
    import matplotlib.pyplot as plt

    Ls = sorted({int(tasks[n]["L"][()]) for n in train_names})
    fig, axes = plt.subplots(len(Ls), 4, figsize=(15, 3.4 * len(Ls)), squeeze=False)
    panels = [("metric_step", "acceptance"), ("metric_step", "logw_var"), ("metric_seconds", "acceptance"),
              ("metric_seconds", "logw_var")]
    for row, ell in enumerate(Ls):
        for n in train_names:
            g = tasks[n]
            if int(g["L"][()]) != ell:
                continue
            v = _text(g["variant"][()])
            curves = [(g, v, "o-")]
            below = _params_of(g).get("inputs", {}).get("below")
            if below is not None and below in tasks:
                curves.append((tasks[below], f"{v}: the flow below, at L = {int(tasks[below]['L'][()])} ({below})",
                               "o--"))
            for h, label, style in curves:
                if h["metric_step"].shape[0] < 2:  # a single measurement is not a curve
                    continue
                for col, (x, y) in enumerate(panels):
                    if y in h:
                        axes[row, col].plot(h[x][()], h[y][()], style, ms=3, label=label)
        for col, (x, y) in enumerate(panels):
            ax = axes[row, col]
            ax.set_xlabel("training step" if x == "metric_step" else "training seconds (wall clock, this machine)")
            ax.set_ylabel("MH acceptance" if y == "acceptance" else "Var(log w)")
            ax.set_title(f"{'MH acceptance' if y == 'acceptance' else 'Var(log w)'}, L = {ell}", fontsize=9)
            if y == "logw_var":
                ax.set_yscale("log")
            if ax.lines:
                ax.legend(fontsize=7)
    return _save(fig, out / "flow_training.png")


def _observables_figure(c: Any, out: Path) -> Path:
    """Per L, |M|, chi2 and U of every flow sampler with its error bar against the HMC run's band."""
    import matplotlib.pyplot as plt

    names = [_text(x) for x in c["labels"][()]]
    method, variant = [_text(x) for x in c["method"][()]], [_text(x) for x in c["variant"][()]]
    L = c["L"][()]
    Ls = sorted(set(L.tolist()))
    fig, axes = plt.subplots(len(Ls), 3, figsize=(13, 3.4 * len(Ls)), squeeze=False)
    for row, ell in enumerate(Ls):
        idx = sorted((i for i in range(len(names)) if L[i] == ell and method[i] != "HMC"),
                     key=lambda i: (method[i], variant[i]))
        ref = [i for i in range(len(names)) if L[i] == ell and method[i] == "HMC"]
        for col, (key, title) in enumerate((("abs_M", "<|M|>"), ("chi2", "chi2 = V <M^2>"), ("binder", "Binder U"))):
            ax = axes[row, col]
            val, err = c[key][()], c[f"{key}_err"][()]
            for i in ref:
                ax.axhspan(val[i] - err[i], val[i] + err[i], color="0.8", zorder=0, label="HMC, 1 sigma band")
                ax.axhline(val[i], color="0.4", lw=0.8, zorder=1, label="HMC mean")
            ax.errorbar(range(len(idx)), val[idx], yerr=err[idx], fmt="o", capsize=3,
                        label="flow samplers, 1 sigma error")
            ax.set_xticks(range(len(idx)))
            ax.set_xticklabels([f"{method[i]} ({variant[i]})" for i in idx], rotation=30, ha="right", fontsize=7)
            ax.set_ylabel(title)
            ax.set_title(f"{title}, L = {ell}", fontsize=9)
            ax.legend(fontsize=7)
    return _save(fig, out / "observables.png")


def _cost_figure(c: Any, out: Path) -> Path | None:
    """tau_int(M^2) and cost per independent chi2 sample versus L, one line per sampler run at two L or more."""
    import matplotlib.pyplot as plt

    method, variant = [_text(x) for x in c["method"][()]], [_text(x) for x in c["variant"][()]]
    labels = [f"{m} ({v})" if v else m for m, v in zip(method, variant, strict=True)]
    L = c["L"][()]
    series = {k: sorted((i for i in range(len(labels)) if labels[i] == k), key=lambda i: L[i]) for k in set(labels)}
    series = {k: idx for k, idx in sorted(series.items()) if len(idx) > 1}
    if not series:
        return None
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    for k, idx in series.items():
        ax_t.errorbar(L[idx], c["tau_int_M2"][()][idx], yerr=c["tau_int_M2_err"][()][idx], fmt="o-", capsize=3,
                      label=k)
        ax_c.plot(L[idx], c["cost_per_independent"][()][idx], "o-", label=k)
    ax_t.set_title("tau_int(M^2) versus L", fontsize=9)
    ax_c.set_title("cost per independent chi2 sample versus L (wall clock, this machine)", fontsize=9)
    for ax, yl in ((ax_t, "tau_int(M^2) (samples)"), (ax_c, "seconds per independent chi2 sample")):
        ax.set_xlabel("L")
        ax.set_ylabel(yl)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    return _save(fig, out / "cost_vs_L.png")


def report(study_file: Path, out_dir: Path) -> WorkflowReport:
    import h5py

    rep = WorkflowReport()
    with h5py.File(study_file, "r") as f:
        tasks = f["tasks"]
        rep.tables.append(Table(COMPUTED, ["item", "value"], computed_rows(tasks)))
        if "compare" in tasks:
            rep.tables.append(Table(
                f"Verdict per sampler: agreement with HMC at the same L (agrees: every |pull| <= {AGREE_SIGMA:.0f}; "
                f"tension: <= {TENSION_SIGMA:.0f}), run length (Gamma-method errors trustworthy from "
                f"{pipeline.MIN_CHAIN_TAUS:.0f} tau_int per chain and {pipeline.MIN_THERM_TAUS:.0f} of "
                "thermalisation), cost goal: cost per independent chi2 sample below HMC's (wall clock, training "
                "excluded)", ["L", "sampler", "chi2", "chi2 HMC", "agreement with HMC", "run", "cost goal"],
                verdict_rows(tasks["compare"])))
        train_names = sorted(n for n in tasks if n.startswith("train-"))
        head = head_start_rows({n: {k: tasks[n][k][()] for k in HEAD_START_KEYS if k in tasks[n]}
                                for n in train_names})
        if head:
            rows = [head_start_table_row(r) for r in head]
            rep.tables.append(Table(
                "Head start from the coarse lattice: first step at which each flow reaches the Gaussian-prior flow's "
                f"final acceptance, and its final Var(log w) (goal: fraction <= {HEAD_START_GOAL}, judged on the work "
                "fraction, which counts steps at coarser L at their volume; the step fraction counts them at full "
                "weight, the seconds fraction at their wall-clock cost on this machine)",
                ["L", "flow", "target acc.", "Gaussian steps", "step reached", "fine steps", "step fraction",
                 "work fraction", "seconds fraction", "goal", "target Var(log w)", "step reached (var)",
                 "step fraction (var)", "work fraction (var)", "seconds fraction (var)", "goal (var)"], rows))

        if train_names:
            rep.figures.append(_training_figure(tasks, train_names, out_dir))
            rows = []
            for n in train_names:
                g = tasks[n]
                logw = [sig3(g["logw_var"][()][i]) if "logw_var" in g else "-" for i in (0, -1)]
                rows.append([n.removeprefix("train-"), int(g["L"][()]), int(g["n_params"][()]),
                             int(g["metric_step"][()][-1]), int(g["batch_size"][()]), sig3(g["acceptance"][()][0]),
                             sig3(g["acceptance"][()][-1]), sig3(g["ess"][()][-1]), *logw,
                             sig3(g["metric_seconds"][()][-1]), sig3(g["compile_seconds"][()])])
            rep.tables.append(Table(
                "Flow training (steps and seconds include the training of the flow below; an ensemble prior's "
                "seconds include its HMC ensemble; seconds: wall clock on this machine, compilation and "
                "measurements excluded)",
                ["flow", "L", "params", "steps", "batch", "acc. start", "acceptance", "ESS", "Var(log w) start",
                 "Var(log w)", "train s", "compile s"], rows))

        if "compare" not in tasks:
            return rep
        c = tasks["compare"]
        rep.figures.append(_observables_figure(c, out_dir))
        cost_fig = _cost_figure(c, out_dir)
        if cost_fig is not None:
            rep.figures.append(cost_fig)

        method, variant = [_text(x) for x in c["method"][()]], [_text(x) for x in c["variant"][()]]
        L = c["L"][()]

        def pm(key: str, i: int) -> str:
            return value_error(c[key][()][i], c[key + "_err"][()][i])

        def run_length(i: int) -> str:
            if "reliable" not in c:  # a study file written before run lengths were recorded
                return "-"
            return f"{c['chain_over_tau'][()][i]:.0f} / {c['therm_over_tau'][()][i]:.1f}"

        rows = []
        for i in sorted(range(len(method)), key=lambda i: (L[i], method[i] != "HMC", method[i], variant[i])):
            rows.append([f"{method[i]} ({variant[i]})" if variant[i] else method[i], int(L[i]),
                         sig3(c["acceptance"][()][i]), pm("tau_int_M2", i), sig3(c["seconds_per_sample"][()][i]),
                         sig3(c["cost_per_independent"][()][i]),
                         sig3(c["cost_over_hmc"][()][i]) if "cost_over_hmc" in c else "-",
                         sig3(c["train_seconds"][()][i]), pm("abs_M", i), pm("chi2", i), pm("binder", i),
                         " ".join(f"{c['pull_' + k][()][i]:+.1f}" for k, _ in _COMPARED), run_length(i)])
        rep.tables.append(Table(
            "Samplers (errors: Gamma method, S = 1.5, chains as replicas; s/sample: wall clock on this machine, "
            "compilation and training excluded, an ensemble prior's HMC included; cost = s/sample x 2 "
            "tau_int(M^2), also over HMC's at the same L; pulls vs HMC for |M|, chi2, U; run length per chain / "
            "thermalisation in tau_int(M^2); flow-MH xN: s/sample per step of N - 1 proposals, tau_int the "
            "effective one of its Rao-Blackwellised estimates, run length in their own tau_int)",
            ["sampler", "L", "acceptance", "tau_int(M^2)", "s/sample", "s/indep. sample", "cost / HMC", "train s",
             "<|M|>", "chi2", "Binder U", "pulls", "run / therm. (tau)"], rows))
    return rep
