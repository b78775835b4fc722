"""Priors from coarser lattices (Albandea et al., arXiv:2310.03381) and coarse-to-fine weight transfer.

Conventions (science.md section 2):

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
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["interleave", "deinterleave", "CoarsePrior", "EnsemblePrior", "transfer_params"]


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


def transfer_params(params: Any, dtype: Any = None) -> Any:
    """Parameters trained on one lattice size, for a flow on another (convolutional weights are
    size-independent, so this is a copy, optionally cast to ``dtype``)."""
    return jax.tree.map(lambda p: jnp.array(p, dtype=dtype), params)
