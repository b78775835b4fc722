"""TOBC evaluation in JAX against olrg_hpc.spins.tobc, and the OLRG loss."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from olrg_hpc.olrg import loss as L
from olrg_hpc.olrg import maps as M
from olrg_hpc.olrg import relevant as R
from olrg_hpc.spins import ed, models, tobc

FAST = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit(f, **kw):  # noqa: ANN001, ANN202, ANN003
    return jax.jit(f, compiler_options=FAST, **kw)


@functools.lru_cache(maxsize=4)
def _chi_fn(K: int):  # noqa: ANN202
    return _jit(L.tobc_chi, static_argnums=(3,))


def test_expm_herm_and_its_derivative() -> None:
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    H = A + A.conj().T
    ts = jnp.asarray([0.0, 0.3, 1.7])
    U = np.asarray(L.expm_herm(jnp.asarray(H), ts))
    import scipy.linalg as sla

    for i, t in enumerate(np.asarray(ts)):
        np.testing.assert_allclose(U[i], sla.expm(-1j * H * t), atol=1e-12)
    # JVP vs finite differences, including a degenerate H (identity block)
    for Hc in (H, np.diag([1.0, 1.0, 1.0, 2.0, 3.0, 3.0]).astype(complex)):
        dH = rng.standard_normal((6, 6))
        dH = dH + dH.T
        _, jv = jax.jvp(lambda h: L.expm_herm(h, ts), (jnp.asarray(Hc),), (jnp.asarray(dH, complex),))
        eps = 1e-6
        fd = (sla.expm(-1j * (Hc + eps * dH) * 1.7) - sla.expm(-1j * (Hc - eps * dH) * 1.7)) / (2 * eps)
        np.testing.assert_allclose(np.asarray(jv)[2], fd, atol=1e-7)
        assert np.all(np.isfinite(np.asarray(jv)))


def _herm(rng: np.random.Generator, D: int) -> np.ndarray:
    A = rng.standard_normal((D, D)) + 1j * rng.standard_normal((D, D))
    return A + A.conj().T


def test_chi_gradient_matches_finite_differences() -> None:
    """d chi / d(set) by reverse mode, end to end through expm_herm's custom JVP, against central differences (step
    1e-6: truncation ~1e-12, rounding ~1e-10 on values of order 1, so rtol 1e-6 is a real check), on a generic block
    and on the exact 4-site TFIM block, whose spectrum is degenerate (autodiff through eigh would divide by 0)."""
    rng = np.random.default_rng(3)
    exact = R.to_jax(R.grow_exact(models.tfim(4), 4))
    assert np.min(np.diff(np.linalg.eigvalsh(np.asarray(R.hamiltonian(exact))))) < 1e-10  # degenerate indeed
    noise = np.stack([_herm(rng, 16) for _ in exact.H_terms])
    generic = exact.replace(H_terms=exact.H_terms + 0.1 * jnp.asarray(noise))
    nS, K = 5, 2
    times = np.sort(rng.uniform(0, 1.5, (nS, K)), axis=1)[:, ::-1].copy()
    signs = rng.choice([-1.0, 1.0], (nS, K))
    Tf = rng.uniform(1.5, 2.0, nS)
    wts = rng.standard_normal(nS)

    def f(S):  # noqa: ANN001, ANN202
        chi = L.tobc_chi(S, times, signs, Tf)
        return jnp.sum(wts * (chi.real + 0.7 * chi.imag))

    for S in (exact, generic):
        g = jax.grad(f)(S)
        for leaf in ("H_terms", "B", "O", "rho"):
            d = jnp.asarray(rng.standard_normal(getattr(S, leaf).shape))
            eps = 1e-6
            fd = (f(S.replace(**{leaf: getattr(S, leaf) + eps * d}))
                  - f(S.replace(**{leaf: getattr(S, leaf) - eps * d}))) / (2 * eps)
            an = jnp.sum(jnp.real(jnp.conj(getattr(g, leaf)) * d))
            assert np.isfinite(float(an))
            np.testing.assert_allclose(float(an), float(fd), rtol=1e-6, atol=1e-8)


def test_divided_differences_match_the_phi_form() -> None:
    """``L_ij = (f_i - f_j) / (E_i - E_j)`` with its series branch against ``f_j (-it) phi(-i (E_i - E_j) t)`` of
    :func:`expm_herm`'s JVP, on a spectrum with an exact degeneracy and gaps of 1e-9, 1e-5 and 1e-3 (products
    ``|w t|`` on both sides of the 1e-3 switch). Above the switch the quotient's rounding is ``eps |f| / |w| <=
    eps t / 1e-3``, 1e-12 at ``t = 4.4`` (entries are of order ``t``); the series below it truncates at 1e-14."""
    E = jnp.asarray([-1.3, -1.3, 0.2, 0.2 + 1e-9, 0.7, 0.7 + 1e-5, 1.9, 1.9 + 1e-3])
    t = jnp.asarray([0.0, 1e-3, 0.37, 1.0, 4.4])
    f = jnp.exp(-1j * t[:, None] * E)
    w = E[:, None] - E[None, :]
    tt = t[:, None, None]
    ref = f[:, None, :] * (-1j * tt) * L._phi(-1j * w * tt)
    np.testing.assert_allclose(np.asarray(L._divided_differences(E, f, t)), np.asarray(ref), rtol=0, atol=2e-12)


def test_eigenbasis_chi_and_gradient_match_the_matrix_form() -> None:
    """:func:`tobc_chi` (eigenbasis, custom JVP) against :func:`_tobc_chi_expm` (evolution matrices): values, reverse
    gradients in every operator, and the JVP in the times, on a generic XXZ block (two boundary operators, masked
    levels, one final time per sample) and on the degenerate exact TFIM block. Both are exact, so they agree to
    rounding (1e-10 on entries of order 1-10)."""
    rng = np.random.default_rng(8)
    xxz = models.make_model("xxz", 4, delta=0.6, hz=0.2)
    ex = R.to_jax(R.grow_exact(xxz, 4))
    generic = ex.replace(H_terms=ex.H_terms + 0.1 * jnp.asarray(np.stack([_herm(rng, 16) for _ in ex.H_terms])))
    nS, K = 6, 2
    times = np.sort(rng.uniform(0, 1.5, (nS, K)), axis=1)[:, ::-1].copy()
    signs = rng.choice([-1.0, 1.0], (nS, K))
    mask = np.arange(K)[None, :] < rng.integers(0, K + 1, nS)[:, None]
    bidx = rng.integers(0, 2, (nS, K))
    Tf = rng.uniform(1.5, 2.0, nS)
    wts = rng.standard_normal(nS)
    tfim = R.to_jax(R.grow_exact(models.tfim(4), 4))
    cases = [(generic, mask, bidx), (tfim, None, None)]
    for S, mk, bi in cases:
        outs = []
        for chi in (L.tobc_chi, L._tobc_chi_expm):
            def f(S, ts, chi=chi, mk=mk, bi=bi):  # noqa: ANN001, ANN202
                c = chi(S, ts, signs, Tf, mk, bi)
                return jnp.sum(wts * (c.real + 0.7 * c.imag))

            val, g = jax.value_and_grad(f)(S, jnp.asarray(times))
            _, dt = jax.jvp(lambda ts, f=f, S=S: f(S, ts), (jnp.asarray(times),), (jnp.ones((nS, K)),))
            outs.append((val, g, dt))
        (v1, g1, d1), (v2, g2, d2) = outs
        np.testing.assert_allclose(float(v1), float(v2), atol=1e-10)
        assert abs(float(d2)) > 1e-2
        np.testing.assert_allclose(float(d1), float(d2), atol=1e-10)
        for leaf in ("H_terms", "B", "O", "rho"):
            a, b = np.asarray(getattr(g1, leaf)), np.asarray(getattr(g2, leaf))
            assert np.abs(b).max() > 1e-2
            np.testing.assert_allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("name,kw,n", [("tfim", {"J": 1.0, "h": 1.0}, 5), ("xxz", {"delta": 0.6, "hz": 0.2}, 4)])
def test_chi_matches_exact_tobc(name: str, kw: dict, n: int) -> None:
    m = models.make_model(name, n, **kw)
    S = R.grow_exact(m, n)
    rng = np.random.default_rng(1)
    nS, K, T = 12, 3, 1.3
    times = np.sort(rng.uniform(0, T, (nS, K)), axis=1)[:, ::-1].copy()
    signs = rng.choice([-1.0, 1.0], (nS, K))
    orders = rng.integers(0, K + 1, nS)
    mask = np.arange(K)[None, :] < orders[:, None]
    nb = len(m.boundary_ops())
    bidx = rng.integers(0, nb, (nS, K)) * mask
    chi = np.asarray(_chi_fn(K)(R.to_jax(S), times, signs, T, mask, bidx))
    ev = tobc.ExactTOBC(m, boundary=m.boundary_ops()[0])
    bn = m.boundary_ops()
    ex = [
        ev.chi(times[i, : orders[i]], signs[i, : orders[i]], T, [bn[b] for b in bidx[i, : orders[i]]])
        for i in range(nS)
    ]
    np.testing.assert_allclose(chi, np.asarray(ex), atol=1e-10)


def test_order0_is_quench_expectation() -> None:
    m = models.tfim(6)
    S = R.grow_exact(m, 6)
    for T in (0.0, 0.5, 1.5):
        chi = L.tobc_chi(R.to_jax(S), np.zeros((1, 1)), np.zeros((1, 1)), T, np.zeros((1, 1), bool))
        ref = ed.evolve_expectations(
            ed.dense_hamiltonian(m), ed.zero_state(6), {"zz": tobc.parse_operator("Z0Z1", 6)}, [T]
        )["zz"][0]
        np.testing.assert_allclose(complex(chi[0]), ref, atol=1e-12)


def test_order_weights() -> None:
    np.testing.assert_allclose(L.order_weights(3, "one"), 1.0)
    np.testing.assert_allclose(L.order_weights(3, "inv_factorial"), [1, 1, 0.5, 1 / 6])
    np.testing.assert_allclose(L.order_weights(2, "delta", 0.5), [1, 0.25, 0.5**2 / 8])
    with pytest.raises(ValueError):
        L.order_weights(2, "bad")


def _cfg(**kw) -> L.LossConfig:  # noqa: ANN003
    base = dict(model=models.tfim(8), n0=3, n_final=6, T=1.0, K=2, n_per_order=4)
    base.update(kw)
    return L.LossConfig(**base)


def test_identity_map_loss_is_zero_and_exact_term() -> None:
    cfg = _cfg(n_final=5, exact_weight=1.0, exact_max_n=5, sample_T=True)
    batch = L.make_batch(cfg, seed=0, pad_to=8)
    assert len(batch.blocks) == cfg.K + 1 and batch.n_samples == 3 * 8
    tf = []
    for k, b in enumerate(batch.blocks):  # one block per order, each padded to the device count
        n = b.weight.shape[0]
        assert n == 8 and b.times.shape == b.signs.shape == b.bidx.shape == (n, k) and b.Tf.shape == (n,)
        real = b.weight > 0
        assert real.sum() == 4 and not real[4:].any()
        np.testing.assert_allclose(b.weight.sum(), L.order_weights(cfg.K, cfg.weights)[k])  # a mean per order
        # per-sample final times; Dyson ordering T_s >= t_1 >= t_2 >= 0 on the existing levels
        t = b.times[real]
        assert np.all(np.diff(np.concatenate([b.Tf[real, None], t], axis=1), axis=1) <= 0) and np.all(t >= 0)
        assert b.exact.shape == (2, n) and np.abs(b.exact[:, real]).max() > 0.1 and not b.exact[:, ~real].any()
        tf.extend(b.Tf[real])
    assert len(np.unique(tf)) > 1
    loss = _jit(lambda b: L.olrg_loss({}, M.IdentityMap(), cfg, b))(batch)
    assert float(loss) == 0.0 or abs(float(loss)) < 1e-24


def test_blocks_hold_the_masked_flat_samples() -> None:
    """Per-order blocks give the chi of the same samples written as one (S, K) array with padding levels masked
    (the layout before blocks), on a generic block with two boundary operators (XXZ)."""
    m = models.make_model("xxz", 5, delta=0.6, hz=0.2)
    cfg = L.LossConfig(model=m, n0=3, n_final=5, T=1.3, K=2, n_per_order=5, sample_T=True)
    batch = L.make_batch(cfg, seed=3)
    S = R.to_jax(R.grow_exact(m, 4))
    K = cfg.K

    def flat(field: str) -> np.ndarray:  # (S, K), padding levels zero
        return np.concatenate([np.pad(getattr(b, field), ((0, 0), (0, K - k))) for k, b in enumerate(batch.blocks)])

    times, signs, bidx = flat("times"), flat("signs"), flat("bidx")
    orders = np.concatenate([np.full(len(b.Tf), k) for k, b in enumerate(batch.blocks)])
    mask = np.arange(K)[None, :] < orders[:, None]
    Tf = np.concatenate([b.Tf for b in batch.blocks])
    assert bidx.any()  # both boundary operators drawn
    masked = L.tobc_chi(S, times, signs, Tf, mask, bidx)
    blocked = np.concatenate([L.tobc_chi(S, b.times, b.signs, b.Tf, None, b.bidx) for b in batch.blocks])
    assert np.abs(blocked).max() > 0.1
    np.testing.assert_allclose(blocked, np.asarray(masked), atol=1e-12)


def test_final_times_are_stratified_within_each_order() -> None:
    """Each order's n fractions take one value in each [i/n, (i+1)/n) (so gaps stay below 2T/n), in shuffled order;
    without stratification they are the plain i.i.d. draws."""
    orders = np.repeat([0, 1, 2], [40, 30, 30])
    u = L.final_time_fractions(orders, seed=5)
    for k, n in ((0, 40), (1, 30), (2, 30)):
        uk = u[orders == k]
        np.testing.assert_array_equal(np.sort(np.floor(uk * n)), np.arange(n))
        assert np.any(np.diff(uk) < 0)  # not handed out in stratum order
    iid = L.final_time_fractions(orders, seed=5, stratify=False)
    np.testing.assert_array_equal(iid, np.random.default_rng([5, 11]).uniform(0.0, 1.0, 100))
    assert np.diff(np.sort(iid[:40] * 4.0)).max() > 2 * 4.0 / 40  # the gap stratification removes, at this seed
    cfg = _cfg(sample_T=True, n_per_order=10)
    tf = L.make_batch(cfg, seed=5).blocks[0].Tf
    np.testing.assert_allclose(np.sort(tf), np.sort(L.final_time_fractions(np.repeat([0, 1, 2], 10), 5)[:10]))
    more = L.make_batch(_cfg(sample_T=True, n_per_order=10, n_order0=25), seed=5)
    assert len(more.blocks[0].Tf) == 25 and more.n_samples == 45  # order-0 count set on its own
    np.testing.assert_allclose(more.blocks[0].weight.sum(), 1.0)  # a mean within the order: weight 1 in all


def test_loss_positive_for_nrg_and_gradient_finite() -> None:
    cfg = _cfg(n0=2, n_final=4)
    batch = L.make_batch(cfg, seed=0)
    lf = _jit(lambda b: L.olrg_loss({}, M.NRGMap(), cfg, b))
    assert float(lf(batch)) > 1e-6
    lin = M.LinearIsometryMap()
    p = lin.init(jax.random.PRNGKey(0), 8, 4, cfg.n_scales)
    val, g = _jit(jax.value_and_grad(lambda p, b: L.olrg_loss(p, lin, cfg, b)))(p, batch)
    assert np.isfinite(float(val)) and float(val) > 0
    assert np.all(np.isfinite(np.asarray(g["M"]))) and np.abs(np.asarray(g["M"])).max() > 0


def test_complex_isometry_loss_gradient_matches_finite_differences() -> None:
    """d loss / d(M, Mi) of a complex, state-keeping isometry (QR with phase fixing, the kept state's column, every
    scale end to end, exact targets) against central differences along a random direction: step 1e-6 on a loss
    of 3.6 leaves rounding ~1e-9 and truncation ~1e-12, so rtol 1e-5 is a real check. With the gradient through
    ``Mi`` cut it fails (checked)."""
    cfg = _cfg(n0=2, n_final=5, exact_weight=1.0, exact_max_n=5, sample_T=True, T=2.0)
    batch = L.make_batch(cfg, seed=1)
    lin = M.LinearIsometryMap(complex_=True, keep_state=True, init_scale=0.3)
    p = lin.init(jax.random.PRNGKey(4), 8, 4, cfg.n_scales)
    f = _jit(lambda p: L.olrg_loss(p, lin, cfg, batch))
    g = _jit(jax.grad(lambda p: L.olrg_loss(p, lin, cfg, batch)))(p)
    assert float(f(p)) > 1e-4 and np.abs(np.asarray(g["Mi"])).max() > 1e-4
    rng = np.random.default_rng(5)
    d = {k: jnp.asarray(rng.standard_normal(v.shape)) for k, v in p.items()}
    eps = 1e-6
    fd = (f({k: p[k] + eps * d[k] for k in p}) - f({k: p[k] - eps * d[k] for k in p})) / (2 * eps)
    an = sum(jnp.sum(g[k] * d[k]) for k in p)
    np.testing.assert_allclose(float(an), float(fd), rtol=1e-5)


def test_one_more_site_comparison() -> None:
    """``enlarge = 1``: with the identity map the exact-target term compares the (n + 2)-site chain with its exact TOBCs
    (zero loss to rounding, so the exact targets are of the enlarged chain); with NRG the loss differs from the plain
    comparison and the chi arrays still have one row per scale."""
    cfg = _cfg(n_final=5, exact_weight=1.0, exact_max_n=6, sample_T=True, enlarge=1)
    assert cfg.exact_scales == [0, 1]  # blocks of 4 and 5 sites, enlarged to 5 and 6 <= exact_max_n
    batch = L.make_batch(cfg, seed=0)
    loss = _jit(lambda b: L.olrg_loss({}, M.IdentityMap(), cfg, b))(batch)
    assert abs(float(loss)) < 1e-24 and max(np.abs(b.exact).max() for b in batch.blocks) > 0.1
    nrg = {e: _cfg(n0=2, n_final=4, enlarge=e) for e in (0, 1)}
    b = L.make_batch(nrg[0], seed=0)
    plain, one_more = (_jit(lambda bb, c=c: L.scale_chis({}, M.NRGMap(), c, bb, jax.random.PRNGKey(0)))(b)
                       for c in nrg.values())
    for k, blk in enumerate(b.blocks):  # one row per scale, one column per sample of the order-k block
        assert plain[0][k].shape == one_more[0][k].shape == (2, len(blk.Tf))
    diff = max(np.abs(np.asarray(p - q)).max() for p, q in zip(plain[0], one_more[0], strict=True))
    assert diff > 1e-3  # grown by one more site: another correlator


def test_local_consistency_trains_each_growth_map_alone() -> None:
    """``consistency="local"``: past the exact scales a map's consistency term sees the grown set as a fixed input.

    Identities: the loss value is the same as the joint one (only derivatives differ); the gradient of the local
    loss in the maps of the exact scales equals that of the exact-target term alone (no consistency term past the
    exact blocks reaches them); the last growth map's gradient equals the joint one (nothing comes after it to reach
    it either way). Joint training does send the growth terms into earlier maps (the gradients differ by far more
    than rounding), which is what lets jointly trained growth maps simplify what they pass on."""
    kw = dict(n0=2, n_final=6, exact_weight=1.0, exact_max_n=4, sample_T=True, T=2.0)
    joint, local = _cfg(**kw), _cfg(**kw, consistency="local")
    assert local.exact_scales == [0, 1]  # blocks of 3 and 4 sites; blocks 5 and 6 only by consistency
    batch = L.make_batch(joint, seed=2)
    lin = M.LinearIsometryMap(complex_=True, keep_state=True, init_scale=0.3)
    p = lin.init(jax.random.PRNGKey(1), 8, 4, joint.n_scales)
    vg = {c.consistency: _jit(jax.value_and_grad(lambda p, c=c: L.olrg_loss(p, lin, c, batch)))(p)
          for c in (joint, local)}
    np.testing.assert_allclose(float(vg["local"][0]), float(vg["joint"][0]), rtol=1e-13)  # same value
    gj, gl = vg["joint"][1], vg["local"][1]
    # the exact scales' maps: local gradient = gradient of the loss restricted to the exact scales (n_final = 4)
    exact_only = _cfg(**{**kw, "n_final": 4})
    ge = _jit(jax.grad(lambda q: L.olrg_loss(q, lin, exact_only, batch)))({k: v[:2] for k, v in p.items()})
    for k in p:
        np.testing.assert_allclose(np.asarray(gl[k][:2]), np.asarray(ge[k]), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(np.asarray(gl[k][3]), np.asarray(gj[k][3]), rtol=1e-9, atol=1e-12)
        assert np.abs(np.asarray(gl[k][2])).max() > 1e-6  # the first growth map is trained
    assert max(np.abs(np.asarray(gj[k][:3] - gl[k][:3])).max() for k in p) > 1e-4
    with pytest.raises(ValueError, match="consistency"):
        _cfg(consistency="both")
