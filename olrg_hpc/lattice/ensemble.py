"""One HMC ensemble as a self-contained computation (one task of the coarse-ensemble workflow).

``hmc_ensemble`` runs ``n_chains`` independent HMC chains (batched in one jitted scan, see
:mod:`olrg_hpc.lattice.hmc`) of the 2D phi^4 theory at one coupling point, thermalises, measures every
``meas_every`` trajectories, and returns:

- ``configs``: float32 configurations ``(n_meas, n_chains, L, L)`` in the *field convention of the point*
  (beta/lambda points return phi_bl = c phi_tut, docs/conventions.md section 2), ready to feed flow training;
- per-measurement histories ``(n_meas, n_chains)``: ``M``, ``abs_M``, ``phi2``, ``action_density`` (S/V);
- ``dH`` and ``accepted`` per trajectory and chain, and ``acceptance``;
- ``run_seconds`` and ``compile_seconds`` of the chains (thermalisation included; :mod:`olrg_hpc.jaxtiming`):
  what the ensemble cost, charged to the flow samplers that draw from it (:mod:`olrg_hpc.flows.pipeline`);
- ``summary``: <|M|>, chi2 = V<M^2>, connected chi2, Binder cumulant U = 1 - <M^4>/(3<M^2>^2), <phi^2>,
  their Gamma-method errors (chains as replicas, S = 1.5) and tau_int of M^2 and |M|, and <exp(-dH)>.

A point is ``{"L": 8, "m2": -4.0, "lam": 8.0}`` (tutorial convention) or ``{"L": 16, "beta": 0.634,
"lam": 0.5}`` (beta/lambda convention of Albandea et al., arXiv:2310.03381).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from olrg_hpc.jaxsetup import enable_x64
from olrg_hpc.jaxtiming import compile_clock
from olrg_hpc.lattice import autocorr, hmc
from olrg_hpc.lattice.phi4 import Phi4Action

enable_x64()


def action_for(point: Mapping[str, float]) -> tuple[Phi4Action, float]:
    """The tutorial-convention action of a point and the factor c with phi_point = c * phi_tut."""
    if "beta" in point:
        return Phi4Action.from_beta_lambda(float(point["beta"]), float(point["lam"]))
    return Phi4Action(float(point["m2"]), float(point["lam"])), 1.0


def _history(phi: jax.Array) -> dict[str, jax.Array]:
    axes = (-2, -1)
    return {"M": jnp.mean(phi, axis=axes), "phi2": jnp.mean(phi**2, axis=axes)}


def summarize(M: np.ndarray, phi2: np.ndarray, volume: int, dH: np.ndarray) -> dict[str, Any]:
    """Observables with Gamma-method errors from ``(n_meas, n_chains)`` histories (chains = replicas)."""
    return summarize_primaries(np.abs(M), M**2, M**4, phi2, volume, dH)


def summarize_primaries(absM: np.ndarray, M2: np.ndarray, M4: np.ndarray, phi2: np.ndarray, volume: int,
                        dH: np.ndarray) -> dict[str, Any]:
    """:func:`summarize` from histories of the primary observables ``|M|``, ``M^2``, ``M^4`` and ``phi^2``
    themselves (for estimators that average each one separately, e.g. Rao-Blackwellised ones)."""
    out: dict[str, Any] = {}
    for name, series in (("abs_M", absM), ("M2", M2), ("phi2", phi2)):
        mean, err, tau = autocorr.mean_error(series)
        out[name], out[f"{name}_err"], out[f"tau_int_{name}"] = mean, err, tau
    out["chi2"], out["chi2_err"] = volume * out["M2"], volume * out["M2_err"]
    out["chi2_connected"], out["chi2_connected_err"] = autocorr.derived(
        lambda m2, am: volume * (m2 - am**2), M2, absM)
    out["binder"], out["binder_err"] = autocorr.derived(lambda m4, m2: 1.0 - m4 / (3.0 * m2**2), M4, M2)
    out["tau_int_M2_err"] = autocorr.tau_int(M2)[1]
    w = np.exp(-dH)
    out["exp_minus_dH"], out["exp_minus_dH_err"] = float(np.mean(w)), float(np.std(w) / np.sqrt(w.size))
    return out


def hmc_ensemble(point: Mapping[str, float], n_chains: int, n_therm: int, n_traj: int, meas_every: int,
                 tau: float, n_steps: int, integrator: str, seed: int, store_configs: bool = True,
                 tau_jitter: float = 0.0, replica: int = 0) -> dict[str, Any]:
    """Run one ensemble and measure it (module docstring). ``seed`` makes it reproducible.

    ``replica`` only labels independent copies of the same point: the workflow derives each task's seed
    from its parameters, so replicas differ in seed and in nothing else.
    """
    del replica
    L = int(point["L"])
    action, c = action_for(point)
    key = jax.random.key(seed % (2**63), impl="rbg")
    k0, krun = jax.random.split(key)
    phi0 = 0.5 * jax.random.normal(k0, (n_chains, L, L))
    with compile_clock() as clock:
        res = jax.block_until_ready(
            hmc.run_chain(action, phi0, n_traj, krun, tau=tau, n_steps=n_steps, integrator=integrator,
                          tau_jitter=tau_jitter, meas_every=meas_every, n_therm=n_therm,
                          measure=None if store_configs else _history))
    if store_configs:
        phi = np.asarray(res.measurements)  # (n_meas, n_chains, L, L) in tutorial variables
        hist = {"M": phi.mean(axis=(-2, -1)), "phi2": (phi**2).mean(axis=(-2, -1))}
        sdens = np.asarray(action.action(jnp.asarray(phi))) / L**2
    else:
        hist = {k: np.asarray(v) for k, v in res.measurements.items()}
        sdens = None
    M, phi2 = c * hist["M"], c**2 * hist["phi2"]
    dH = np.asarray(res.dH)
    out: dict[str, Any] = {"M": M, "abs_M": np.abs(M), "phi2": phi2, "dH": dH,
                           "accepted": np.asarray(res.accepted).astype(np.int8),
                           "acceptance": float(np.mean(np.asarray(res.accepted))),
                           "summary": summarize(M, phi2, L * L, dH),
                           "run_seconds": clock["run_s"], "compile_seconds": clock["compile_s"]}
    if sdens is not None:
        out["action_density"] = sdens
    if store_configs:
        out["configs"] = (c * phi).astype(np.float32)
    return out


def combine_replicas(deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Pool independent ensembles of one point (chains side by side) and measure them together; ``run_seconds``
    is the sum over the replicas (the compute the pooled ensemble cost, however many ran at once)."""
    names = sorted(deps)
    n_meas = min(np.asarray(deps[n]["M"]).shape[0] for n in names)
    M = np.concatenate([np.asarray(deps[n]["M"])[:n_meas] for n in names], axis=1)
    phi2 = np.concatenate([np.asarray(deps[n]["phi2"])[:n_meas] for n in names], axis=1)
    dH = np.concatenate([np.asarray(deps[n]["dH"]).ravel() for n in names])
    first = deps[names[0]]
    volume = int(round(float(first["summary"]["chi2"]) / float(first["summary"]["M2"])))
    return {"replicas": np.array(names), "M": M, "phi2": phi2,
            "acceptance": float(np.mean([float(deps[n]["acceptance"]) for n in names])),
            "run_seconds": float(sum(float(deps[n]["run_seconds"]) for n in names)),
            "summary": summarize(M, phi2, volume, dH)}
