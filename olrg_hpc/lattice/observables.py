"""Observables of phi^4 configurations (pure numpy; accepts numpy or JAX arrays).

Conventions (docs/conventions.md section 2; Albergo et al. arXiv:2101.08176 section IV.A; Albandea et al.
arXiv:2302.08408 section 4). A configuration array has shape ``(*batch, L_1, ..., L_d)``: the lattice is
the last ``ndim`` axes, every leading index is one configuration (Monte Carlo time, chain, ...).
``V = prod L_mu``. Two kinds of functions:

* per-configuration ("primary") observables return one value per configuration (shape ``batch``):
  :func:`magnetization` ``M = (1/V) sum_x phi_x``, :func:`abs_magnetization`, :func:`phi2`
  ``(1/V) sum_x phi_x^2``, :func:`nearest_neighbour` ``(1/(d V)) sum_x sum_mu phi_x phi_{x+mu}``,
  :func:`zero_momentum_correlator` ``G(t)``, :func:`momentum_propagator` ``G~(p)``, :func:`action_density`.
* ensemble estimators average over *all* leading axes: :func:`susceptibility` (``chi2 = V <M^2>`` or the
  connected ``V (<M^2> - <|M|>^2)``), :func:`binder_cumulant`, :func:`second_moment_correlation_length`.
  For error bars feed the primary observables to :func:`olrg_hpc.lattice.autocorr.derived`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "volume",
    "magnetization",
    "abs_magnetization",
    "phi2",
    "nearest_neighbour",
    "action_density",
    "zero_momentum_correlator",
    "momentum_propagator",
    "susceptibility",
    "binder_cumulant",
    "binder_ratio",
    "xi2_from_propagators",
    "second_moment_correlation_length",
]


def _axes(ndim: int) -> tuple[int, ...]:
    return tuple(range(-ndim, 0))


def volume(phi: Any, ndim: int = 2) -> int:
    """Number of lattice sites ``V`` (product of the last ``ndim`` extents)."""
    return math.prod(np.shape(phi)[-ndim:])


def magnetization(phi: Any, ndim: int = 2) -> np.ndarray:
    """``M = (1/V) sum_x phi_x`` per configuration."""
    return np.mean(np.asarray(phi), axis=_axes(ndim))


def abs_magnetization(phi: Any, ndim: int = 2) -> np.ndarray:
    """``|M|`` per configuration."""
    return np.abs(magnetization(phi, ndim))


def phi2(phi: Any, ndim: int = 2) -> np.ndarray:
    """``(1/V) sum_x phi_x^2`` per configuration (its ensemble mean is ``<phi^2>``)."""
    return np.mean(np.asarray(phi) ** 2, axis=_axes(ndim))


def nearest_neighbour(phi: Any, ndim: int = 2) -> np.ndarray:
    """``(1/(d V)) sum_x sum_mu phi_x phi_{x+mu}`` per configuration (mean is ``<phi_x phi_{x+e}>``)."""
    phi = np.asarray(phi)
    acc = sum(np.mean(phi * np.roll(phi, -1, axis=ax), axis=_axes(ndim)) for ax in _axes(ndim))
    return acc / ndim


def action_density(phi: Any, action: Any) -> np.ndarray:
    """``S[phi] / V`` per configuration for a :class:`~olrg_hpc.lattice.phi4.Phi4Action` ``action``."""
    return np.asarray(action.action(phi)) / volume(phi, action.ndim)


def zero_momentum_correlator(phi: Any, ndim: int = 2, time_axis: int = 0) -> np.ndarray:
    """Zero-momentum two-point function per configuration, shape ``(*batch, L_t)``.

    ``G(t) = sum_{x_spatial} (1/V) sum_y phi_y phi_{y + (t, x_spatial)} = (1/V) sum_{t0} Phi(t0) Phi(t0 + t)``
    with the time-slice sums ``Phi(t) = sum_{x_spatial} phi(t, x_spatial)`` (arXiv:2101.08176 eq. (33),
    not connected). ``sum_t G(t) = V M^2`` (so its ensemble mean sums to ``chi2``). For the connected
    correlator subtract ``L^(d-1) <M>^2`` (zero by Z2 symmetry in a finite periodic volume).
    ``time_axis`` counts lattice axes (0 = first lattice axis).
    """
    phi = np.asarray(phi)
    nb = phi.ndim - ndim
    moved = np.moveaxis(phi, nb + time_axis, -1)
    slices = np.sum(moved, axis=tuple(range(nb, phi.ndim - 1)))
    lt = slices.shape[-1]
    f = np.fft.rfft(slices, axis=-1)
    g = np.fft.irfft(np.abs(f) ** 2, n=lt, axis=-1)
    return g / volume(phi, ndim)


def momentum_propagator(phi: Any, mode: tuple[int, ...], ndim: int = 2) -> np.ndarray:
    """``G~(p) = (1/V) |sum_x phi_x e^{-i p.x}|^2`` per configuration, ``p_mu = 2 pi mode_mu / L_mu``.

    Ensemble mean: the Fourier transform of the (full) two-point function, ``sum_x G(x) e^{-i p.x}``.
    """
    phi = np.asarray(phi)
    if len(mode) != ndim:
        raise ValueError(f"mode {mode} must have {ndim} components")
    phase = np.ones(phi.shape[-ndim:], dtype=complex)
    for k, (n, ll) in enumerate(zip(mode, phi.shape[-ndim:], strict=True)):
        shape = [1] * ndim
        shape[k] = ll
        phase = phase * np.exp(-2j * np.pi * n * np.arange(ll) / ll).reshape(shape)
    ft = np.sum(phi * phase, axis=_axes(ndim))
    return np.abs(ft) ** 2 / volume(phi, ndim)


def susceptibility(phi: Any, ndim: int = 2, connected: bool = False) -> float:
    """Ensemble ``chi2 = V <M^2>`` (default) or connected ``V (<M^2> - <|M|>^2)`` (``connected=True``).

    The connected form uses ``|M|`` because ``<M> = 0`` by Z2 symmetry on a finite periodic lattice.
    """
    m = magnetization(phi, ndim)
    v = volume(phi, ndim)
    chi = v * np.mean(m**2)
    if connected:
        chi = chi - v * np.mean(np.abs(m)) ** 2
    return float(chi)


def binder_cumulant(phi: Any, ndim: int = 2) -> float:
    """Binder cumulant ``U_4 = 1 - <M^4> / (3 <M^2>^2)``: 0 for a Gaussian (disordered) M, 2/3 deep in
    the ordered phase. Related to :func:`binder_ratio` by ``U_4 = 1 - ratio / 3``."""
    return 1.0 - binder_ratio(phi, ndim) / 3.0


def binder_ratio(phi: Any, ndim: int = 2) -> float:
    """Binder ratio ``<M^4> / <M^2>^2`` (3 for a Gaussian M, 1 deep in the ordered phase)."""
    m = magnetization(phi, ndim)
    return float(np.mean(m**4) / np.mean(m**2) ** 2)


def xi2_from_propagators(g0: Any, gpmin: Any, L: int) -> Any:
    """Second-moment correlation length squared from ensemble means (works on ``pyerrors.Obs`` too).

    ``xi^2 = (G~(0) / G~(p_min) - 1) / (4 sin^2(pi / L))``, ``p_min = 2 pi / L`` (standard lattice
    definition, e.g. Caracciolo et al. hep-lat/9409004 eq. (2.8); for a free field ``xi = 1/sqrt(m2)``
    exactly in the tutorial convention).
    """
    return (g0 / gpmin - 1.0) / (4.0 * math.sin(math.pi / L) ** 2)


def second_moment_correlation_length(phi: Any, ndim: int = 2) -> float:
    """Ensemble second-moment correlation length ``xi_2`` (:func:`xi2_from_propagators`).

    ``G~(0) = V <M^2>`` (full, not connected: ``<M> = 0`` by Z2 symmetry) and ``G~(p_min)`` averaged
    over the ``d`` lattice directions. Requires a hypercubic lattice (all ``L_mu`` equal).
    """
    shape = np.shape(phi)[-ndim:]
    if len(set(shape)) != 1:
        raise ValueError(f"second-moment xi needs equal extents, got {shape}")
    g0 = np.mean(momentum_propagator(phi, (0,) * ndim, ndim))
    gp = np.mean(
        [
            np.mean(momentum_propagator(phi, tuple(int(k == mu) for k in range(ndim)), ndim))
            for mu in range(ndim)
        ]
    )
    return float(math.sqrt(xi2_from_propagators(g0, gp, shape[0])))
