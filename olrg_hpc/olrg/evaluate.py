"""Quench dynamics of the final compressed block and its error against exact results (docs/conventions.md section 1).

After growing from the exact ``n0``-site block to ``N`` sites with an operator map (one compression per added
site, :func:`grow_and_map`), the final ``D x D`` set gives

    <O(t)> = Tr[ rho e^{iHt} O e^{-iHt} ]   (D x D, exact eigendecomposition of H),

the OLRG estimate of ``C(t) = <Z_1 Z_2>(t)`` after the quench from ``|0...0>`` (docs/conventions.md "Convention";
the paper's Fig. 2 plots ``<S^z_1 S^z_2> = C/4``). Exact references: free fermions for the TFIM
(:func:`olrg_hpc.spins.freefermion.tfim_quench`, any ``N``), exact diagonalization otherwise (``N <= 14``,
sparse ``expm_multiply``; dense below 11 sites).

Generative maps (OMM) are averaged over ``omap.n_noise`` independent noise realizations of the whole chain of maps
(the expectation value is averaged, docs/conventions.md "expectations are averaged over samples").

Known behaviour (tested): NRG keeps the lowest ``D`` levels of every block, but the quench from ``|0...0>`` at
``h = J = 1`` populates high-energy states of the block, so NRG's ``C(t)`` is wrong already at short times.
Measured (TFIM h = J = 1, D = 8 from n0 = 3, N = 10, t = 0.1 .. 2): NRG relative error ~1.0 at every t (its
``C(t)`` is ~0); DMRG-style (time-averaged, T = 1) 5e-4 at t = 0.1, 0.36 at t = 0.5, max 0.86 (at N = 128: max
1.2); identity map: 2e-15. A learned linear isometry (order 2, T = 2 with sampled final times and the exact-target
term, 40 samples per order, AdamW + cosine) reached max 2.7e-2, typically 1e-2, with order weights 1/k! (2000
steps), and max 5.4e-3, median 1.9e-3 with the weights delta^k/(2^k k!), delta = 0.02 of
:data:`olrg_hpc.olrg.pipeline.RECIPE` (1000 steps, seed 0; 2.7e-2 for seed 1 at 600 steps). With
``keep_state=True``, training window [0, 2.2] and 1500 steps (configs/olrg_paper.yaml): 8.5e-3 and 6.9e-3 for
seeds 0 and 1, 2e-4 at t = 0.1 (benchmarks/bench_olrg.py).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from olrg_hpc.jaxsetup import enable_x64
from olrg_hpc.spins import ed, freefermion
from olrg_hpc.spins.models import ChainModel
from olrg_hpc.spins.tobc import parse_operator

from .maps import OperatorMap
from .relevant import RelevantSet, grow_site, hamiltonian, initial_set, to_jax

enable_x64()

__all__ = ["light_cone_sites", "fixed_map_isometries", "grown_blocks", "grow_and_map", "block_expectation",
           "exact_curve", "olrg_curve", "error_curve", "against_exact", "orbit_tails"]


def grown_blocks(
    model: ChainModel,
    N: int,
    omap: OperatorMap,
    params: Any = None,
    n0: int = 3,
    key: Any = None,
    observable: str = "Z0Z1",
) -> Iterator[RelevantSet]:
    """The blocks of ``n0 + 1 .. N`` sites of :func:`grow_and_map`, one per scale, as they are built."""
    params = {} if params is None else params
    S = initial_set(model, n0, observable)
    D = S.dim
    if not jax.tree_util.tree_leaves(params):
        for s in range(N - n0):
            S = omap(params, grow_site(S, model), s, None, dim_keep=D if omap.compresses else None)
            yield S
        return
    key = jax.random.PRNGKey(0) if key is None else key
    step = _map_step(omap, model, D)
    S = to_jax(S)
    keys = jax.random.split(key, max(1, N - n0))
    for s in range(N - n0):
        S = step(params, S, jnp.asarray(s), keys[s])
        yield S.replace(n=n0 + 1 + s)


def grow_and_map(
    model: ChainModel,
    N: int,
    omap: OperatorMap,
    params: Any = None,
    n0: int = 3,
    key: Any = None,
    observable: str = "Z0Z1",
) -> RelevantSet:
    """Exact ``n0``-site block, then ``N - n0`` times grow + map (scale index ``s = n - n0 - 1``).

    Maps without parameters (identity, NRG, DMRG) run in numpy; learned maps run one jitted step per scale
    (compiled once: the shapes are the same at every scale).
    """
    last = functools.reduce(lambda _, block: block, grown_blocks(model, N, omap, params, n0, key, observable),
                            initial_set(model, n0, observable))
    return jax.tree_util.tree_map(np.asarray, last).replace(n=N) if jax.tree_util.tree_leaves(params or {}) else last


def fixed_map_isometries(model: ChainModel, N: int, omap: OperatorMap, n0: int = 3) -> list[np.ndarray]:
    """The isometries ``V_s`` a parameter-free linear map (NRG, DMRG) uses along its own flow to ``N`` sites.

    Useful as a warm start: ``LinearIsometryMap().init(key, 2D, D, n_scales, warm=fixed_map_isometries(...))``
    reproduces that map exactly.
    """
    S = initial_set(model, n0)
    D = S.dim
    out = []
    for s in range(N - n0):
        G = grow_site(S, model)
        V = np.asarray(omap.isometry({}, G, s, None, D))
        out.append(V)
        S = omap({}, G, s, None, dim_keep=D)
    return out


_STEPS: dict[tuple[Any, ...], Any] = {}


def _map_step(omap: OperatorMap, model: ChainModel, D: int) -> Any:
    """Jitted ``(params, S, scale, key) -> map(grow(S))`` (cached: one compilation per map, model and D)."""
    ck = (omap, model, D)
    if ck not in _STEPS:

        def step(p: Any, S: RelevantSet, s: Any, k: Any) -> RelevantSet:
            return omap(p, grow_site(S, model), s, k, dim_keep=D).replace(n=S.n)

        _STEPS[ck] = jax.jit(step)
    return _STEPS[ck]


def block_expectation(S: RelevantSet, times: Any) -> np.ndarray:
    """``Tr[rho e^{iHt} O e^{-iHt}]`` (real part) on the block ``S`` for every time (numpy, exact eigh)."""
    H = np.asarray(hamiltonian(S))
    H = 0.5 * (H + H.conj().T)
    E, W = np.linalg.eigh(H)
    Oe = W.conj().T @ np.asarray(S.O) @ W
    re = W.conj().T @ np.asarray(S.rho) @ W
    t = np.asarray(times, dtype=float)
    ph = np.exp(1j * np.outer(t, E))  # (m, D): e^{iE_m t}
    # sum_{mn} rho_nm O_mn e^{i(E_m - E_n) t}
    M = re.T * Oe
    return np.real(np.einsum("tm,mn,tn->t", ph, M, ph.conj()))


def exact_curve(model: ChainModel, N: int, times: Any) -> np.ndarray:
    """Exact ``<Z_0 Z_1>(t)`` from ``|0...0>`` on ``N`` sites: free fermions (TFIM) or ED (``N <= 14``)."""
    times = np.asarray(times, dtype=float)
    if model.kind.free_fermion:
        p = model.params
        return freefermion.tfim_quench(N, p["J"], p["h"], times, initial="up", observables=("zz",), sites=[0])["zz"][
            :, 0
        ]
    if N > 14:
        raise ValueError("exact reference for non-TFIM models needs N <= 14 (ED)")
    mN = model.with_n(N)
    H = ed.dense_hamiltonian(mN) if N <= 10 else ed.sparse_hamiltonian(mN)
    O = np.diag(parse_operator("Z0Z1", N)).real.copy() if N <= 12 else _zz_diag(N)
    order = np.argsort(times)
    out = np.empty_like(times)
    out[order] = ed.evolve_expectations(H, ed.zero_state(N), {"zz": O}, times[order])["zz"]
    return out


def orbit_tails(model: ChainModel, n: int, T: float, dims: Any) -> dict[str, list[float]]:
    """How much of the quench orbit ``psi(t) = e^{-iHt}|0...0>``, ``t in [0, T]``, of the exact ``n``-site chain the
    best ``D``-dimensional subspace misses, for a complex and for a real subspace (docs/olrg.md, "Complex
    isometries"), for each ``D`` in ``dims``. Real models only.

    ``G = (1/T) int_0^T |psi(t)><psi(t)| dt`` (exactly, :func:`~olrg_hpc.olrg.maps.time_averaged_rho`); the best
    complex subspace keeps its top ``D`` eigenvalues, the best real one those of ``Re G`` (a real projector ``P``
    has ``Tr(P G) = Tr(P Re G)``). For a real ``H``, ``Re G`` is the average over ``[-T, T]``, unitarily equivalent
    to the one over ``[0, 2T]``: the real tails on ``[0, T]`` are the complex tails on ``[0, 2T]`` (tested). Both
    are computed in the eigenbasis of ``H`` (real for a real ``H``), on the eigenstates the initial state
    overlaps. Returns ``{"complex": [1 - sum of kept eigenvalues, ...], "real": [...]}``. Dense: ``n <= 12``.
    """
    from .maps import time_averaged_rho

    H = ed.dense_hamiltonian(model.with_n(n))
    if np.iscomplexobj(H) and np.abs(H.imag).max() > 0:
        raise ValueError(f"orbit_tails: {model.name} has a complex Hamiltonian (real models only)")
    E, W = np.linalg.eigh(H.real)
    c = W.T @ ed.zero_state(n)
    on = np.abs(c) > 1e-13
    G = time_averaged_rho(np.diag(E[on]), np.outer(c[on], c[on]).astype(complex), float(T))
    G = 0.5 * (G + G.conj().T)
    out: dict[str, list[float]] = {}
    for kind, A in (("complex", G), ("real", G.real)):
        ev = np.sort(np.linalg.eigvalsh(A))[::-1]
        out[kind] = [float(max(0.0, 1.0 - ev[: int(D)].sum())) for D in dims]
    return out


def light_cone_sites(model: ChainModel, t_max: float, eps: float = 1e-6, n_small: int = 12, margin: int = 1,
                     n_times: int = 801) -> dict[str, Any]:
    """How many sites ``C(t)`` on ``[0, t_max]`` can feel, decided from exact chains of at most ``n_small`` sites.

    Site ``n`` (0-based) first matters at ``t_n``, the first time ``|C_{n+1}(t) - C_n(t)| > eps`` (exact curves of
    ``n`` and ``n + 1`` sites). The outermost four measurable ``t_n`` (``n + 1 <= n_small``) grow linearly with ``n``
    (the light cone; at ``J = h = 1``, 0.5 per site: velocity 2); the fit ``t_n = a + n / v`` is extrapolated to
    the first ``n`` with ``t_n >= t_max``, and ``margin`` sites are added. Only chains of at most ``n_small`` sites
    enter (for the TFIM the free-fermion solution, equal to exact diagonalization there); checking the choice
    against a longer chain is the caller's. Returns ``{"n_sites", "velocity", "offset", "t_departure"}`` (the last:
    ``{n: t_n}`` measured; ``inf`` where site ``n`` is not felt by ``t_max``: then ``n_small`` itself is enough and
    the answer is the smallest such ``n`` plus ``margin``).
    """
    times = np.linspace(0.0, float(t_max), n_times)
    curves = {n: exact_curve(model.with_n(n), n, times) for n in range(max(3, n_small - 5), n_small + 1)}
    ns = sorted(curves)[:-1]
    t_dep = {}
    for n in ns:
        over = np.abs(curves[n + 1] - curves[n]) > eps
        t_dep[n] = float(times[np.argmax(over)]) if over.any() else float("inf")
    felt = [n for n in ns if np.isfinite(t_dep[n])]
    if len(felt) < len(ns):  # some site within n_small is not felt by t_max
        return {"n_sites": min(n for n in ns if not np.isfinite(t_dep[n])) + margin, "velocity": float("nan"),
                "offset": float("nan"), "t_departure": t_dep}
    fit_n = np.asarray(felt[-4:], float)
    slope, offset = np.polyfit(fit_n, [t_dep[int(n)] for n in fit_n], 1)
    if slope <= 0:
        raise ValueError(f"light cone: departure times do not grow with the chain length ({t_dep})")
    n_needed = int(np.ceil((float(t_max) - offset) / slope))
    return {"n_sites": max(n_needed, n_small) + margin, "velocity": float(1.0 / slope), "offset": float(offset),
            "t_departure": t_dep}


def _zz_diag(N: int) -> np.ndarray:
    idx = np.arange(1 << N)
    z0 = 1 - 2 * ((idx >> (N - 1)) & 1)
    z1 = 1 - 2 * ((idx >> (N - 2)) & 1)
    return (z0 * z1).astype(float)


def olrg_curve(
    model: ChainModel,
    N: int,
    omap: OperatorMap,
    times: Any,
    params: Any = None,
    n0: int = 3,
    key: Any = None,
    enlarge: int = 0,
    n_mapped: int | None = None,
) -> np.ndarray:
    """``<O(t)>`` of the final block, averaged over ``omap.n_noise`` noise realizations (one for fixed maps).

    ``enlarge``: the system is the block mapped to ``n_mapped`` sites grown by ``enlarge`` exact sites, the system
    a loss with :attr:`~olrg_hpc.olrg.loss.LossConfig.enlarge` compares with exact targets. Default
    ``n_mapped``: ``N - enlarge``, or for a map that decouples after its trained scales
    (:meth:`~olrg_hpc.olrg.maps.OperatorMap.decoupled_after`) its last trained block, so the chain is cut after
    the exact sites, as decoupling cuts it anyway.
    """
    key = jax.random.PRNGKey(0) if key is None else key
    n_noise = max(1, int(omap.n_noise)) if jax.tree_util.tree_leaves(params or {}) else 1
    n_c = N - enlarge if n_mapped is None else n_mapped
    cut = omap.decoupled_after(params) if enlarge and n_mapped is None else None
    if cut is not None:
        n_c = min(n_c, n0 + cut)

    def system(k: Any) -> RelevantSet:
        S = grow_and_map(model, n_c, omap, params, n0, k)
        for _ in range(enlarge):
            S = grow_site(S, model)
        return S

    return np.mean([block_expectation(system(k), times) for k in jax.random.split(key, n_noise)], axis=0)


def error_curve(
    model: ChainModel,
    N: int,
    omap: OperatorMap,
    times: Any,
    params: Any = None,
    n0: int = 3,
    key: Any = None,
    enlarge: int = 0,
    n_mapped: int | None = None,
) -> dict[str, np.ndarray]:
    """OLRG vs exact ``C(t)`` of ``N`` sites: ``{"times", "approx", "exact", "abs_err", "rel_err"}``
    (``rel = abs / |exact|``; ``enlarge``, ``n_mapped``: :func:`olrg_curve`)."""
    times = np.asarray(times, dtype=float)
    return against_exact(model, N, times, olrg_curve(model, N, omap, times, params, n0, key, enlarge, n_mapped))


def against_exact(model: ChainModel, N: int, times: Any, approx: Any) -> dict[str, np.ndarray]:
    """Any approximate ``C(t)`` of ``N`` sites (OLRG, TEBD) against the exact one, as :func:`error_curve`."""
    times, approx = np.asarray(times, dtype=float), np.asarray(approx, dtype=float)
    exact = exact_curve(model, N, times)
    err = np.abs(approx - exact)
    return {
        "times": times,
        "approx": approx,
        "exact": exact,
        "abs_err": err,
        "rel_err": err / np.maximum(np.abs(exact), 1e-300),
    }
