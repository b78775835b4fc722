"""Quench curves of one chain as a self-contained computation (one task of a sweep), and their collection.

``quench_task`` evolves |0...0> (``initial="up"``) or |+...+> (``"plus"``) under an open chain of
``n_sites`` spins and returns, on ``n_times`` equally spaced times in ``[0, t_max]``:

- ``zz``: ``<Z_i Z_{i+1}>(t)``, shape ``(n_times, n_bonds)`` (bond i = sites i, i+1, 0-based);
- ``x``: ``<X_i>(t)``, shape ``(n_times, n_x)`` (the first ``profile_sites`` bonds and sites);
- ``e0``: the ground-state energy of the Hamiltonian (Lanczos, or free fermions for the TFIM);
- ``energy``: ``<H>(t)`` along the evolution (ED only; conserved: a built-in check of the integrator).

``method="ed"`` works for every model up to 20 sites (sparse ``expm_multiply``; dense above 2^12 states
is avoided); ``method="free_fermion"`` is exact at any length for the models whose :class:`ModelKind` says
``free_fermion`` (the TFIM, :mod:`olrg_hpc.spins.freefermion`).
The paper's target ``C(t) = <Z_1 Z_2>(t)`` is ``zz[:, 0]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from olrg_hpc.spins import ed, freefermion
from olrg_hpc.spins.models import X, Z, make_model


def quench_task(model: str, n_sites: int, couplings: Mapping[str, float], method: str, t_max: float,
                n_times: int, initial: str = "up", profile_sites: int = 8) -> dict[str, Any]:
    """Quench curves and ground-state energy of one chain (see module docstring for shapes).

    Profiles are recorded on the first ``profile_sites`` bonds and sites from the left edge (the
    free-fermion cost grows with every site asked for; the OLRG target is bond 0).
    """
    times = np.linspace(0.0, t_max, n_times)
    m = make_model(model, n_sites, **couplings)
    n_bonds, n_x = min(n_sites - 1, profile_sites), min(n_sites, profile_sites)
    if method == "free_fermion":
        if not m.kind.free_fermion:
            raise ValueError(f"free fermions are not exact for {m.name}")
        J, h = m["J"], m["h"]
        zz = freefermion.tfim_quench(n_sites, J, h, times, initial=initial, observables=("zz",),
                                     sites=range(n_bonds))["zz"]
        x = freefermion.tfim_quench(n_sites, J, h, times, initial=initial, observables=("x",), sites=range(n_x))["x"]
        return {"times": times, "zz": zz, "x": x, "e0": freefermion.tfim_ground_energy(n_sites, J, h)}
    if method != "ed":
        raise ValueError(f"unknown method {method!r} (ed or free_fermion)")
    H = ed.sparse_hamiltonian(m)
    psi0 = ed.zero_state(n_sites) if initial == "up" else ed.plus_state(n_sites)
    zdiag = [ed.two_point(Z, i, Z, i + 1, n_sites).diagonal().real for i in range(n_bonds)]
    obs: dict[str, Any] = {f"zz{i}": d for i, d in enumerate(zdiag)}
    obs.update({f"x{i}": ed.site_op(X, i, n_sites) for i in range(n_x)})
    obs["energy"] = H
    vals = ed.evolve_expectations(H, psi0, obs, times)
    e0 = float(ed.ground_state(H)[0][0])
    return {"times": times, "zz": np.stack([vals[f"zz{i}"] for i in range(n_bonds)], axis=1),
            "x": np.stack([vals[f"x{i}"] for i in range(n_x)], axis=1), "energy": vals["energy"], "e0": e0}


def collect_curves(deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Gather C(t) = <Z_1 Z_2>(t) of several quench tasks on one time grid (the sweep's reduce step).

    Where the same (n, couplings) was computed by ED and by free fermions, ``ed_vs_ff_max_diff`` holds
    their largest difference over all bonds, sites and times (it should be ~1e-12).
    """
    names = sorted(deps)
    times = deps[names[0]]["times"]
    for n in names:
        if not np.array_equal(deps[n]["times"], times):
            raise ValueError(f"task {n} has a different time grid; collect tasks of one sweep only")
    out: dict[str, Any] = {"labels": np.array(names), "times": times,
                           "c12": np.stack([deps[n]["zz"][:, 0] for n in names]),
                           "e0": np.array([float(deps[n]["e0"]) for n in names])}
    pairs = [(n, n.removesuffix("-ed") + "-free_fermion") for n in names if n.endswith("-ed")]
    diffs = [max(np.max(np.abs(deps[a]["zz"] - deps[b]["zz"])), np.max(np.abs(deps[a]["x"] - deps[b]["x"])))
             for a, b in pairs if b in deps]
    if diffs:
        out["ed_vs_ff_max_diff"] = np.array(diffs)
    return out
