"""Flow study steps as self-contained computations (the tasks the ``flow_study`` workflow fans out; no Dask).

Conventions (docs/phi4-hmc.md, "Actions and conversions"; Albandea et al. arXiv:2310.03381, arXiv:2302.08408):

* A *point* is ``{"L": 8, "beta": 0.634, "lam": 0.5}`` in the beta/lambda convention; every stored field
  and observable is in that convention (``chi = c phi_tut``, ``c = sqrt(2 / beta)``), as in
  :mod:`olrg_hpc.lattice.ensemble`. Flows act on tutorial-convention fields of the target action.
* Prior kinds of the fine flow (``variant``, a name in :data:`olrg_hpc.flows.priors.KINDS`; same architecture,
  same ``steps x batch``): each kind says which HMC ensemble its prior draws from (at ``prior_point``), whether it
  starts from a flow trained at ``L/2`` and how, which flow settings it overrides and what it charges to flow-MH
  (:mod:`olrg_hpc.flows.priors`). The flow is a :class:`~olrg_hpc.flows.model.FlowSpec` (task parameter ``flow``,
  validated on arrival).
* Dependencies have roles: a task's ``inputs`` maps a role to the name of the dependency that fills it,
  ``below`` (the flow at ``L/2`` a training starts from; its step and seconds axes continue that flow's),
  ``prior_ensemble`` (the gathered HMC ensemble of an ensemble prior), ``flow`` (the trained flow a sampler
  uses) and ``hmc_start`` (the plain HMC run whose final configurations start flow-HMC).
* Timings: ``compile_s`` is the time JAX spent tracing, lowering and compiling (from ``jax.monitoring``
  events); ``run_s = wall_s - compile_s``. Training curves use training seconds without compilation and
  without the time spent measuring. Sampling cost: ``seconds_per_sample = run_s / (n_chains x steps)``
  (thermalisation included in the steps), and the cost of one independent chi2 estimate
  ``cost_per_independent = seconds_per_sample x 2 tau_int(M^2)`` (tau_int = 0.5 for uncorrelated data,
  so an uncorrelated sampler pays ``seconds_per_sample``), with an ensemble prior's HMC included (below).
  Multiple-proposal flow-MH (``candidates > 1``) pays per step for ``candidates - 1`` proposals, and its
  ``tau_int(M^2)`` is the effective one of its Rao-Blackwellised estimates (:func:`_chain_result`).
* Step counts: plain HMC and flow-HMC take ``n_steps`` molecular-dynamics steps, or, with ``tune_acceptance``,
  the smallest count whose pilot acceptance reaches it (:func:`olrg_hpc.lattice.hmc.tune_n_steps`, run from the
  start configurations before thermalisation); ``n_steps`` and the pilots (``tuning_steps``,
  ``tuning_acceptance``, ``tune_seconds``) are stored, and the pilots are not counted in the cost.
* Observables (:func:`olrg_hpc.lattice.ensemble.summarize`): ``<|M|>``, ``chi2 = V <M^2>``, connected chi2,
  Binder ``U = 1 - <M^4> / (3 <M^2>^2)``, ``<phi^2>`` with Gamma-method errors (chains as replicas, S = 1.5)
  and tau_int of ``M^2`` and ``|M|`` in units of stored samples.
* Run length: the Gamma method's errors (and tau_int itself) are trustworthy only for chains much longer than
  tau_int (Wolff, hep-lat/0306017: N of order 100 tau_int and more) that start in equilibrium. Every sampler
  records ``chain_over_tau`` (stored samples per chain / tau_int(M^2)) and ``therm_over_tau`` (thermalisation
  steps / tau_int(M^2) in steps); :func:`compare_samplers` calls a run ``reliable`` when they are at least
  :data:`MIN_CHAIN_TAUS` and :data:`MIN_THERM_TAUS`. A poorly trained flow fails this: flow-MH at ESS ~ 1e-2
  sticks to rare configurations, tau_int reaches 100+ steps, and its error bars are too small. Thermalisation
  adapts to tau_int: a chain whose configured ``n_therm`` is below :data:`MIN_THERM_TAUS` tau_int loses the
  missing steps from its start too (at most half the chain; ``therm_steps`` records the total).
* Prior reuse and cost (flow-MH with a prior kind that has an ensemble): its proposals are flowed
  draws from one finite HMC ensemble of ``N`` independent configurations (stored configurations / 2
  tau_int(M^2) of the ensemble, at most the number stored), each draw using ``k = members_per_draw`` of them
  (four for ``coarse``, one otherwise). Given the ensemble, the chain converges to the importance-weighted
  average over it, so its estimate carries the ensemble's own fluctuation, which its Gamma-method error leaves
  out. That part is the variance of an importance-sampling estimate from the ensemble, at most ``k V / N`` for
  ``V`` the variance of one weighted draw (a degree-``k`` U-statistic), while the chain's own part is about
  ``V / n`` for ``n`` proposals (IMH and importance sampling with the same weights have errors of the same
  order; both grow like ``1 + Var(w / <w>)``). ``prior_reuse = k n / N`` bounds their ratio; above
  :data:`MAX_PRIOR_REUSE` the run is unreliable. Cost: with ``c_f`` the flow's seconds per proposal and ``c_p =
  k x run_seconds / N`` (``prior_seconds_per_sample``: the ensemble's HMC run seconds, all replicas,
  thermalisation included, per ``k`` independent configurations), ``n`` proposals and ``N`` configurations cost
  ``n c_f + N c_p / k`` for a variance of about ``V (1 / n + k / N)``; choosing ``N`` to minimise it, one
  independent sample costs ``2 tau_int (sqrt(c_f) + sqrt(c_p))^2``. That is ``cost_per_independent``, with
  ``seconds_per_sample = (sqrt(c_f) + sqrt(c_p))^2`` (at least ``c_f + c_p``, the charge of one fresh draw per
  proposal, which leaves the ensemble's variance out); ``flow_cost_per_independent = 2 tau_int c_f``.

Task functions (each returns a mapping of arrays; trained parameters travel inside the result as a nested
group, the flax parameter tree itself):

- :func:`gather_coarse_ensemble`: pool the replicas of a coarse ensemble (configurations + observables);
- :func:`train_flow_task`: reverse-KL training of one variant, acceptance and ESS versus step and seconds;
- :func:`flow_imh_task`, :func:`flow_hmc_task`, :func:`hmc_task`: flow independent Metropolis-Hastings,
  flow-HMC and plain HMC chains with observables, tau_int and cost;
- :func:`compare_samplers`: one table over all samplers, with pulls against HMC at the same ``L``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from olrg_hpc import checkpoint
from olrg_hpc.flows.mcmc import FlowedAction, flow_hmc, flow_imh, flow_multi_mh
from olrg_hpc.flows.model import FlowSpec, Prior, count_params, make_flow
from olrg_hpc.flows.priors import EnsembleDraws, PriorKind, kind, params_from_tree
from olrg_hpc.flows.train import evaluate, make_mesh, train
from olrg_hpc.jaxsetup import enable_x64
from olrg_hpc.jaxtiming import compile_clock, compile_seconds
from olrg_hpc.lattice import ensemble, hmc
from olrg_hpc.sharding import replicate

enable_x64()

__all__ = [
    "ROLES",
    "gather_coarse_ensemble",
    "train_flow_task",
    "flow_imh_task",
    "flow_hmc_task",
    "hmc_task",
    "compare_samplers",
]

#: the roles a dependency can fill (module docstring)
ROLES = ("below", "prior_ensemble", "flow", "hmc_start")


def _devices_for(batch: int) -> int:
    """The largest device count that divides the batch (training shards the batch over devices)."""
    n = len(jax.devices())
    return max(d for d in range(1, n + 1) if batch % d == 0)


def _int_seed(seed: int) -> jax.Array:
    return jax.random.key(int(seed) % (2**63))


def _point_action(point: Mapping[str, float]) -> tuple[Any, float]:
    return ensemble.action_for(point)


def _role(deps: Mapping[str, Mapping[str, Any]] | None, inputs: Mapping[str, str] | None,
          role: str) -> Mapping[str, Any] | None:
    """The result of the dependency that fills ``role`` (``inputs[role]`` names it), ``None`` when no
    dependency does."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r} ({', '.join(ROLES)})")
    name = (inputs or {}).get(role)
    if name is None:
        return None
    if deps is None or name not in deps:
        raise ValueError(f"the {role} dependency {name!r} is not among this task's dependencies")
    return deps[name]


def _needed(deps: Mapping[str, Mapping[str, Any]] | None, inputs: Mapping[str, str] | None,
            role: str) -> Mapping[str, Any]:
    found = _role(deps, inputs, role)
    if found is None:
        raise ValueError(f"this task needs a {role} dependency (inputs: {dict(inputs or {})})")
    return found


def _prior(k: PriorKind, point: Mapping[str, float], prior_point: Mapping[str, float] | None,
           deps: Mapping[str, Mapping[str, Any]] | None, inputs: Mapping[str, str] | None,
           prior_sigma: float | None) -> Prior:
    """The prior of kind ``k`` at ``point`` (its ensemble from the ``prior_ensemble`` dependency)."""
    draws = None
    if k.ensemble_at is not None:
        if prior_point is None:
            raise ValueError(f"the {k.name} prior needs prior_point")
        draws = EnsembleDraws.of(_needed(deps, inputs, "prior_ensemble"), prior_point, point)
    return k.prior(int(point["L"]), draws, prior_sigma)


# ------------------------------------------------------------------------------------------------ ensembles
def gather_coarse_ensemble(deps: Mapping[str, Mapping[str, Any]], thin: int = 1) -> dict[str, Any]:
    """Pool independent coarse ensembles of one point: configurations ``(N, l, l)`` (every ``thin``-th
    measurement of every chain, float32, the point's convention) and their observables
    (:func:`olrg_hpc.lattice.ensemble.combine_replicas`)."""
    names = sorted(deps)
    configs = np.concatenate([np.asarray(deps[n]["configs"])[::thin].reshape((-1, *np.shape(deps[n]["configs"])[-2:]))
                              for n in names])
    if configs.shape[0] < 4:
        raise ValueError(f"a coarse prior needs at least 4 configurations, the ensembles hold {configs.shape[0]}")
    return {**ensemble.combine_replicas(deps), "configs": configs.astype(np.float32), "n_configs": configs.shape[0]}


# ------------------------------------------------------------------------------------------------ training
def train_flow_task(point: Mapping[str, float], variant: str, flow: FlowSpec | Mapping[str, Any], steps: int,
                    batch_size: int, lr: float, cosine: bool, metrics_every: int, metrics_batch: int, seed: int,
                    inputs: Mapping[str, str] | None = None, prior_point: Mapping[str, float] | None = None,
                    prior_sigma: float | None = None,
                    deps: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Train the flow of the prior kind ``variant`` at ``point`` (module docstring) with reverse KL (Adam,
    optionally cosine-annealed), data parallel over the devices that divide ``batch_size``.

    Returns the trained ``params`` (leaves ``00000 ...``: :func:`olrg_hpc.checkpoint.leaves`), the per-step
    ``loss``, and metrics on ``metrics_batch`` fresh samples at step 0 and every ``metrics_every`` steps:
    ``metric_step``, ``acceptance`` (independent MH), ``ess`` (per sample), ``metric_loss``, ``logw_var`` (variance
    of ``log w``: comparable across priors), ``metric_seconds`` (training seconds without compilation and
    measurement). A training with a ``below`` input starts from that flow as its kind says
    (:meth:`~olrg_hpc.flows.priors.PriorKind.initial_params`) and both axes continue from it (``step_offset``,
    ``seconds_offset``); for a kind with a ``prior_ensemble`` the seconds axis adds the HMC run seconds of that
    ensemble (the flow could not be trained without it). ``work_offset``: the training below in steps at this ``L``
    (each rung's steps times its volume over this one's: at fixed batch a step's work is about its volume; 8 -> 16
    steps took 0.26 times as long on 2 cores), so the fine steps plus ``work_offset`` are the training's work in
    units of one step here, a deterministic counterpart of the seconds axis. ``train_seconds``, ``compile_seconds``,
    ``wall_seconds`` of this task, and ``total_train_seconds`` (``seconds_offset`` + ``train_seconds``).
    """
    L = int(point["L"])
    k = kind(variant)
    action, _ = _point_action(point)
    model = make_flow(flow)
    prior = _prior(k, point, prior_point, deps, inputs, prior_sigma)
    k_init, k_train, k_eval = jax.random.split(_int_seed(seed), 3)
    below = _role(deps, inputs, "below")
    params = k.initial_params(model, L, k_init, below)
    step_offset, seconds_offset, work_offset = 0, 0.0, 0.0
    if below is not None:  # continue the axes of the flow below
        step_offset = int(below["step_offset"]) + int(below["steps"])
        seconds_offset = float(below["seconds_offset"]) + float(below["train_seconds"])
        work_offset = (float(below["work_offset"]) + int(below["steps"])) * (int(below["L"]) / L) ** 2
    if k.ensemble_at is not None:
        seconds_offset += float(_needed(deps, inputs, "prior_ensemble")["run_seconds"])
    n_dev = _devices_for(batch_size)

    t_start = time.perf_counter()
    c_start = compile_seconds()
    # step-0 metrics placed as train() places its metrics, so that both share one compiled program
    mesh = make_mesh(n_dev)
    first = evaluate(model, *replicate((params, prior, action), mesh), k_eval, metrics_batch, mesh)  # multi-process too
    step_compile: list[float] = []

    def on_sync(_step: int, _loss: float) -> None:  # first synchronisation: the step function is compiled
        if not step_compile:
            step_compile.append(compile_seconds() - c_train)

    c_train = compile_seconds()
    res = train(model, prior, action, n_steps=steps, batch_size=batch_size, key=k_train, params=params, lr=lr,
                cosine=cosine, devices=n_dev, sync_every=min(10, steps), metrics_every=metrics_every,
                metrics_batch=metrics_batch, callback=on_sync)
    compile_s = compile_seconds() - c_start
    step_c = step_compile[0] if step_compile else 0.0
    ms = [{**first, "step": 0, "train_wall_s": step_c}, *res.metrics]
    # time spent measuring is not training: with a metric at the last step, take its training clock
    last = res.metrics[-1] if res.metrics and int(res.metrics[-1]["step"]) == steps else None
    train_seconds = max((float(last["train_wall_s"]) if last else res.wall_s) - step_c, 0.0)
    return {
        "variant": variant, "L": L, "params": checkpoint.leaves(res.state.params), "loss": res.losses,
        "metric_step": np.array([m["step"] for m in ms]) + step_offset,
        "acceptance": np.array([m["acceptance"] for m in ms]), "ess": np.array([m["ess"] for m in ms]),
        "metric_loss": np.array([m["loss"] for m in ms]), "logw_var": np.array([m["logw_var"] for m in ms]),
        "metric_seconds": np.array([max(float(m["train_wall_s"]) - step_c, 0.0) for m in ms]) + seconds_offset,
        "steps": steps, "batch_size": batch_size, "step_offset": step_offset, "seconds_offset": seconds_offset,
        "work_offset": work_offset,
        "train_seconds": train_seconds, "total_train_seconds": seconds_offset + train_seconds,
        "compile_seconds": compile_s, "wall_seconds": time.perf_counter() - t_start,
        "devices": n_dev, "n_params": count_params(res.state.params),
    }


# ------------------------------------------------------------------------------------------------ sampling
def _m_phi2(phi: jax.Array) -> tuple[jax.Array, jax.Array]:
    return jnp.mean(phi, axis=(-2, -1)), jnp.mean(phi * phi, axis=(-2, -1))


def _series(M: Any, phi2: Any) -> dict[str, Any]:
    """The histories :func:`_chain_result` reads, from those of ``M`` and ``phi^2`` (numpy or JAX arrays)."""
    return {"M": M, "abs_M": abs(M), "M2": M * M, "M4": M**4, "phi2": phi2}


def _primaries(phi: jax.Array) -> dict[str, jax.Array]:
    """The primary observables :func:`~olrg_hpc.lattice.ensemble.summarize_primaries` reads, of one batch (the
    per-candidate measurement of multiple-proposal flow-MH, whose estimates average each one)."""
    return {k: v for k, v in _series(*_m_phi2(phi)).items() if k != "M"}


#: a sampler's run counts as reliable with at least this many tau_int(M^2) per chain ...
MIN_CHAIN_TAUS = 100.0
#: ... and this many tau_int(M^2) of thermalisation (module docstring, "Run length") ...
MIN_THERM_TAUS = 5.0
#: ... and ``prior_reuse`` (ensemble configurations drawn per independent one) at most this (module docstring,
#: "Prior reuse and cost")
MAX_PRIOR_REUSE = 1.0
#: rounds of "drop 5 tau_int, estimate tau_int again" in the thermalisation of a chain (:func:`_chain_result`)
MAX_THERM_ROUNDS = 5


def _chain_result(series: Mapping[str, np.ndarray], volume: int, clock: Mapping[str, float], n_therm: int,
                  n_chains: int, acceptance: float | np.ndarray, dH: np.ndarray | None = None,
                  per_sample: int = 1, estimates: bool = False) -> dict[str, Any]:
    """Histories ``(n, n_chains)`` stored every ``per_sample`` steps after ``n_therm`` steps (``series``: ``abs_M``,
    ``M2``, ``M4``, ``phi2``, and ``M`` where there is one) -> observables, tau_int, cost and run length in units
    of tau_int (module docstring).

    ``estimates``: the histories are per-step estimates (Rao-Blackwellised: :func:`flow_imh_task` with
    ``candidates > 1``), whose variance is below that of the observable itself; ``tau_int_M2`` is then the
    effective one,
    ``n err^2(M^2) / (2 Var(M^2))`` with ``Var(M^2) = <M^4> - <M^2>^2`` (for a plain chain this is its tau_int by
    the Gamma method's own definition), so that ``2 tau_int_M2`` steps still cost one independent sample, and
    the estimates' own tau_int, which sets the run length and thermalisation, is ``tau_int_M2_series``.

    ``acceptance`` is either the sampler's rate or its accept/reject history aligned with ``M``; a history is
    cut like ``M``, so acceptance and the stored ``accepted`` cover exactly the steps the observables use.

    Thermalisation follows tau_int: when ``n_therm`` is shorter than :data:`MIN_THERM_TAUS` tau_int(M^2) of the
    measured chain, the missing samples are dropped from its start as well (at most half of it); tau_int is then
    estimated again on what is left and, if it grew, more is dropped (up to :data:`MAX_THERM_ROUNDS` rounds), so
    the rule holds for the tau_int the result reports. ``therm_steps`` records the total. The cost still counts
    every step run.
    """
    def summarize(first: int) -> dict[str, Any]:
        h = {k: np.asarray(series[k])[first:] for k in ("abs_M", "M2", "M4", "phi2")}
        out = ensemble.summarize_primaries(h["abs_M"], h["M2"], h["M4"], h["phi2"], volume,
                                           dH if dH is not None else np.zeros(1))
        if dH is None:
            out = {k: v for k, v in out.items() if not k.startswith("exp_minus_dH")}
        if estimates:
            m2, m4 = float(np.mean(h["M2"])), float(np.mean(h["M4"]))
            eff = h["M2"].size * float(out["M2_err"]) ** 2 / (2.0 * max(m4 - m2 * m2, np.finfo(float).tiny))
            own = float(out["tau_int_M2"])
            out.update(tau_int_M2_series=own, tau_int_M2=eff, tau_int_M2_err=float(out["tau_int_M2_err"]) * eff / own)
        return out

    def run_tau(summary: Mapping[str, Any]) -> float:
        return float(summary.get("tau_int_M2_series", summary["tau_int_M2"]))

    n_meas = np.asarray(series["M2"]).shape[0]
    summary = summarize(0)
    n_total = n_therm + n_meas * per_sample
    drop = 0
    for _ in range(MAX_THERM_ROUNDS):  # the shorter chain's tau_int may be longer: drop again until consistent
        missing = MIN_THERM_TAUS * run_tau(summary) * per_sample - n_therm  # in steps
        more = min(int(np.ceil(max(missing, 0.0) / per_sample)), n_meas // 2)
        if more <= drop:
            break
        drop = more
        summary = summarize(drop)
    histories = {k: np.asarray(v)[drop:] for k, v in series.items() if estimates or k not in ("M2", "M4")}
    therm_steps = n_therm + drop * per_sample
    history = {}
    if np.ndim(acceptance):
        kept = np.asarray(acceptance)[drop:]
        acceptance, history = float(np.mean(kept)), {"accepted": kept.astype(np.int8)}
    seconds_per_sample = clock["run_s"] / (n_total * n_chains) * per_sample
    tau, own = float(summary["tau_int_M2"]), run_tau(summary)
    return {**histories, "acceptance": float(acceptance), "summary": summary,
            "run_seconds": clock["run_s"], "compile_seconds": clock["compile_s"], "wall_seconds": clock["wall_s"],
            "seconds_per_sample": seconds_per_sample, "cost_per_independent": seconds_per_sample * 2.0 * tau,
            "chain_over_tau": (n_meas - drop) / own, "therm_steps": therm_steps,
            "therm_over_tau": therm_steps / (own * per_sample), "n_chains": n_chains, "L": int(round(volume**0.5)),
            **history}


def _md_steps(action: Any, x0: jax.Array, key: jax.Array, n_steps: int, tau: float, integrator: str,
              tune_acceptance: float | None) -> tuple[int, jax.Array, dict[str, Any]]:
    """``(n_steps, start, record)``: the configured count, or the tuned one and the chains after the pilots
    (module docstring, "Step counts")."""
    if tune_acceptance is None:
        return int(n_steps), x0, {"n_steps": int(n_steps)}
    t0 = time.perf_counter()
    n, x, trials = hmc.tune_n_steps(action, x0, key, acc_min=tune_acceptance, tau=tau, integrator=integrator)
    return n, x, {"n_steps": n, "tuning_steps": np.array([m for m, _ in trials]),
                  "tuning_acceptance": np.array([a for _, a in trials]), "tune_seconds": time.perf_counter() - t0}


def flow_imh_task(point: Mapping[str, float], variant: str, flow: FlowSpec | Mapping[str, Any], n_chains: int,
                  n_steps: int, n_therm: int, seed: int, inputs: Mapping[str, str] | None = None,
                  prior_point: Mapping[str, float] | None = None, prior_sigma: float | None = None,
                  block: int | None = None, candidates: int = 1,
                  deps: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """``n_chains`` independent Metropolis-Hastings chains with the trained flow (input ``flow``) of the prior
    kind ``variant`` as proposal (:func:`~olrg_hpc.flows.mcmc.flow_imh`, ``block`` steps of proposals per flow
    call); the first ``n_therm`` steps are dropped. ``candidates > 1``: the multiple-proposal chain with that
    many candidates per step and its Rao-Blackwellised estimates (:func:`~olrg_hpc.flows.mcmc.flow_multi_mh`;
    method ``flow-MH xN``, each step costing ``N - 1`` proposals, ``acceptance`` the rate of moves,
    ``tau_int_M2`` the effective one of :func:`_chain_result`; only for a kind without an ensemble, whose cost
    model counts one chain step per proposal). A kind with an ensemble charges it (:func:`_charge_prior`)."""
    k = kind(variant)
    if candidates > 1 and not k.multi_proposal:
        raise ValueError(f"candidates > 1 needs a prior without an HMC ensemble, not the {variant} prior")
    L = int(point["L"])
    action, c = _point_action(point)
    model = make_flow(flow)
    trained = _needed(deps, inputs, "flow")
    params = params_from_tree(model, (L, L), trained["params"])
    prior = _prior(k, point, prior_point, deps, inputs, prior_sigma)
    key = _int_seed(seed)
    with compile_clock() as clock:
        if candidates == 1:
            res = jax.block_until_ready(flow_imh(model, params, prior, action, key, n_therm + n_steps, n_chains,
                                                 measure=_m_phi2, block=block))
        else:
            res = jax.block_until_ready(flow_multi_mh(model, params, prior, action, key, n_therm + n_steps, n_chains,
                                                      candidates, measure=_primaries, block=block))
    if candidates == 1:
        M, phi2 = (np.asarray(a, np.float64)[n_therm:] for a in res.measurements)
        series, moves, estimates, method = _series(c * M, c * c * phi2), res.accepted, False, "flow-MH"
    else:
        power = {"abs_M": 1, "M2": 2, "M4": 4, "phi2": 2}
        series = {k: c ** power[k] * np.asarray(v, np.float64)[n_therm:] for k, v in res.estimates.items()}
        moves, estimates, method = res.moved, True, f"flow-MH x{candidates}"
    out = _chain_result(series, L * L, clock, n_therm, n_chains, np.asarray(moves)[n_therm:], estimates=estimates)
    out.update(method=method, variant=variant, train_seconds=float(trained["total_train_seconds"]),
               candidates=int(candidates))
    if k.ensemble_at is not None:
        _charge_prior(out, _needed(deps, inputs, "prior_ensemble"), prior.members_per_draw,
                      n_chains * (n_therm + n_steps))
    return out


def _charge_prior(out: dict[str, Any], ens: Mapping[str, Any], members_per_draw: int, n_proposals: int) -> None:
    """Add a stored-ensemble prior's reuse and HMC cost to a flow-MH result (module docstring, "Prior reuse and
    cost"); the cost without the ensemble stays as ``flow_cost_per_independent``."""
    independent = min(float(ens["n_configs"]),
                      np.asarray(ens["M"]).size / (2 * max(float(ens["summary"]["tau_int_M2"]), 0.5)))
    prior_s = members_per_draw * float(ens["run_seconds"]) / independent
    flow_s = float(out["seconds_per_sample"])
    out.update(prior_independent_configs=independent, prior_reuse=members_per_draw * n_proposals / independent,
               prior_seconds_per_sample=prior_s, flow_seconds_per_sample=flow_s,
               flow_cost_per_independent=out["cost_per_independent"])
    out["seconds_per_sample"] = (np.sqrt(flow_s) + np.sqrt(prior_s)) ** 2  # with the cheapest ensemble size
    out["cost_per_independent"] = out["seconds_per_sample"] * 2.0 * float(out["summary"]["tau_int_M2"])


def flow_hmc_task(point: Mapping[str, float], variant: str, flow: FlowSpec | Mapping[str, Any], n_chains: int,
                  n_traj: int, n_therm: int, tau: float, n_steps: int, integrator: str, seed: int,
                  inputs: Mapping[str, str] | None = None, prior_point: Mapping[str, float] | None = None,
                  prior_sigma: float | None = None, tune_acceptance: float | None = None, start: str = "prior",
                  deps: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """HMC in the flowed variables of the trained flow (input ``flow``) of the prior kind ``variant``
    (:func:`~olrg_hpc.flows.mcmc.flow_hmc`, float64).

    ``start``: ``"prior"`` starts the chains from prior draws ``z ~ r``; ``"hmc"`` from the final configurations
    of a plain HMC run at the same point (input ``hmc_start``, :func:`hmc_task`), mapped to the flowed variables
    by ``z = F^{-1}(phi)``, one configuration per chain: an equilibrium start. A reverse-KL flow concentrates its
    draws at small ``|M|``, and at L = 32 flow-HMC chains started there were still 4 sigma low in chi2 after 1500
    trajectories, though their tau_int(M^2) read 15 (docs/flows.md). Neither start is charged to the cost.
    """
    L = int(point["L"])
    action, c = _point_action(point)
    model = make_flow(flow)
    trained = _needed(deps, inputs, "flow")
    params = params_from_tree(model, (L, L), trained["params"], jnp.float64)
    k0, krun = jax.random.split(jax.random.key(int(seed) % (2**63), impl="rbg"))
    if start == "hmc":
        configs = np.asarray(_needed(deps, inputs, "hmc_start")["final_configs"], np.float64)
        if configs.shape[0] < n_chains or configs.shape[1:] != (L, L):
            raise ValueError(f"start 'hmc' needs {n_chains} configurations of {L}x{L}, "
                             f"the HMC run holds {configs.shape[0]} of {configs.shape[1:]}")
        z0 = model.apply(params, jnp.asarray(configs[:n_chains] / c), method=model.inverse)[0]
    elif start == "prior":
        prior = _prior(kind(variant), point, prior_point, deps, inputs, prior_sigma)
        z0 = jnp.asarray(prior.sample(k0, n_chains), jnp.float64)
    else:
        raise ValueError(f"unknown start {start!r} (prior, hmc)")
    n_steps, z0, md = _md_steps(FlowedAction(model, params, action, 2), z0, jax.random.fold_in(k0, 1), n_steps, tau,
                                integrator, tune_acceptance)
    with compile_clock() as clock:
        res = jax.block_until_ready(flow_hmc(model, params, action, z0, n_traj, krun, tau=tau, n_steps=n_steps,
                                             integrator=integrator, n_therm=n_therm, measure=_m_phi2))
    M, phi2 = (np.asarray(a, np.float64) for a in res.phi)
    out = _chain_result(_series(c * M, c * c * phi2), L * L, clock, n_therm, n_chains, float(res.acceptance),
                        dH=np.asarray(res.dH))
    out.update(method="flow-HMC", variant=variant, train_seconds=float(trained["total_train_seconds"]),
               dH=np.asarray(res.dH), start=start, **md)
    return out


def hmc_task(point: Mapping[str, float], n_chains: int, n_therm: int, n_traj: int, meas_every: int, tau: float,
             n_steps: int, integrator: str, seed: int, tau_jitter: float = 0.0,
             tune_acceptance: float | None = None) -> dict[str, Any]:
    """Plain HMC baseline on the fine lattice (:func:`olrg_hpc.lattice.hmc.run_chain`, the chains of
    :func:`olrg_hpc.lattice.ensemble.hmc_ensemble`, measured inside the scan), timed like the flow samplers;
    ``final_configs`` ``(n_chains, L, L)`` (the point's convention) are where flow-HMC can start."""
    L = int(point["L"])
    action, c = _point_action(point)
    k0, krun = jax.random.split(jax.random.key(int(seed) % (2**63), impl="rbg"))
    phi0 = 0.5 * jax.random.normal(k0, (n_chains, L, L))
    n_steps, phi0, md = _md_steps(action, phi0, jax.random.fold_in(k0, 1), n_steps, tau, integrator, tune_acceptance)
    with compile_clock() as clock:
        res = jax.block_until_ready(hmc.run_chain(action, phi0, n_traj, krun, tau=tau, n_steps=n_steps,
                                                  integrator=integrator, tau_jitter=tau_jitter,
                                                  meas_every=meas_every, n_therm=n_therm, measure=_m_phi2))
    M, phi2 = (np.asarray(a, np.float64) for a in res.measurements)
    out = _chain_result(_series(c * M, c * c * phi2), L * L, clock, n_therm, n_chains, float(res.acceptance),
                        dH=np.asarray(res.dH), per_sample=meas_every)
    out.update(method="HMC", variant="", train_seconds=0.0, dH=np.asarray(res.dH),
               final_configs=c * np.asarray(res.phi, np.float64), **md)
    return out


# ------------------------------------------------------------------------------------------------ analysis
OBSERVABLES = ("abs_M", "chi2", "binder", "phi2")


def compare_samplers(deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """All samplers side by side: acceptance, tau_int(M^2), seconds per sample, cost per independent chi2
    sample and ``cost_over_hmc`` (that cost over the HMC run's at the same ``L``; below 1 the sampler beats HMC,
    training not counted), training seconds, run length in tau_int and ``reliable`` (module docstring),
    observables with errors, and each observable's pull
    ``(x - x_HMC) / sqrt(err^2 + err_HMC^2)`` against the HMC run at the same ``L`` (NaN without one)."""
    names = sorted(deps)

    def col(key: str) -> np.ndarray:
        return np.array([float(deps[n][key]) for n in names])

    def summ(key: str) -> np.ndarray:
        return np.array([float(deps[n]["summary"][key]) for n in names])

    L = np.array([int(deps[n]["L"]) for n in names])
    method = [str(deps[n]["method"]) for n in names]
    out: dict[str, Any] = {
        "labels": np.array(names), "method": np.array(method),
        "variant": np.array([str(deps[n]["variant"]) for n in names]), "L": L,
        "acceptance": col("acceptance"), "tau_int_M2": summ("tau_int_M2"), "tau_int_M2_err": summ("tau_int_M2_err"),
        "seconds_per_sample": col("seconds_per_sample"), "cost_per_independent": col("cost_per_independent"),
        "train_seconds": col("train_seconds"), "run_seconds": col("run_seconds"),
        "chain_over_tau": col("chain_over_tau"), "therm_over_tau": col("therm_over_tau"),
        "prior_reuse": np.array([float(deps[n].get("prior_reuse", 0.0)) for n in names]),
    }
    out["reliable"] = ((out["chain_over_tau"] >= MIN_CHAIN_TAUS) & (out["therm_over_tau"] >= MIN_THERM_TAUS)
                       & (out["prior_reuse"] <= MAX_PRIOR_REUSE))
    hmc_of = {int(deps[n]["L"]): i for i, n in enumerate(names) if method[i] == "HMC"}
    ref = np.array([hmc_of.get(int(ell), -1) for ell in L])
    cost = out["cost_per_independent"]
    out["cost_over_hmc"] = np.where(ref >= 0, cost / cost[ref], np.nan)  # issue #6: a flow sampler wins below 1
    for obs in OBSERVABLES:
        val, err = summ(obs), summ(f"{obs}_err")
        out[obs], out[f"{obs}_err"] = val, err
        with np.errstate(invalid="ignore", divide="ignore"):
            pull = np.where(ref >= 0, (val - val[ref]) / np.hypot(err, err[ref]), np.nan)
        out[f"pull_{obs}"] = pull
    return out
