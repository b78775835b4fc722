"""Invertible layers for normalizing flows on 2D periodic lattices (JAX + ``flax.linen``).

Conventions (science.md section 2; Albergo et al., arXiv:2101.08176 section III; Albandea et al.,
arXiv:2310.03381 and arXiv:2302.08408):

* A field has shape ``(batch, L_1, L_2)``; the lattice is the last two axes, periodic. Networks see it as
  ``(batch, L_1, L_2, 1)`` (NHWC) and use ``padding="CIRCULAR"`` so that they respect the periodicity and
  their weights do not depend on ``L``.
* Every layer maps ``x -> y`` (direction prior -> target) and returns ``(y, log_det)`` with
  ``log_det = log |det dy/dx|`` per configuration (shape ``(batch,)``); ``inverse(y)`` returns
  ``(x, log_det_inverse)`` with ``log_det_inverse = -log_det``.
* Checkerboard masks: the layer of parity ``p`` *updates* the sites with ``(x_1 + x_2) % 2 == p`` and keeps
  the other sublattice frozen; the networks only see the frozen sublattice, so the Jacobian is triangular.
* Real-NVP affine coupling (tutorial, arXiv:2101.08176 eq. (27)): on active sites
  ``y = x e^{s(x_f)} + t(x_f)``, ``log_det = sum_active s``.
* Z2-equivariant coupling (Albandea et al.): ``y = x e^{-|s(x_f)|} + t(x_f)`` with odd networks (convolutions
  without bias, odd activations, final tanh) so that ``s(-x) = -s(x)``, ``t(-x) = -t(x)`` and ``F(-x) = -F(x)``;
  ``log_det = -sum_active |s|``.
* Global rescaling: ``y = e^{a} x`` with one parameter ``a`` (initialised to 0), ``log_det = V a``.
* Exact free-field map (no parameters): ``y = K x`` with ``K`` the circulant matrix whose eigenvalues are
  ``sqrt(G(p))``, ``G(p) = 1 / [2 (p_hat^2 + m2)]`` (tutorial convention, ``lam = 0``). For ``x ~ N(0, 1)``,
  ``y`` is distributed exactly as ``exp(-S_tut[y]) / Z``: the trivializing map of the free theory is linear.
  ``log_det = (1/2) sum_p log G(p)``.

Parameters are ordinary ``flax.linen`` parameter pytrees (``module.init(key, x)`` / ``module.apply``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = [
    "checkerboard_mask",
    "ConvNet",
    "AffineCoupling",
    "GlobalRescaling",
    "FreeFieldLinear",
    "free_field_propagator",
    "ACTIVATIONS",
]

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "leaky_relu": nn.leaky_relu,
    "tanh": jnp.tanh,
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
}

#: odd activations, allowed in Z2-equivariant networks
ODD_ACTIVATIONS = ("tanh",)


def checkerboard_mask(shape: tuple[int, int], parity: int, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """``1`` on sites with ``(x_1 + x_2) % 2 == parity`` (the *active* sublattice), ``0`` elsewhere."""
    i, j = jnp.indices(shape)
    return ((i + j) % 2 == parity).astype(dtype)


class ConvNet(nn.Module):
    """Stack of circularly padded 2D convolutions ``1 -> hidden[0] -> ... -> out_channels``.

    ``activation`` between layers, optional ``tanh`` on the output. Input ``(batch, L1, L2)``, output
    ``(batch, L1, L2, out_channels)``. With ``use_bias=False`` and an odd activation the net is odd.
    """

    hidden: Sequence[int] = (8, 8)
    out_channels: int = 2
    kernel_size: int = 3
    activation: str = "leaky_relu"
    final_tanh: bool = True
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = ACTIVATIONS[self.activation]
        h = x[..., None]
        feats = (*self.hidden, self.out_channels)
        for n, f in enumerate(feats):
            h = nn.Conv(
                features=f,
                kernel_size=(self.kernel_size, self.kernel_size),
                padding="CIRCULAR",
                use_bias=self.use_bias,
                param_dtype=x.dtype,
                name=f"conv_{n}",
            )(h)
            if n < len(feats) - 1:
                h = act(h)
        return jnp.tanh(h) if self.final_tanh else h


class AffineCoupling(nn.Module):
    """Checkerboard affine coupling layer (Real-NVP, or Z2-equivariant with ``z2=True``).

    ``parity``: which sublattice is updated (module docstring). ``hidden``, ``kernel_size``,
    ``activation``, ``final_tanh``, ``use_bias`` configure the :class:`ConvNet` that outputs ``(s, t)``.
    With ``z2=True`` the transform is ``y = x e^{-|s|} + t``; the net must then be odd: ``use_bias`` is
    forced off and ``activation`` must be odd (``"tanh"``). Albandea's layer is ``z2=True, hidden=()``: a
    single ``Conv2d(1 -> 2, k x k)`` without bias followed by ``tanh``.
    """

    parity: int
    hidden: Sequence[int] = (8, 8)
    kernel_size: int = 3
    activation: str = "leaky_relu"
    final_tanh: bool = True
    use_bias: bool = True
    z2: bool = False

    def setup(self) -> None:
        if self.parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {self.parity}")
        if self.z2 and self.hidden and self.activation not in ODD_ACTIVATIONS:
            raise ValueError(f"a Z2-equivariant coupling needs an odd activation {ODD_ACTIVATIONS}")
        self.net = ConvNet(
            hidden=tuple(self.hidden),
            out_channels=2,
            kernel_size=self.kernel_size,
            activation=self.activation,
            final_tanh=self.final_tanh,
            use_bias=self.use_bias and not self.z2,
        )

    def _scale_shift(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        active = checkerboard_mask(x.shape[-2:], self.parity, x.dtype)
        out = self.net(x * (1.0 - active))
        s, t = out[..., 0], out[..., 1]
        if self.z2:
            s = -jnp.abs(s)
        return active * s, active * t, active

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        s, t, _ = self._scale_shift(x)
        # frozen sites: s = t = 0 there, so y = x
        y = x * jnp.exp(s) + t
        return y, jnp.sum(s, axis=(-2, -1))

    def inverse(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        # the frozen sublattice of y equals that of x, so s and t are recomputed from y
        s, t, _ = self._scale_shift(y)
        x = (y - t) * jnp.exp(-s)
        return x, -jnp.sum(s, axis=(-2, -1))


class GlobalRescaling(nn.Module):
    """``y = e^{a} x`` with one trainable scalar ``a`` (init 0); ``log_det = V a`` (Albandea's last layer)."""

    def setup(self) -> None:
        self.log_scale = self.param("log_scale", nn.initializers.zeros_init(), ())

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        a = self.log_scale.astype(x.dtype)
        vol = x.shape[-1] * x.shape[-2]
        return x * jnp.exp(a), jnp.full(x.shape[:-2], vol * a, x.dtype)

    def inverse(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        a = self.log_scale.astype(y.dtype)
        vol = y.shape[-1] * y.shape[-2]
        return y * jnp.exp(-a), jnp.full(y.shape[:-2], -vol * a, y.dtype)


def free_field_propagator(shape: tuple[int, int], m2: float, dtype: Any = jnp.float64) -> jax.Array:
    """``G(p) = 1 / [2 (p_hat^2 + m2)]`` on the ``fft2`` momentum grid, ``p_hat^2 = sum_mu 4 sin^2(p_mu/2)``."""
    p1 = 2.0 * jnp.pi * jnp.fft.fftfreq(shape[0])
    p2 = 2.0 * jnp.pi * jnp.fft.fftfreq(shape[1])
    phat2 = 4.0 * jnp.sin(p1 / 2)[:, None] ** 2 + 4.0 * jnp.sin(p2 / 2)[None, :] ** 2
    return (1.0 / (2.0 * (phat2 + m2))).astype(dtype)


class FreeFieldLinear(nn.Module):
    """Exact trivializing map of the free field (module docstring); ``m2 > 0`` required. No parameters."""

    m2: float

    def _apply(self, x: jax.Array, power: float) -> tuple[jax.Array, jax.Array]:
        g = free_field_propagator(x.shape[-2:], self.m2, x.dtype)
        y = jnp.real(jnp.fft.ifft2(jnp.fft.fft2(x) * g**power)).astype(x.dtype)
        log_det = power * jnp.sum(jnp.log(g))
        return y, jnp.full(x.shape[:-2], log_det, x.dtype)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._apply(x, 0.5)

    def inverse(self, y: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._apply(y, -0.5)
