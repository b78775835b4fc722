"""Flow models (compositions of :mod:`olrg_hpc.flows.layers`), the Gaussian prior, and sampling helpers.

Conventions (docs/phi4-hmc.md, "Actions and conversions"; Albergo et al. arXiv:2101.08176; Albandea et al.
arXiv:2310.03381):

* The flow ``F`` maps prior samples ``z ~ r`` to fields ``phi = F(z)``; ``flow.apply(params, z)`` returns
  ``(phi, log_det)`` with ``log_det = log |det dF/dz|``. The model density is
  ``log q(phi) = log r(z) - log_det``. ``flow.apply(params, phi, method="inverse")`` returns
  ``(z, -log_det)``.
* Priors implement ``sample(key, n) -> z`` (shape ``(n, L1, L2)``) and ``log_prob(z) -> (n,)``; they are
  JAX pytrees, so they can be passed to jitted functions.
* Fields are in the *tutorial* convention of the target :class:`~olrg_hpc.lattice.phi4.Phi4Action`.
* Framework: ``flax.linen``; parameters are plain pytrees (nested dicts of arrays).
* Architecture: a :class:`FlowSpec` (pydantic) says what a flow is; :func:`make_flow` builds it. The study config,
  the task parameters and the library share this one model, so its defaults are the only ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from olrg_hpc.flows.layers import (
    AffineCoupling,
    FreeFieldScaling,
    GlobalRescaling,
    SitewiseOddMap,
    checkerboard_mask,
    coupling_forward_bl,
    coupling_inverse_bl,
    from_batch_last,
    to_batch_last,
)

__all__ = [
    "FlowSpec",
    "Refine",
    "make_flow",
    "Prior",
    "GaussianPrior",
    "Flow",
    "tutorial_flow",
    "z2_flow",
    "albandea_flow",
    "init_flow",
    "count_params",
    "sample_flow",
    "flow_log_prob",
]

Params = Any


class Prior(Protocol):
    """What a prior offers: ``shape`` (lattice), ``sample(key, n)``, ``log_prob(z)``."""

    shape: tuple[int, int]

    def sample(self, key: jax.Array, n: int) -> jax.Array: ...

    def log_prob(self, z: jax.Array) -> jax.Array: ...


@partial(jax.tree_util.register_dataclass, data_fields=[], meta_fields=["shape", "dtype"])
@dataclass(frozen=True)
class GaussianPrior:
    """Standard normal prior on an ``L1 x L2`` lattice: ``log r(z) = -sum z^2 / 2 - (V/2) log(2 pi)``."""

    shape: tuple[int, int]
    dtype: str = "float32"

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        return jax.random.normal(key, (n, *self.shape), dtype=jnp.dtype(self.dtype))

    def log_prob(self, z: jax.Array) -> jax.Array:
        vol = math.prod(z.shape[-2:])
        return -0.5 * jnp.sum(z * z, axis=(-2, -1)) - 0.5 * vol * math.log(2.0 * math.pi)


class Flow(nn.Module):
    """Composition ``F = f_n o ... o f_1`` of invertible layers; ``log_det`` adds up.

    Consecutive :class:`~olrg_hpc.flows.layers.AffineCoupling` layers with the same hyperparameters (any
    parities) run as one ``lax.scan`` over their stacked parameters, on batch-last fields (see
    :mod:`olrg_hpc.flows.layers`); the parameter tree is that of the individual layers (``layers_{i}``). With
    ``scan=False`` every layer is called in turn (same results up to rounding).
    """

    layers: Sequence[nn.Module] = ()
    scan: bool = True

    def _segments(self) -> list[tuple[bool, list[int]]]:
        """Runs of layer indices: ``(True, run)`` for scannable couplings of one shape, ``(False, [i])`` else."""
        segs: list[tuple[bool, list[int]]] = []
        for i, layer in enumerate(self.layers):
            if self.scan and isinstance(layer, AffineCoupling):
                if segs and segs[-1][0] and self.layers[segs[-1][1][-1]].shape_key() == layer.shape_key():
                    segs[-1][1].append(i)
                    continue
                segs.append((True, [i]))
            else:
                segs.append((False, [i]))
        return segs

    def _run(self, x: jax.Array, inverse: bool) -> tuple[jax.Array, jax.Array]:
        log_det = jnp.zeros(x.shape[:-2], x.dtype)
        segs = self._segments()
        if inverse:
            segs = [(scan, run[::-1]) for scan, run in reversed(segs)]
        if self.is_initializing() or not any(scan and len(run) > 1 for scan, run in segs):
            for _, run in segs:
                for i in run:
                    layer = self.layers[i]
                    x, ld = layer.inverse(x) if inverse else layer(x)
                    log_det = log_det + ld
            return x, log_det
        params = self.variables.get("params", {})
        for scan, run in segs:
            if not scan or len(run) == 1:
                layer = self.layers[run[0]]
                x, ld = layer.inverse(x) if inverse else layer(x)
                log_det = log_det + ld
                continue
            x, ld = _scan_couplings(self.layers[run[0]], [params[f"layers_{i}"] for i in run],
                                    [self.layers[i].parity for i in run], x, inverse)
            log_det = log_det + ld
        return x, log_det

    def __call__(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._run(z, inverse=False)

    def inverse(self, phi: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self._run(phi, inverse=True)


def _scan_couplings(
    cfg: AffineCoupling, params: list[Any], parities: list[int], x: jax.Array, inverse: bool
) -> tuple[jax.Array, jax.Array]:
    """Apply couplings of one shape (``cfg``) with ``params[k]``, ``parities[k]`` in order, as a ``lax.scan``."""
    batch = x.shape[:-2]
    masks = jnp.stack([checkerboard_mask(x.shape[-2:], p, x.dtype)[:, :, None] for p in parities])
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *params)
    step = coupling_inverse_bl if inverse else coupling_forward_bl

    def body(carry: tuple[jax.Array, jax.Array], xs: tuple[Any, jax.Array]) -> tuple[Any, None]:
        h, ld = carry
        p, active = xs
        h, d = step(cfg, p, h, active)
        return (h, ld + d), None

    xb = to_batch_last(x)
    # (zeros_like: the carry inherits the sharding type of x inside shard_map)
    (xb, ld), _ = jax.lax.scan(body, (xb, jnp.zeros_like(xb[0, 0])), (stacked, masks))
    return from_batch_last(xb, batch), ld.reshape(batch)


def tutorial_flow(
    *,
    n_layers: int,
    hidden: Sequence[int],
    kernel_size: int,
    activation: str = "leaky_relu",
    final_tanh: bool = True,
    sublattice: bool = False,
) -> Flow:
    """Real-NVP flow of arXiv:2101.08176: ``n_layers`` affine couplings with alternating parity (``sublattice``:
    see :class:`~olrg_hpc.flows.layers.AffineCoupling`; arXiv:2101.08176 uses ``n_layers = 16, hidden = (8, 8),
    kernel_size = 3``). The architecture has no defaults here: :class:`FlowSpec` holds them."""
    return Flow(
        tuple(
            AffineCoupling(
                parity=i % 2,
                hidden=tuple(hidden),
                kernel_size=kernel_size,
                activation=activation,
                final_tanh=final_tanh,
                sublattice=sublattice,
            )
            for i in range(n_layers)
        )
    )


def z2_flow(
    *,
    n_layers: int,
    hidden: Sequence[int],
    kernel_size: int,
    rescale: bool = True,
    free_field: bool = False,
    sublattice: bool = False,
    pointwise: int = 0,
) -> Flow:
    """Z2-equivariant flow: optionally a trainable :class:`~olrg_hpc.flows.layers.FreeFieldScaling` first
    (``free_field``), then ``n_layers`` couplings ``y = x e^{-|s|} + t`` (odd nets, tanh), alternating parity,
    with one head per sublattice if ``sublattice``, optionally followed by a :class:`GlobalRescaling`. With
    ``pointwise = n > 0`` a :class:`~olrg_hpc.flows.layers.SitewiseOddMap` goes before every ``n``-th coupling
    (couplings ``0, n, 2n, ...``). The architecture has no defaults here: :class:`FlowSpec` holds them."""
    if pointwise < 0:
        raise ValueError(f"pointwise must be >= 0, got {pointwise}")
    layers: list[nn.Module] = [FreeFieldScaling()] if free_field else []
    for i in range(n_layers):
        if pointwise and i % pointwise == 0:
            layers.append(SitewiseOddMap())
        layers.append(AffineCoupling(parity=i % 2, hidden=tuple(hidden), kernel_size=kernel_size, activation="tanh",
                                     z2=True, sublattice=sublattice))
    if rescale:
        layers.append(GlobalRescaling())
    return Flow(tuple(layers))


def albandea_flow(kernel_size: int = 3) -> Flow:
    """The coarse-to-fine model of arXiv:2310.03381: one coupling layer (both checkerboard halves, each net a
    single ``Conv2d(1 -> 2, k x k)`` without bias + tanh, ``y = x e^{-|s|} + t``) and one global rescaling.

    Parameter count ``2 * 2 k^2 + 1`` (37 at ``k = 3``). The "upsampling" (interleaving of four coarse
    configurations) is the prior, :class:`olrg_hpc.flows.coarse.CoarsePrior`.
    """
    return z2_flow(n_layers=2, hidden=(), kernel_size=kernel_size, rescale=True)


class _Spec(BaseModel):
    """Unknown keys are errors and values are frozen, as in every study config model."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Refine(_Spec):
    """A :class:`~olrg_hpc.flows.coarse.RefineFlow` first: the flow ``coarse`` at ``L/2`` refined to ``L`` with
    field factor ``scale`` (the multilevel prior kind, :mod:`olrg_hpc.flows.priors`)."""

    coarse: FlowSpec
    scale: float = Field(gt=0, description="field factor between the two points' tutorial normalisations")


class FlowSpec(_Spec):
    """A flow's architecture: what a study config's ``flow`` block holds, what the flow study's tasks receive, and
    what :func:`make_flow` builds. These are the only defaults of a flow's architecture in the package."""

    kind: Literal["z2", "tutorial"] = Field("z2", description="z2: Z2-equivariant couplings + global rescaling; "
                                            "tutorial: the Real-NVP couplings of arXiv:2101.08176")
    n_layers: int = Field(4, ge=1, description="coupling layers (alternating checkerboard parity)")
    hidden: tuple[int, ...] = Field((8,), description="hidden channels of each coupling's net")
    kernel_size: int = Field(3, ge=1, description="odd convolution kernel of the couplings' nets")
    free_field: bool = Field(False, description="z2 only: a trainable free-field layer first (FreeFieldScaling)")
    sublattice: bool = Field(False, description="couplings with one head per sublattice of the 2 x 2 cell")
    pointwise: int = Field(0, ge=0, description="z2 only: a site-wise odd monotone map before every n-th coupling "
                           "(0: none)")
    refine: Refine | None = Field(None, description="the flow at L/2 refined to L before the couplings")

    @model_validator(mode="after")
    def _consistent(self) -> FlowSpec:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd (got {self.kernel_size})")
        for key in ("free_field", "pointwise"):
            if getattr(self, key) and self.kind != "z2":
                raise ValueError(f"{key} needs kind z2 (got kind {self.kind!r})")
        return self


Refine.model_rebuild()


def make_flow(spec: FlowSpec | Mapping[str, Any]) -> Flow:
    """The flow of a :class:`FlowSpec` (a mapping is validated into one first): ``kind`` ``"z2"``
    (:func:`z2_flow` with a global rescaling; ``n_layers = 2, hidden = ()`` is the 37-parameter model of
    arXiv:2310.03381) or ``"tutorial"`` (:func:`tutorial_flow`); with ``refine`` the flow at ``L/2`` refined to
    ``L`` by a :class:`~olrg_hpc.flows.coarse.RefineFlow` comes first, recursively."""
    spec = FlowSpec.model_validate(spec)
    arch = {"n_layers": spec.n_layers, "hidden": spec.hidden, "kernel_size": spec.kernel_size,
            "sublattice": spec.sublattice}
    if spec.kind == "z2":
        flow = z2_flow(**arch, rescale=True, free_field=spec.free_field, pointwise=spec.pointwise)
    else:
        flow = tutorial_flow(**arch)
    if spec.refine is None:
        return flow
    from olrg_hpc.flows.coarse import RefineFlow  # coarse.py builds on this module

    return Flow((RefineFlow(make_flow(spec.refine.coarse), scale=spec.refine.scale), *flow.layers))


def init_flow(flow: Flow, key: Any, shape: tuple[int, int], dtype: Any = jnp.float32) -> Params:
    """Initial parameters (any ``L`` works later: the nets are convolutional).

    Same tree as ``flow.init`` (found with ``jax.eval_shape``), filled on the host with PyTorch's default
    ``Conv2d`` initialisation (as in the reference implementations of arXiv:2101.08176 and arXiv:2310.03381):
    kernels and biases ``~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))``, ``fan_in = k^2 C_in``; log-scales 0.
    ``key`` is a JAX key or an int seed. (Host filling avoids compiling flax's initialisers, which takes
    seconds per model on CPU.)
    """
    tree = jax.eval_shape(flow.init, jax.random.key(0), jax.ShapeDtypeStruct((1, *shape), jnp.dtype(dtype)))
    if isinstance(key, int):
        seed: Any = key
    else:
        seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    rng = np.random.default_rng(seed)
    paths, tdef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = []
    for path, leaf in paths:
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("kernel", "bias"):
            bound = 1.0 / math.sqrt(math.prod(_kernel_shape(paths, path)[:-1]))
            val = rng.uniform(-bound, bound, size=leaf.shape)
        else:
            val = np.zeros(leaf.shape)
        leaves.append(jnp.asarray(val, dtype=dtype))
    return jax.tree_util.tree_unflatten(tdef, leaves)


def _kernel_shape(paths: list[Any], bias_path: tuple[Any, ...]) -> tuple[int, ...]:
    """Shape of the kernel next to ``bias_path`` (same module)."""
    for path, leaf in paths:
        if path[:-1] == bias_path[:-1] and str(getattr(path[-1], "key", path[-1])) == "kernel":
            return tuple(leaf.shape)
    raise KeyError(f"no kernel beside {bias_path}")


def count_params(params: Params) -> int:
    """Number of scalar parameters."""
    return int(sum(math.prod(jnp.shape(p)) for p in jax.tree.leaves(params)))


def sample_flow(flow: Flow, params: Params, prior: Prior, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` samples ``phi = F(z)``, ``z ~ prior``, with their model log-density ``log q(phi)``."""
    z = prior.sample(key, n)
    phi, log_det = flow.apply(params, z)
    return phi, prior.log_prob(z) - log_det


def flow_log_prob(flow: Flow, params: Params, prior: Prior, phi: jax.Array) -> jax.Array:
    """``log q(phi) = log r(F^{-1}(phi)) + log |det dF^{-1}/dphi|``."""
    z, log_det_inv = flow.apply(params, phi, method="inverse")
    return prior.log_prob(z) + log_det_inv
