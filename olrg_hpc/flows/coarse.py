"""Priors from coarser lattices (Albandea et al., arXiv:2310.03381) and coarse-to-fine weight transfer.

Conventions (docs/phi4-hmc.md, "Actions and conversions"):

* Interleaving (``d = 2``): four coarse configurations ``phi_c^{(k)}``, ``k = 2a + b``, of size
  ``(L1/2) x (L2/2)`` make one fine configuration ``phi(2x + a, 2y + b) = phi_c^{(2a+b)}(x, y)``
  (:func:`interleave`; :func:`deinterleave` is its inverse). Array layout ``(*batch, 4, L1/2, L2/2)``.
* :class:`CoarsePrior`: ``z = s * interleave(four distinct configurations drawn at random from a stored coarse
  ensemble)``, ``s`` an optional field-conversion factor (default 1). Its log-density is
  ``log r(z) = -sum_k S_c(phi_c^{(k)}) - V log s - 4 log Z_c`` with ``phi_c^{(k)}`` the sublattices of
  ``z / s``. ``log Z_c`` is unknown and is *dropped*: ``log_prob`` is exact up to this constant, which shifts
  the reverse-KL loss and ``log w`` by a constant and changes neither the gradients, the ESS nor the MH
  acceptance. (The density is that of the ideal coarse theory; a finite ensemble only approximates it.)
* :class:`EnsemblePrior`: the variant with the same ``L`` and a smaller ``beta``: ``z`` = one configuration
  drawn from a stored ensemble of the prior action, ``log r(z) = -S_prior(z / s) - V log s`` (again without
  ``log Z``).
* :class:`RefinePrior` (the earlier variants the paper lists): ONE coarse configuration ``phi_c`` on the even
  sublattice, ``z(2x, 2y) = s phi_c(x, y)``, and Gaussian noise on the three others,
  ``z(2x + a, 2y + b) = m_ab(x, y) + sigma eps_ab(x, y)``, ``eps ~ N(0, 1)``. ``m_ab`` is the bilinear
  interpolation of ``s phi_c`` (periodic: ``m_01 = (c(x, y) + c(x, y+1))/2``, ``m_10 = (c(x, y) + c(x+1, y))/2``,
  ``m_11`` the mean of the four corners) with ``interpolate=True``, and 0 ("noise sublattices") otherwise.
  The map ``(phi_c, eps) -> z`` is triangular with diagonal ``s`` and ``sigma``, so
  ``log r(z) = -S_c(phi_c) - (V/4) log s - sum eps^2 / 2 - (3V/4) log(sigma sqrt(2 pi)) - log Z_c``
  (``log Z_c`` dropped as above). The long-range structure comes from the coarse ensemble; the flow only has
  to correlate each fine site with its neighbours. :func:`refine_sigma` gives the default width.
* Fields are in the tutorial convention of the respective :class:`~olrg_hpc.lattice.phi4.Phi4Action`. Two
  beta/lambda theories with different ``beta`` have different tutorial normalisations (``chi = c phi_tut``,
  ``c = sqrt(2 / beta)``); to feed a coarse ensemble at ``beta_c`` to a target at ``beta_f`` in the same
  ``chi`` units use ``scale = c_c / c_f``.
* Weight transfer: all layers are convolutional with circular padding, so parameters trained at ``L/2``
  (or any size) apply unchanged at ``L`` (:func:`transfer_params` returns a copy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from olrg_hpc.flows.model import Flow

__all__ = ["interleave", "deinterleave", "CoarsePrior", "EnsemblePrior", "RefinePrior", "RefineFlow",
           "refine_sigma", "transfer_params"]


def interleave(coarse: jax.Array) -> jax.Array:
    """``(*batch, 4, l1, l2) -> (*batch, 2 l1, 2 l2)`` with ``phi(2x + a, 2y + b) = coarse[2a + b](x, y)``."""
    *batch, four, l1, l2 = coarse.shape
    if four != 4:
        raise ValueError(f"need 4 coarse configurations on axis -3, got shape {coarse.shape}")
    c = coarse.reshape((*batch, 2, 2, l1, l2))  # [a, b, x, y]
    nb = len(batch)
    c = jnp.moveaxis(c, (nb, nb + 1, nb + 2, nb + 3), (nb + 1, nb + 3, nb, nb + 2))  # [x, a, y, b]
    return c.reshape((*batch, 2 * l1, 2 * l2))


def deinterleave(phi: jax.Array) -> jax.Array:
    """Inverse of :func:`interleave`: ``(*batch, L1, L2) -> (*batch, 4, L1/2, L2/2)``."""
    *batch, n1, n2 = phi.shape
    if n1 % 2 or n2 % 2:
        raise ValueError(f"lattice extents must be even, got {phi.shape[-2:]}")
    nb = len(batch)
    c = phi.reshape((*batch, n1 // 2, 2, n2 // 2, 2))  # [x, a, y, b]
    c = jnp.moveaxis(c, (nb, nb + 1, nb + 2, nb + 3), (nb + 2, nb, nb + 3, nb + 1))  # [a, b, x, y]
    return c.reshape((*batch, 4, n1 // 2, n2 // 2))


def _choose4(key: jax.Array, n: int) -> jax.Array:
    """Four distinct indices in ``[0, n)``, uniformly (sequential draws shifted past earlier picks)."""
    ks = jax.random.split(key, 4)
    picks: list[jax.Array] = []
    for j in range(4):
        i = jax.random.randint(ks[j], (), 0, n - j)
        # map i in [0, n - j) to the i-th index not yet picked (earlier picks in increasing order)
        if picks:
            for p in jnp.sort(jnp.stack(picks)):
                i = i + (i >= p).astype(i.dtype)
        picks.append(i)
    return jnp.stack(picks)


@partial(jax.tree_util.register_dataclass, data_fields=["action", "ensemble", "scale"], meta_fields=[])
@dataclass(frozen=True)
class CoarsePrior:
    """Interleaved coarse-ensemble prior (module docstring). ``ensemble``: ``(N, l1, l2)`` with ``N >= 4``,
    configurations of the coarse ``action`` (tutorial convention); ``scale``: field factor ``s``."""

    #: ensemble configurations one draw uses (prior reuse and cost in :mod:`olrg_hpc.flows.pipeline`)
    members_per_draw: ClassVar[int] = 4
    action: Any
    ensemble: jax.Array
    scale: Any = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return (2 * self.ensemble.shape[-2], 2 * self.ensemble.shape[-1])

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        idx = jax.vmap(_choose4, in_axes=(0, None))(jax.random.split(key, n), self.ensemble.shape[0])
        return self.scale * interleave(self.ensemble[idx])

    def log_prob(self, z: jax.Array) -> jax.Array:
        vol = math.prod(z.shape[-2:])
        coarse = deinterleave(z / self.scale)
        return -jnp.sum(self.action.action(coarse), axis=-1) - vol * jnp.log(jnp.asarray(self.scale, z.dtype))


@partial(jax.tree_util.register_dataclass, data_fields=["action", "ensemble", "scale"], meta_fields=[])
@dataclass(frozen=True)
class EnsemblePrior:
    """Same-``L`` prior from an ensemble of a nearby (e.g. smaller-``beta``) action (module docstring)."""

    #: ensemble configurations one draw uses (prior reuse and cost in :mod:`olrg_hpc.flows.pipeline`)
    members_per_draw: ClassVar[int] = 1
    action: Any
    ensemble: jax.Array
    scale: Any = 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.ensemble.shape[-2], self.ensemble.shape[-1])

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        idx = jax.random.randint(key, (n,), 0, self.ensemble.shape[0])
        return self.scale * self.ensemble[idx]

    def log_prob(self, z: jax.Array) -> jax.Array:
        vol = math.prod(z.shape[-2:])
        return -self.action.action(z / self.scale) - vol * jnp.log(jnp.asarray(self.scale, z.dtype))


def _refine_means(cf: jax.Array, interpolate: bool) -> jax.Array:
    """Means of the sublattices ``(0, 1), (1, 0), (1, 1)`` given the scaled coarse field ``cf`` (``(*b, l1, l2)``):
    ``(*b, 3, l1, l2)``, bilinear (periodic) or zero."""
    if not interpolate:
        return jnp.zeros((*cf.shape[:-2], 3, *cf.shape[-2:]), cf.dtype)
    right = jnp.roll(cf, -1, axis=-1)  # c(x, y + 1)
    down = jnp.roll(cf, -1, axis=-2)  # c(x + 1, y)
    diag = jnp.roll(down, -1, axis=-1)
    return jnp.stack([(cf + right) / 2, (cf + down) / 2, (cf + right + down + diag) / 4], axis=-3)


@partial(jax.tree_util.register_dataclass, data_fields=["action", "ensemble", "scale", "sigma"],
         meta_fields=["interpolate"])
@dataclass(frozen=True)
class RefinePrior:
    """One coarse configuration plus noise sublattices, bilinearly interpolated or not (module docstring).
    ``ensemble``: ``(N, l1, l2)`` configurations of the coarse ``action``; ``scale``: field factor ``s``;
    ``sigma``: width of the noise (fine tutorial units)."""

    #: ensemble configurations one draw uses (prior reuse and cost in :mod:`olrg_hpc.flows.pipeline`)
    members_per_draw: ClassVar[int] = 1
    action: Any
    ensemble: jax.Array
    scale: Any = 1.0
    sigma: Any = 0.5
    interpolate: bool = True

    @property
    def shape(self) -> tuple[int, int]:
        return (2 * self.ensemble.shape[-2], 2 * self.ensemble.shape[-1])

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        k_idx, k_eps = jax.random.split(key)
        cf = self.scale * self.ensemble[jax.random.randint(k_idx, (n,), 0, self.ensemble.shape[0])]
        eps = jax.random.normal(k_eps, (n, 3, *cf.shape[-2:]), cf.dtype)
        rest = _refine_means(cf, self.interpolate) + self.sigma * eps
        return interleave(jnp.concatenate([cf[:, None], rest], axis=1))

    def log_prob(self, z: jax.Array) -> jax.Array:
        subs = deinterleave(z)
        cf = subs[..., 0, :, :]
        eps = (subs[..., 1:, :, :] - _refine_means(cf, self.interpolate)) / self.sigma
        n_c = math.prod(cf.shape[-2:])
        log_s = jnp.log(jnp.asarray(self.scale, z.dtype))
        log_norm = jnp.log(jnp.asarray(self.sigma, z.dtype)) + 0.5 * math.log(2 * math.pi)
        return (-self.action.action(cf / self.scale) - n_c * log_s
                - 0.5 * jnp.sum(eps**2, axis=(-3, -2, -1)) - 3 * n_c * log_norm)


class RefineFlow(nn.Module):
    """A flow at ``L/2`` refined to ``L``: :class:`RefinePrior` with a coarse *flow* in place of the ensemble.

    Input ``x``, ``(*batch, L1, L2)`` (standard normal under a Gaussian prior). Its even sublattice is the coarse
    flow's input, ``phi_c = F_c(x(2x, 2y))``; the three others are the noise: ``y(2x, 2y) = s phi_c(x, y)`` and
    ``y(2x + a, 2y + b) = m_ab(x, y) + sigma_ab x(2x + a, 2y + b)``, with ``m_ab`` the bilinear interpolation of
    ``s phi_c`` (``interpolate``) or 0, as in :class:`RefinePrior`, and one trainable width per sublattice,
    ``sigma_ab = e^{log_sigma_ab}`` (parameter ``log_sigma (3,)``; zeros at initialisation, i.e. ``sigma = 1``:
    set it, e.g. from :func:`refine_sigma` of the coarse flow's samples). ``s``: the field factor between the two
    tutorial normalisations (``scale``, fixed). The map is triangular, so
    ``log_det = log det F_c + (V/4) [log s + sum_ab log sigma_ab]``.

    It is a bijection of the whole lattice: a Gaussian-prior flow whose first layer is a ``RefineFlow`` samples
    ``L`` through ``L/2`` (and ``L/4``, ..., when the coarse flow begins with one too) with an exact density,
    and trains end to end by reverse KL, the coarse flow included. Unlike :class:`RefinePrior` nothing is drawn
    from an HMC ensemble, so flow-MH pays no prior. Parameters ``{"coarse": <the coarse flow's>, "log_sigma"}``;
    a coarse flow's trained parameters drop in unchanged. Z2-equivariant when the coarse flow is.
    """

    coarse: Flow
    scale: float = 1.0
    interpolate: bool = True

    def setup(self) -> None:
        self.log_sigma = self.param("log_sigma", nn.initializers.zeros_init(), (3,))

    def _widths(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``sigma_ab`` shaped for the ``(*b, 3, l1, l2)`` noise sublattices, and this layer's own ``log_det``."""
        log_sig = self.log_sigma.astype(x.dtype)
        n_c = math.prod(x.shape[-2:]) // 4
        return jnp.exp(log_sig)[:, None, None], n_c * (math.log(self.scale) + jnp.sum(log_sig))

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        subs = deinterleave(x)
        phi_c, log_det = self.coarse(subs[..., 0, :, :])
        cf = self.scale * phi_c
        sig, log_det_own = self._widths(x)
        rest = _refine_means(cf, self.interpolate) + sig * subs[..., 1:, :, :]
        return interleave(jnp.concatenate([cf[..., None, :, :], rest], axis=-3)), log_det + log_det_own

    def inverse(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        subs = deinterleave(y)
        cf = subs[..., 0, :, :]
        sig, log_det_own = self._widths(y)
        eps = (subs[..., 1:, :, :] - _refine_means(cf, self.interpolate)) / sig
        xc, log_det_inv = self.coarse.inverse(cf / self.scale)
        return interleave(jnp.concatenate([xc[..., None, :, :], eps], axis=-3)), log_det_inv - log_det_own


def refine_sigma(ensemble: Any, scale: float, interpolate: bool) -> float:
    """Default noise width of :class:`RefinePrior` from the coarse ensemble (fine units, times ``scale``).

    Interpolated: half the rms nearest-neighbour difference of the coarse field, the spread of a midpoint about
    the mean of its ends for a field whose differences grow like a random walk (a Brownian bridge: a variance
    of ``v/4`` for ends ``v`` apart). Zero-mean noise: the rms of the coarse field itself.
    """
    c = np.asarray(ensemble, np.float64)
    if interpolate:
        d2 = np.mean([np.mean((c - np.roll(c, 1, axis=ax)) ** 2) for ax in (-1, -2)])
        return float(scale * 0.5 * np.sqrt(d2))
    return float(scale * np.sqrt(np.mean(c**2)))


def transfer_params(params: Any, dtype: Any = None) -> Any:
    """Parameters trained on one lattice size, for a flow on another (convolutional weights are
    size-independent, so this is a copy, optionally cast to ``dtype``)."""
    return jax.tree.map(lambda p: jnp.array(p, dtype=dtype), params)
