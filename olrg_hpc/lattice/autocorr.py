"""Integrated autocorrelation times and error bars by the Gamma method (U. Wolff, "Monte Carlo errors
with less errors", hep-lat/0306017, Comput. Phys. Commun. 156 (2004) 143).

Convention: ``tau_int = 1/2 + sum_{t>=1} rho(t)``, so **uncorrelated data have tau_int = 0.5** and the
error of the mean is ``sigma_mean^2 = 2 tau_int Gamma(0) / N`` (Wolff eq. (3.9)-(3.10)). For an AR(1)
process ``a_{i+1} = rho a_i + noise``, ``rho(t) = rho^t`` and ``tau_int = (1 + rho) / (2 (1 - rho))``
(``rho = 0.9`` -> 9.5). This is pyerrors' ``Obs.e_tauint`` convention as well.

Automatic windowing (Wolff section 3.3, eq. (52)): with ``tau(W) = S / ln[(2 tau_int(W) + 1) /
(2 tau_int(W) - 1)]`` the window is the first ``W >= 1`` with ``g(W) = exp(-W / tau(W)) - tau(W) /
sqrt(W N) < 0``; default ``S = 1.5`` (Wolff's recommendation; pyerrors' own default is 2.0).
``tau_int`` is then bias-corrected (Wolff eq. (49)) and its error is ``2 tau_int sqrt((W + 1/2 - tau_int)
/ N)`` (Wolff eq. (42)).

The public functions use pyerrors (``pyerrors.Obs(...).gamma_method(S=S)``, ``.e_tauint``,
``.e_dtauint``, ``.dvalue``). :func:`gamma_method_numpy` is a small independent implementation used to
cross-check it. pyerrors' ``tau_int`` carries an extra factor ``1 / (1 + 1/N)`` relative to Wolff's
bias correction (its error of the mean is identical).

Replicas (Wolff section 3, independent runs ``r = 1..R`` of one ensemble). Input ``series`` is 1D (one
Monte Carlo history) or 2D ``(n_measurements, n_chains)``, each column a replica of length ``N_r``,
``N = sum_r N_r``. Wolff takes the fluctuations about the mean over *all* replicas,
``abarbar = (1/N) sum_{r,i} a_i^r``, estimates ``Gamma(t) = 1/(N - R t) sum_r sum_{i <= N_r - t}
(a_i^r - abarbar)(a_{i+t}^r - abarbar)`` (``N - R t`` = the number of pairs at lag ``t``) and uses the
total ``N`` in the window criterion, the bias correction and the errors. pyerrors does all of this except
the first step: it takes each replica's fluctuations about that replica's *own* mean, which removes the
spread of the replica means from ``Gamma`` (``tau_int`` low by about ``(2 W + 1) / N_r``, the error by
about half that: -7 % and -4 % for 128 AR(1) chains of 3000 at ``tau_int = 19.5``). :func:`to_obs`
therefore re-centres every replica's fluctuations on ``abarbar`` and leaves the rest to pyerrors,
derived quantities included (their fluctuations are the primaries' projected on the gradient of the
function at the means, Wolff section 2). One history is analysed exactly as pyerrors does.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

with warnings.catch_warnings():  # pyerrors imports the deprecated scipy.odr at import time
    warnings.simplefilter("ignore", DeprecationWarning)
    import pyerrors as pe

__all__ = ["DEFAULT_S", "to_obs", "tau_int", "mean_error", "derived", "gamma_method_numpy"]

DEFAULT_S = 1.5
_ENSEMBLE = "ens"


def _replicas(series: Any) -> list[np.ndarray]:
    a = np.asarray(series, dtype=np.float64)
    if a.ndim == 1:
        return [a]
    if a.ndim == 2:
        return [np.ascontiguousarray(a[:, r]) for r in range(a.shape[1])]
    raise ValueError(f"series must be 1D or 2D (n_meas, n_chains), got shape {a.shape}")


def to_obs(series: Any, name: str = _ENSEMBLE) -> pe.Obs:
    """``pyerrors.Obs`` for a 1D history or a 2D ``(n_meas, n_chains)`` array (columns = replicas), with
    every replica's fluctuations about the mean over all replicas (module docstring, Wolff section 3)."""
    reps = _replicas(series)
    if len(reps) == 1:
        return pe.Obs(reps, [name])
    names = [f"{name}|r{i}" for i in range(len(reps))]
    obs = pe.Obs(reps, names)
    mean = obs.value  # (1/N) sum_r N_r abar_r: the mean over all replicas
    for r_name, rep in zip(names, reps, strict=True):
        obs.deltas[r_name] = rep - mean
        obs.r_values[r_name] = mean
    return obs


def _analyse(obs: pe.Obs, S: float) -> pe.Obs:
    obs.gamma_method(S=S)
    return obs


def tau_int(series: Any, S: float = DEFAULT_S) -> tuple[float, float]:
    """``(tau_int, dtau_int)`` of a Monte Carlo history by the Gamma method (pyerrors; 0.5 = uncorrelated)."""
    obs = _analyse(to_obs(series), S)
    name = obs.e_names[0]
    return float(obs.e_tauint[name]), float(obs.e_dtauint[name])


def mean_error(series: Any, S: float = DEFAULT_S) -> tuple[float, float, float]:
    """``(mean, error of the mean, tau_int)`` by the Gamma method (pyerrors)."""
    obs = _analyse(to_obs(series), S)
    name = obs.e_names[0]
    return float(obs.value), float(obs.dvalue), float(obs.e_tauint[name])


def derived(fn: Callable[..., Any], *series: Any, S: float = DEFAULT_S) -> tuple[float, float]:
    """Value and Gamma-method error of ``fn(<a_1>, <a_2>, ...)`` for histories ``a_i`` measured on the
    same configurations (linear error propagation with autocorrelations, pyerrors).

    ``fn`` must be written with arithmetic operators / ``pyerrors`` functions, e.g. the Binder cumulant
    ``derived(lambda m2, m4: 1 - m4 / (3 * m2**2), M**2, M**4)``.
    """
    obs = [to_obs(s) for s in series]
    res = fn(*obs)
    res.gamma_method(S=S)
    return float(res.value), float(res.dvalue)


def gamma_method_numpy(series: Any, S: float = DEFAULT_S) -> dict[str, float]:
    """Independent implementation of Wolff's Gamma method (for cross-checks), one history or replicas.

    ``series``: 1D, or 2D ``(n, R)`` with ``R`` replicas of equal length ``n`` (``N = n R``).
    ``Gamma(t) = 1/(R (n - t)) sum_r sum_{i < n - t} (a_i^r - abar)(a_{i+t}^r - abar)`` for ``t < n // 2``,
    ``abar`` the mean over all ``N`` values (module docstring); automatic window as in the module docstring
    with the total ``N``; returns ``mean``, ``error``, ``tau_int`` (Wolff bias-corrected, eq. (49), with
    ``N``), ``dtau_int`` (eq. (42)) and ``window``.
    """
    a = np.asarray(series, dtype=np.float64)
    if a.ndim not in (1, 2):
        raise ValueError(f"gamma_method_numpy takes a 1D history or a 2D (n, R) array, got shape {a.shape}")
    a = a.reshape(a.shape[0], -1)
    length, n = a.shape[0], a.size  # replica length, total N
    mean = float(a.mean())
    d = a - mean
    w_max = length // 2

    # direct O(N W) autocovariance, evaluated lazily up to the window (kept deliberately different
    # from pyerrors' FFT over all lags)
    def gamma(t: int) -> float:
        return float(np.sum(d[: length - t] * d[t:]) / (d.shape[1] * (length - t)))

    g0 = gamma(0)
    if g0 == 0.0:
        return {"mean": mean, "error": 0.0, "tau_int": 0.5, "dtau_int": 0.0, "window": 0}
    rho = [1.0]
    window = max(w_max - 1, 0)
    for w in range(1, w_max):
        rho.append(gamma(w) / g0)
        tau_w = max(0.5 + math.fsum(rho[1:]), 0.5 + np.finfo(np.float64).eps)
        tau_exp = S / math.log((2 * tau_w + 1) / (2 * tau_w - 1))
        g = math.exp(-w / tau_exp) - tau_exp / math.sqrt(w * n)
        if g < 0:
            window = w
            break
    tau_w = max(0.5 + math.fsum(rho[1 : window + 1]), 0.5 + np.finfo(np.float64).eps)
    tau = tau_w * (1 + (2 * window + 1) / n)
    dtau = 2 * tau_w * math.sqrt(abs(window + 0.5 - tau_w) / n)
    err = math.sqrt(2 * tau * g0 / n)
    return {
        "mean": mean,
        "error": float(err),
        "tau_int": float(tau),
        "dtau_int": float(dtau),
        "window": window,
    }
