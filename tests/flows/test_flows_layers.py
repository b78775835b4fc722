"""Layers and models of olrg_hpc.flows: exact log-dets (jacrev), exact inverses, Z2 equivariance, counts."""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from olrg_hpc.flows.coarse import RefineFlow
from olrg_hpc.flows.layers import (
    AffineCoupling,
    FreeFieldLinear,
    FreeFieldScaling,
    GlobalRescaling,
    SitewiseOddMap,
    checkerboard_mask,
)
from olrg_hpc.flows.model import (
    Flow,
    GaussianPrior,
    albandea_flow,
    count_params,
    flow_log_prob,
    init_flow,
    sample_flow,
    tutorial_flow,
    z2_flow,
)
from olrg_hpc.jaxsetup import enable_x64

enable_x64()

L = 4


def _roundtrip(flow: Flow, params: dict, x: jax.Array) -> tuple[jax.Array, ...]:
    y, ld = flow.apply(params, x)
    x2, ld_inv = flow.apply(params, y, method="inverse")
    return y, ld, x2, ld_inv


@partial(jax.jit, static_argnums=0)
def _plus_minus(flow: Flow, params: dict, x: jax.Array) -> tuple[jax.Array, ...]:
    return (*flow.apply(params, x), *flow.apply(params, -x))


def _perturbed(flow: Flow, seed: int = 0, scale: float = 0.3) -> dict:
    """Initial params plus noise (so biases, shifts and the rescaling are non-trivial), float64."""
    params = init_flow(flow, jax.random.key(seed), (L, L), jnp.float64)
    rng = np.random.default_rng(seed + 100)
    return jax.tree.map(lambda p: p + scale * rng.normal(size=p.shape), params)


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape))


FLOWS = {
    "coupling_p0": Flow((AffineCoupling(parity=0, hidden=(4, 4)),)),
    "coupling_p1": Flow((AffineCoupling(parity=1, hidden=(4,), kernel_size=5),)),
    "z2_coupling": Flow((AffineCoupling(parity=0, hidden=(), activation="tanh", z2=True),)),
    "z2_deep": z2_flow(n_layers=3, hidden=(3,), kernel_size=3),
    "rescaling": Flow((GlobalRescaling(),)),
    "tutorial4": tutorial_flow(n_layers=4, hidden=(8, 8), kernel_size=3),
    "albandea": albandea_flow(3),
    "free_field": Flow((FreeFieldLinear(0.5), GlobalRescaling())),
    "free_field_scaling": Flow((FreeFieldScaling(),)),
    "z2_free_field": z2_flow(n_layers=2, hidden=(3,), kernel_size=3, free_field=True),
    "z2_sublattice": z2_flow(n_layers=3, hidden=(3,), kernel_size=3, sublattice=True),
    "tutorial_sublattice": tutorial_flow(n_layers=2, hidden=(4,), kernel_size=3, sublattice=True),
    "sitewise": Flow((SitewiseOddMap(),)),
    "z2_pointwise": z2_flow(n_layers=3, hidden=(3,), kernel_size=3, free_field=True, pointwise=2),
    # a 2 x 2 flow refined to 4 x 4, then couplings with heads (the multilevel variant's flow)
    "multilevel": Flow((RefineFlow(z2_flow(n_layers=2, hidden=(3,), kernel_size=3, free_field=True, pointwise=1),
                                   scale=1.2),
                        *z2_flow(n_layers=2, hidden=(3,), kernel_size=3, sublattice=True).layers)),
    "refine_noise": Flow((RefineFlow(tutorial_flow(n_layers=2, hidden=(3,), kernel_size=3), scale=0.8,
                                     interpolate=False),)),
}


def test_checkerboard_mask() -> None:
    m0 = np.asarray(checkerboard_mask((4, 4), 0))
    m1 = np.asarray(checkerboard_mask((4, 4), 1))
    assert m0[0, 0] == 1 and m0[0, 1] == 0 and m0.sum() == 8
    np.testing.assert_array_equal(m0 + m1, np.ones((4, 4)))


@pytest.mark.parametrize("name", list(FLOWS))
def test_log_det_and_inverse_are_exact(name: str) -> None:
    """log_det = log|det J| (jacrev, 1e-10) and inverse(forward(x)) = x (1e-12), float64, 4x4."""
    flow = FLOWS[name]
    params = _perturbed(flow)
    x = _normal(7, (5, L, L))

    def single(v: jax.Array) -> jax.Array:
        return flow.apply(params, v[None])[0][0]

    def run(v: jax.Array) -> tuple[jax.Array, ...]:
        return (jax.jacrev(single)(v[0]), *_roundtrip(flow, params, v))

    jac, y, ld, x2, ld_inv = jax.jit(run)(x)
    sign, logabs = np.linalg.slogdet(np.asarray(jac).reshape(L * L, L * L))
    assert sign != 0
    assert abs(float(ld[0]) - logabs) < 1e-10
    np.testing.assert_allclose(np.asarray(x2), np.asarray(x), atol=1e-12, rtol=0)
    np.testing.assert_allclose(np.asarray(ld_inv), -np.asarray(ld), atol=1e-12, rtol=0)
    assert y.shape == x.shape and ld.shape == (5,)


@pytest.mark.parametrize(
    "name", ["z2_coupling", "z2_deep", "albandea", "z2_free_field", "z2_sublattice", "z2_pointwise", "multilevel"]
)
def test_z2_equivariance(name: str) -> None:
    flow = FLOWS[name]
    params = _perturbed(flow, seed=5)
    x = _normal(2, (3, L, L))
    y, ld, ym, ldm = _plus_minus(flow, params, x)
    np.testing.assert_allclose(np.asarray(ym), -np.asarray(y), atol=1e-13, rtol=0)
    np.testing.assert_allclose(np.asarray(ldm), np.asarray(ld), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["z2_deep", "z2_sublattice"])
def test_translation_equivariance(name: str) -> None:
    """Checkerboard couplings commute with the translations that keep the checkerboard, (1, 1) and (2, 0), and not
    with (1, 0); with a head per sublattice only the translations by the 2 x 2 cell remain (float64, 1e-12)."""
    flow = FLOWS[name]
    params = _perturbed(flow, seed=9)
    x = _normal(3, (3, L, L))
    y, ld = flow.apply(params, x)
    for shift, equivariant in (((2, 0), True), ((0, 2), True), ((1, 1), name == "z2_deep"), ((1, 0), False)):
        ys, lds = flow.apply(params, jnp.roll(x, shift, axis=(-2, -1)))
        same = np.allclose(np.asarray(ys), np.roll(np.asarray(y), shift, axis=(-2, -1)), atol=1e-12, rtol=0)
        assert same == equivariant, shift
        if equivariant:
            np.testing.assert_allclose(np.asarray(lds), np.asarray(ld), atol=1e-12, rtol=0)


def test_free_field_scaling_is_the_free_map_and_any_shape() -> None:
    """At log_m2 = log m2, log_z = 0 the trainable layer is FreeFieldLinear(m2) (1e-13); on a 3 x 5 lattice (odd
    lengths: the half-spectrum of rfft2) its log-det is log|det| of the jacrev Jacobian (1e-10) and the inverse
    is exact (1e-12); with z the layer's eigenvalues are sqrt(1 / [2 (z p_hat^2 + m2)]), checked on the
    constant and the staggered mode (p_hat^2 = 0 and 8, exact eigenvectors)."""
    m2 = 0.7
    x = _normal(3, (4, L, L))
    y_ref, ld_ref = FreeFieldLinear(m2).apply({}, x)
    params = {"params": {"log_m2": jnp.log(m2), "log_z": jnp.zeros(())}}
    y, ld = FreeFieldScaling().apply(params, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), atol=1e-13, rtol=0)
    np.testing.assert_allclose(np.asarray(ld), np.asarray(ld_ref), atol=1e-13, rtol=0)

    layer, z = FreeFieldScaling(), 1.9
    params = {"params": {"log_m2": jnp.log(m2), "log_z": jnp.log(z)}}
    for shape in [(3, 5), (L, L)]:
        v = _normal(4, (1, *shape))
        jac = jax.jacrev(lambda u: layer.apply(params, u[None])[0][0])(v[0]).reshape(v.size, v.size)
        _, logabs = np.linalg.slogdet(np.asarray(jac))
        y, ld = layer.apply(params, v)
        back, ld_inv = layer.apply(params, y, method="inverse")
        assert abs(float(ld[0]) - logabs) < 1e-10
        np.testing.assert_allclose(np.asarray(back), np.asarray(v), atol=1e-12, rtol=0)
        assert abs(float(ld_inv[0] + ld[0])) < 1e-12
    stag = jnp.asarray((-1.0) ** np.add.outer(np.arange(L), np.arange(L)))[None]
    for mode, phat2 in [(jnp.ones((1, L, L)), 0.0), (stag, 8.0)]:
        y, _ = layer.apply(params, mode)
        np.testing.assert_allclose(np.asarray(y), np.asarray(mode) / math.sqrt(2 * (z * phat2 + m2)), atol=1e-13)


def test_real_nvp_with_bias_is_not_equivariant() -> None:
    flow = FLOWS["coupling_p0"]
    params = _perturbed(flow, seed=5)
    x = _normal(2, (3, L, L))
    y, _, ym, _ = _plus_minus(flow, params, x)
    assert float(jnp.max(jnp.abs(ym + y))) > 1e-3


def test_z2_rejects_even_activation() -> None:
    flow = Flow((AffineCoupling(parity=0, hidden=(4,), activation="leaky_relu", z2=True),))
    with pytest.raises(ValueError, match="odd activation"):
        flow.init(jax.random.key(0), jnp.zeros((1, L, L)))


def test_parameter_counts() -> None:
    def shapes(flow: Flow) -> dict:
        return jax.eval_shape(flow.init, jax.random.key(0), jnp.zeros((1, L, L)))

    assert count_params(init_flow(albandea_flow(3), jax.random.key(0), (L, L))) == 37
    assert count_params(shapes(albandea_flow(5))) == 2 * 2 * 25 + 1
    # tutorial: per layer (1*9+1)*8 + (8*9+1)*8 + (8*9+1)*2 = 80 + 584 + 146 = 810
    assert count_params(shapes(tutorial_flow(n_layers=16, hidden=(8, 8), kernel_size=3))) == 16 * 810
    albandea = {"n_layers": 2, "hidden": (), "kernel_size": 3}
    assert count_params(shapes(z2_flow(**albandea, free_field=True))) == 37 + 2  # + log_m2, log_z
    assert count_params(shapes(z2_flow(**albandea, sublattice=True))) == 2 * 4 * 9 + 1  # four output channels
    # a site-wise map (a, 4 b_k, 4 log s_k) before couplings 0 and 2 of 3
    assert count_params(shapes(z2_flow(n_layers=3, hidden=(), kernel_size=3, pointwise=2))) == 3 * 2 * 9 + 1 + 2 * 9
    # a refined flow: the coarse flow's parameters plus three noise widths
    assert count_params(shapes(Flow((RefineFlow(albandea_flow(3)),)))) == 37 + 3


def test_gaussian_prior_and_model_density() -> None:
    prior = GaussianPrior((L, L), "float64")
    z = prior.sample(jax.random.key(0), 6)
    assert z.shape == (6, L, L) and z.dtype == jnp.float64
    ref = norm.logpdf(np.asarray(z)).sum(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(prior.log_prob(z)), ref, rtol=1e-13)
    flow = FLOWS["tutorial4"]
    params = _perturbed(flow)
    phi, log_q = sample_flow(flow, params, prior, jax.random.key(0), 6)
    np.testing.assert_allclose(np.asarray(flow_log_prob(flow, params, prior, phi)), np.asarray(log_q), atol=1e-11)
    _, ld = flow.apply(params, z)
    np.testing.assert_allclose(np.asarray(log_q), np.asarray(prior.log_prob(z) - ld), atol=1e-12)
    assert math.isfinite(float(jnp.sum(log_q)))


def test_zero_params_are_identity() -> None:
    flow = tutorial_flow(n_layers=2, hidden=(4,), kernel_size=3)
    params = jax.tree.map(jnp.zeros_like, init_flow(flow, jax.random.key(0), (L, L), jnp.float64))
    x = _normal(1, (2, L, L))
    y, ld = flow.apply(params, x)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(x))
    np.testing.assert_array_equal(np.asarray(ld), 0.0)
    # the site-wise map starts as the identity too (init_flow gives it zeros), up to the rounding of c_k = 0
    sitewise = Flow((SitewiseOddMap(),))
    y, ld = sitewise.apply(init_flow(sitewise, 0, (L, L), jnp.float64), x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(x), atol=1e-14, rtol=0)
    np.testing.assert_allclose(np.asarray(ld), 0.0, atol=1e-13)


@pytest.mark.parametrize("b", [-8.0, 3.0])
def test_sitewise_odd_map_far_from_the_identity(b: float) -> None:
    '''With every c_k at its lower bound (b = -8: g' down to ~delta e^a near 0) or large (b = 3: g' ~ 4.5 near 0),
    on inputs up to |x| = 12: g is odd and increasing, the log-det is sum log g' of an independent central finite
    difference (h = 1e-5, error ~ h^2 times the third derivative, below 1e-8 here), and the inverse (bisection +
    Newton) returns x to 1e-12 (float64).'''
    layer = SitewiseOddMap()
    k = len(layer.scales)
    params = {"params": {"a": jnp.asarray(0.3), "b": jnp.full((k,), b), "log_s": jnp.linspace(-0.5, 0.5, k)}}
    x = jnp.asarray(np.linspace(-12.0, 12.0, 2 * 3 * 5).reshape(2, 3, 5))
    y, ld = layer.apply(params, x)
    ym, _ = layer.apply(params, -x)
    np.testing.assert_array_equal(np.asarray(ym), -np.asarray(y))
    assert np.all(np.diff(np.asarray(y).ravel()) > 0)
    h = 1e-5
    dg = (layer.apply(params, x + h)[0] - layer.apply(params, x - h)[0]) / (2 * h)
    np.testing.assert_allclose(np.asarray(ld), np.log(np.asarray(dg)).sum(axis=(-2, -1)), atol=1e-8, rtol=0)
    x2, ld_inv = layer.apply(params, y, method="inverse")
    np.testing.assert_allclose(np.asarray(x2), np.asarray(x), atol=1e-12, rtol=0)
    np.testing.assert_allclose(np.asarray(ld_inv), -np.asarray(ld), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("k", "c_in", "c_out"), [(3, 1, 4), (3, 3, 2), (3, 4, 1), (1, 2, 3), (2, 3, 2), (5, 2, 2)])
def test_circular_conv_matches_flax_conv_and_its_gradients(k: int, c_in: int, c_out: int) -> None:
    """circular_conv (batch-last, custom VJP) = flax.linen.Conv(padding="CIRCULAR"), values and both cotangents,
    float64, on a non-square 4 x 6 lattice (1e-12)."""
    import flax.linen as nn

    from olrg_hpc.flows.layers import circular_conv

    rng = np.random.default_rng(k * 100 + c_in * 10 + c_out)
    x = jnp.asarray(rng.normal(size=(3, 4, 6, c_in)))  # NHWC
    kernel = jnp.asarray(rng.normal(size=(k, k, c_in, c_out)))
    g = jnp.asarray(rng.normal(size=(3, 4, 6, c_out)))
    conv = nn.Conv(c_out, (k, k), padding="CIRCULAR", use_bias=False)

    def ref(x: jax.Array, w: jax.Array) -> jax.Array:
        return conv.apply({"params": {"kernel": w}}, x)

    def ours(x: jax.Array, w: jax.Array) -> jax.Array:
        return jnp.transpose(circular_conv(jnp.transpose(x, (3, 1, 2, 0)), w), (3, 1, 2, 0))

    @jax.jit
    def both(x: jax.Array, w: jax.Array, g: jax.Array) -> tuple[jax.Array, ...]:
        (y1, f1), (y2, f2) = jax.vjp(ref, x, w), jax.vjp(ours, x, w)
        return (y1, *f1(g), y2, *f2(g))

    y1, dx1, dw1, y2, dx2, dw2 = both(x, kernel, g)
    for a, b in ((y1, y2), (dx1, dx2), (dw1, dw2)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", ["tutorial4", "z2_deep", "albandea", "z2_sublattice"])
def test_scanned_flow_equals_layer_by_layer(name: str) -> None:
    """Flow runs consecutive couplings as one lax.scan; same values, log-dets, inverses and parameter gradients
    as calling the layers one by one (float64, 1e-12), also with two batch axes."""
    flow = FLOWS[name]
    ref = Flow(flow.layers, scan=False)
    params = _perturbed(flow, seed=3)
    x = _normal(4, (2, 3, L, L))

    def loss(p: dict, f: Flow) -> jax.Array:
        y, ld = f.apply(p, x)
        return jnp.sum(y**2) + jnp.sum(jnp.sin(ld))

    @jax.jit
    def run(p: dict) -> tuple:
        out = []
        for f in (flow, ref):
            y, ld = f.apply(p, x)
            xi, ldi = f.apply(p, y, method="inverse")
            out.append((y, ld, xi, ldi, jax.grad(loss)(p, f)))
        return tuple(out)

    a, b = run(params)
    assert a[0].shape == x.shape and a[1].shape == (2, 3)
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-12, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(a[2]), np.asarray(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize(("hidden", "k", "sublattice", "z2"), [
    ((3,), 3, True, True), ((3,), 3, False, True), ((), 3, True, True), ((4, 2), 3, True, False),
    ((2,), 5, False, False), ((3,), 2, True, False)])
def test_coupling_scale_shift_matches_a_flax_conv_net(hidden: tuple[int, ...], k: int, sublattice: bool,
                                                      z2: bool) -> None:
    """The couplings' (s, t) (batch-last, hand-written convolutions) equal a plain flax.linen.Conv net (padding
    CIRCULAR, batch-first) on the masked 4 x 6 field, heads chosen by row, masked to the active sites; both parities,
    with and without bias and final tanh; values and the cotangents of input and parameters (float64, 1e-12)."""
    import flax.linen as nn

    from olrg_hpc.flows.layers import _scale_shift_bl

    cfg = AffineCoupling(parity=0, hidden=hidden, kernel_size=k, activation="tanh", final_tanh=not z2, z2=z2,
                         sublattice=sublattice)
    params = _perturbed(Flow((cfg,)), seed=len(hidden) + k)["params"]["layers_0"]
    x = _normal(11, (4, 6, 3))  # batch-last (L1, L2, N)
    g = _normal(12, (2, 4, 6, 3))
    feats = (*hidden, 4 if sublattice else 2)

    def ref(p: dict, v: jax.Array, active: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jnp.moveaxis(v * (1 - active), -1, 0)[..., None]  # NHWC
        for n, f in enumerate(feats):
            conv = nn.Conv(f, (k, k), padding="CIRCULAR", use_bias=not z2)
            h = conv.apply({"params": p["net"][f"conv_{n}"]}, h)
            h = jnp.tanh(h) if n < len(feats) - 1 or not z2 else h
        out = jnp.moveaxis(h, (0, 3), (3, 0))  # (C_out, L1, L2, N)
        if sublattice:
            even = (jnp.arange(4) % 2 == 0)[:, None, None]
            out = jnp.stack([jnp.where(even, out[0], out[2]), jnp.where(even, out[1], out[3])])
        s = -jnp.abs(out[0]) if z2 else out[0]
        return active * s, active * out[1]

    def ours(p: dict, v: jax.Array, active: jax.Array) -> tuple[jax.Array, jax.Array]:
        return _scale_shift_bl(cfg, p, v, active)

    for parity in (0, 1):
        active = checkerboard_mask((4, 6), parity, jnp.float64)[:, :, None]

        @jax.jit
        def both(p: dict, v: jax.Array, active: jax.Array = active) -> tuple[tuple[jax.Array, ...], ...]:
            (y1, f1), (y2, f2) = jax.vjp(partial(ref, active=active), p, v), jax.vjp(partial(ours, active=active), p, v)
            return (y1, y2), (f1((g[0], g[1])), f2((g[0], g[1])))

        (y1, y2), (c1, c2) = both(params, x)
        for a, b in zip(jax.tree.leaves((y1, c1)), jax.tree.leaves((y2, c2)), strict=True):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-12, rtol=0)
