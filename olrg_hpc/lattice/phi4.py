"""Real scalar phi^4 theory on a d-dimensional periodic hypercubic lattice (JAX, float64).

Conventions (docs: ``docs/conventions.md`` section 2; Albergo et al. arXiv:2101.08176 eq. (30);
Albandea et al. arXiv:2302.08408 section 4 / arXiv:2310.03381 eq. (1)). All sums run over the ``V = L^d``
sites ``x`` and the ``d`` forward unit vectors ``mu``; boundary conditions are periodic.

*Tutorial* (the convention of :class:`Phi4Action`, parameters ``m2``, ``lam``)::

    S_tut[phi] = sum_x [ sum_mu (2 phi_x^2 - phi_x phi_{x+mu} - phi_x phi_{x-mu}) + m2 phi_x^2 + lam phi_x^4 ]
               = sum_x [ -2 sum_mu phi_x phi_{x+mu} + (2d + m2) phi_x^2 + lam phi_x^4 ]

(the second line uses periodicity, ``sum_x phi_x phi_{x-mu} = sum_x phi_x phi_{x+mu}``). The free
propagator is ``G(p) = 1 / [2 (p_hat^2 + m2)]`` with ``p_hat^2 = sum_mu 4 sin^2(p_mu / 2)``.

*beta/lambda* (Albandea et al., parameters ``beta``, ``lam_bl``, field ``chi``)::

    S_bl[chi] = sum_x [ -beta sum_mu chi_x chi_{x+mu} + (1 - 2 lam_bl) chi_x^2 + lam_bl chi_x^4 ]

*Hopping* (parameters ``kappa``, ``lam_h``, field ``phi_h``): identical to beta/lambda with
``beta = 2 kappa``::

    S_h[phi_h] = sum_x [ -2 kappa sum_mu phi_h,x phi_h,x+mu + (1 - 2 lam_h) phi_h,x^2 + lam_h phi_h,x^4 ]

The frequently quoted variant ``... + phi_h^2 + lam_h (phi_h^2 - 1)^2`` differs from this one by the
field-independent constant ``lam_h * V`` (``include_constant=True`` in :func:`hopping_action` adds it);
it changes no expectation value.

Conversions (exact, *no* constant offset between ``S_tut`` and ``S_bl``/``S_h`` as written above):
``chi = c phi_tut`` with ``beta c^2 = 2``, ``(1 - 2 lam_bl) c^2 = 2d + m2``, ``lam_bl c^4 = lam``, i.e.::

    c = sqrt(2 / beta),  m2 = 2 (1 - 2 lam_bl) / beta - 2d,  lam = 4 lam_bl / beta^2,
    phi_tut = sqrt(kappa) phi_h,  m2 = (1 - 2 lam_h) / kappa - 2d,  lam = lam_h / kappa^2.

Example: the tutorial point ``(m2, lam) = (-4, 8)`` in 2D is the beta/lambda theory at
``beta = 0.5, lam_bl = 0.5`` with ``chi = 2 phi_tut`` (``kappa = 0.25``).

Arrays: a configuration has shape ``(*batch, L_1, ..., L_d)``; the lattice occupies the *last*
``ndim`` axes and any leading axes are batch axes (independent configurations / chains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from olrg_hpc.jaxsetup import enable_x64

enable_x64()

__all__ = [
    "Phi4Action",
    "beta_lambda_action",
    "hopping_action",
    "tutorial_to_beta_lambda_field",
    "beta_lambda_to_tutorial_field",
    "tutorial_to_hopping_field",
    "hopping_to_tutorial_field",
    "free_field_propagator",
    "free_field_values",
]


def _lattice_axes(ndim: int) -> tuple[int, ...]:
    return tuple(range(-ndim, 0))


def _forward_hopping(phi: jax.Array, ndim: int) -> jax.Array:
    """Per-site ``sum_mu phi_x phi_{x+mu}`` (forward neighbours only)."""
    hop = jnp.zeros_like(phi)
    for ax in _lattice_axes(ndim):
        hop = hop + phi * jnp.roll(phi, -1, axis=ax)
    return hop


def _neighbour_sum(phi: jax.Array, ndim: int) -> jax.Array:
    """Per-site ``sum_mu (phi_{x+mu} + phi_{x-mu})``."""
    nb = jnp.zeros_like(phi)
    for ax in _lattice_axes(ndim):
        nb = nb + jnp.roll(phi, -1, axis=ax) + jnp.roll(phi, 1, axis=ax)
    return nb


@partial(jax.tree_util.register_dataclass, data_fields=["m2", "lam"], meta_fields=["ndim"])
@dataclass(frozen=True)
class Phi4Action:
    """phi^4 action in the tutorial convention (arXiv:2101.08176 eq. (30); docs/conventions.md section 2).

    ``S = sum_x [ sum_mu (2 phi_x^2 - phi_x phi_{x+mu} - phi_x phi_{x-mu}) + m2 phi_x^2 + lam phi_x^4 ]``
    on a periodic lattice with ``ndim`` dimensions (the last ``ndim`` axes of the field).

    The instance is a JAX pytree with leaves ``(m2, lam)`` and static ``ndim``: jitted functions take it
    as an ordinary argument and changing the couplings does not recompile. (It is also hashable while
    its fields are Python floats.)
    """

    m2: float
    lam: float
    ndim: int = 2

    # ---------------------------------------------------------------- local coefficients
    @property
    def hopping_coefficient(self) -> float:
        """``a`` in ``S = sum_x [-a sum_mu phi_x phi_{x+mu} + b phi_x^2 + c phi_x^4]`` (tutorial: a = 2)."""
        return 2.0

    @property
    def mass_coefficient(self) -> float:
        """``b = 2 d + m2`` in the local form of the action."""
        return 2.0 * self.ndim + self.m2

    # ---------------------------------------------------------------- action, density, force
    def action_density(self, phi: jax.Array) -> jax.Array:
        """Per-site action density ``s_x`` (same shape as ``phi``) with ``sum_x s_x = S``.

        Symmetric split of the kinetic term: ``s_x = -sum_mu phi_x (phi_{x+mu} + phi_{x-mu})
        + (2d + m2) phi_x^2 + lam phi_x^4``, i.e. each bond is shared half/half by its end points.
        """
        phi = jnp.asarray(phi)
        return -phi * _neighbour_sum(phi, self.ndim) + self.mass_coefficient * phi**2 + self.lam * phi**4

    def action(self, phi: jax.Array) -> jax.Array:
        """``S[phi]``, summed over the last ``ndim`` axes; returns shape ``phi.shape[:-ndim]``."""
        phi = jnp.asarray(phi)
        dens = (
            -self.hopping_coefficient * _forward_hopping(phi, self.ndim)
            + self.mass_coefficient * phi**2
            + self.lam * phi**4
        )
        return jnp.sum(dens, axis=_lattice_axes(self.ndim))

    def __call__(self, phi: jax.Array) -> jax.Array:
        return self.action(phi)

    def force(self, phi: jax.Array) -> jax.Array:
        """Analytic HMC force ``F_x = -dS/dphi_x = 2 sum_mu (phi_{x+mu} + phi_{x-mu}) - 2 (2d + m2) phi_x
        - 4 lam phi_x^3`` (same shape as ``phi``)."""
        phi = jnp.asarray(phi)
        nb = _neighbour_sum(phi, self.ndim)
        return 2.0 * nb - 2.0 * self.mass_coefficient * phi - 4.0 * self.lam * (phi * phi * phi)

    # ---------------------------------------------------------------- conversions
    @classmethod
    def from_beta_lambda(cls, beta: float, lam: float, ndim: int = 2) -> tuple[Phi4Action, float]:
        """Tutorial-convention action equivalent to the beta/lambda action ``S_bl(beta, lam)``.

        Returns ``(action, c)`` with ``chi_betalam = c * phi_tut``, ``c = sqrt(2 / beta)``, and
        ``S_tut(phi_tut) = S_bl(c phi_tut)`` exactly (no constant offset).
        ``m2 = 2 (1 - 2 lam) / beta - 2 d``, ``lam_tut = 4 lam / beta^2``.
        """
        if beta <= 0:
            raise ValueError(f"beta must be positive, got {beta}")
        c2 = 2.0 / beta
        return cls(m2=(1.0 - 2.0 * lam) * c2 - 2.0 * ndim, lam=lam * c2 * c2, ndim=ndim), math.sqrt(c2)

    @classmethod
    def from_hopping(cls, kappa: float, lam: float, ndim: int = 2) -> tuple[Phi4Action, float]:
        """Tutorial-convention action equivalent to the hopping action ``S_h(kappa, lam_h)``.

        Returns ``(action, s)`` with ``phi_h = s * phi_tut``, ``s = 1 / sqrt(kappa)`` (docs/conventions.md:
        ``phi_tut = sqrt(kappa) phi_h``, ``m2 = (1 - 2 lam_h)/kappa - 2d``, ``lam = lam_h / kappa^2``).
        Same as :meth:`from_beta_lambda` with ``beta = 2 kappa``.
        """
        return cls.from_beta_lambda(2.0 * kappa, lam, ndim)

    def to_beta_lambda(self) -> tuple[float, float, float]:
        """Inverse of :meth:`from_beta_lambda`: ``(beta, lam_bl, c)`` with ``chi = c phi_tut``.

        ``c^2`` is the positive root of ``c^4 - (2d + m2) c^2 - 2 lam = 0``. Requires ``lam > 0`` or
        ``2d + m2 > 0`` (otherwise no beta/lambda form with ``beta > 0`` exists).
        """
        b = self.mass_coefficient
        c2 = 0.5 * (b + math.sqrt(b * b + 8.0 * self.lam))
        if c2 <= 0:
            raise ValueError(f"no beta/lambda form for m2={self.m2}, lam={self.lam}")
        return 2.0 / c2, self.lam / (c2 * c2), math.sqrt(c2)

    def to_hopping(self) -> tuple[float, float, float]:
        """``(kappa, lam_h, s)`` with ``phi_h = s phi_tut`` (``kappa = beta / 2``)."""
        beta, lam_bl, c = self.to_beta_lambda()
        return beta / 2.0, lam_bl, c


# -------------------------------------------------------------------- other conventions, direct forms
def beta_lambda_action(chi: jax.Array, beta: float, lam: float, ndim: int = 2) -> jax.Array:
    """``S_bl[chi] = sum_x [-beta sum_mu chi_x chi_{x+mu} + (1 - 2 lam) chi_x^2 + lam chi_x^4]``
    (Albandea et al. arXiv:2310.03381 eq. (1); forward neighbours only). Batched like :class:`Phi4Action`."""
    chi = jnp.asarray(chi)
    dens = -beta * _forward_hopping(chi, ndim) + (1.0 - 2.0 * lam) * chi**2 + lam * chi**4
    return jnp.sum(dens, axis=_lattice_axes(ndim))


def hopping_action(
    phi_h: jax.Array, kappa: float, lam: float, ndim: int = 2, include_constant: bool = False
) -> jax.Array:
    """``S_h = sum_x [-2 kappa sum_mu phi_x phi_{x+mu} + (1 - 2 lam) phi_x^2 + lam phi_x^4]``.

    With ``include_constant=True`` it is the form ``... + phi^2 + lam (phi^2 - 1)^2``, which is larger
    by the constant ``lam * V``.
    """
    s = beta_lambda_action(phi_h, 2.0 * kappa, lam, ndim)
    if include_constant:
        volume = math.prod(jnp.shape(phi_h)[-ndim:])
        s = s + lam * volume
    return s


def tutorial_to_beta_lambda_field(phi: jax.Array, beta: float) -> jax.Array:
    """``chi = sqrt(2 / beta) phi_tut``."""
    return math.sqrt(2.0 / beta) * jnp.asarray(phi)


def beta_lambda_to_tutorial_field(chi: jax.Array, beta: float) -> jax.Array:
    """``phi_tut = sqrt(beta / 2) chi``."""
    return math.sqrt(beta / 2.0) * jnp.asarray(chi)


def tutorial_to_hopping_field(phi: jax.Array, kappa: float) -> jax.Array:
    """``phi_h = phi_tut / sqrt(kappa)``."""
    return jnp.asarray(phi) / math.sqrt(kappa)


def hopping_to_tutorial_field(phi_h: jax.Array, kappa: float) -> jax.Array:
    """``phi_tut = sqrt(kappa) phi_h``."""
    return math.sqrt(kappa) * jnp.asarray(phi_h)


def free_field_propagator(
    shape: tuple[int, int], m2: Any, dtype: Any = jnp.float64, z: Any = 1.0
) -> jax.Array:
    """``G(p) = 1 / [2 (z p_hat^2 + m2)]`` on the ``fft2`` momentum grid, ``p_hat^2 = sum_mu 4 sin^2(p_mu/2)``
    (``z = 1``: the free propagator of the tutorial action; ``m2``, ``z`` may be traced)."""
    p1 = 2.0 * jnp.pi * jnp.fft.fftfreq(shape[0])
    p2 = 2.0 * jnp.pi * jnp.fft.fftfreq(shape[1])
    phat2 = 4.0 * jnp.sin(p1 / 2)[:, None] ** 2 + 4.0 * jnp.sin(p2 / 2)[None, :] ** 2
    return (1.0 / (2.0 * (z * phat2 + m2))).astype(dtype)


def free_field_values(shape: tuple[int, int], m2: float) -> dict[str, float]:
    """Exact ``<phi^2>`` and ``chi2 = V <M^2>`` of the free field (``lam = 0``, tutorial convention, ``m2 > 0``)
    on a periodic ``shape`` lattice: ``<phi^2> = (1/V) sum_p G(p)`` and ``chi2 = G(0) = 1 / (2 m2)``
    (docs/conventions.md, "Exact free-field checks": 0.1270869988 and 0.5 at ``L = 8, m2 = 1``)."""
    if not m2 > 0:
        raise ValueError(f"the free field needs m2 > 0 (got {m2})")
    g = free_field_propagator(shape, m2)
    return {"phi2": float(jnp.mean(g)), "chi2": float(g[0, 0])}
