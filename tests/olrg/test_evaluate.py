"""Quench dynamics of the final block against free fermions / ED; baselines; learned-map evaluation path."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from olrg_hpc.olrg import evaluate as E
from olrg_hpc.olrg import maps as M
from olrg_hpc.spins import models

TIMES = np.round(np.arange(0.1, 2.01, 0.1), 10)
# docs/conventions.md section 1: exact <S^z_1 S^z_2>(t) = C(t)/4 at h = J = 1, t = 0.1 .. 2.0 (N >= 6)
SCIENCE_SZSZ = [0.240, 0.213, 0.176, 0.137, 0.104, 0.084, 0.077, 0.083, 0.095, 0.109,
                0.120, 0.126, 0.127, 0.125, 0.123, 0.121, 0.121, 0.122, 0.124, 0.125]  # fmt: skip


def test_identity_map_reproduces_exact_tfim_and_mixed_field() -> None:
    r = E.error_curve(models.tfim(8), 8, M.IdentityMap(), TIMES, n0=3)
    assert np.max(r["abs_err"]) < 1e-10
    np.testing.assert_allclose(r["approx"] / 4, SCIENCE_SZSZ, atol=5e-4)
    # mixed-field Ising against ED
    r2 = E.error_curve(models.mixed_field_ising(8, g=0.4), 8, M.IdentityMap(), TIMES, n0=2)
    assert np.max(r2["abs_err"]) < 1e-10


def test_exact_curve_free_fermions_match_ed_reference() -> None:
    m = models.mixed_field_ising(9, g=0.0)  # g = 0: TFIM, but the ED branch
    np.testing.assert_allclose(E.exact_curve(m, 9, TIMES), E.exact_curve(models.tfim(9), 9, TIMES), atol=1e-10)


def test_nrg_is_much_worse_than_exact() -> None:
    """NRG keeps the lowest D levels; the quench from |0..0> at h = J = 1 lives at high energy (module doc)."""
    r = E.error_curve(models.tfim(10), 10, M.NRGMap(), TIMES, n0=3)
    assert np.max(r["abs_err"]) > 0.1
    assert np.median(r["rel_err"]) > 0.5
    # the time-averaged DMRG-style map is good at short times, poor later
    d = E.error_curve(models.tfim(10), 10, M.DMRGMap(T=1.0), TIMES, n0=3)
    assert d["rel_err"][0] < 1e-2 and np.max(d["rel_err"]) > 0.1


def test_learned_linear_map_warm_started_from_nrg_equals_nrg() -> None:
    m = models.tfim(12)
    Vs = E.fixed_map_isometries(m, 8, M.NRGMap(), n0=3)
    assert all(np.isrealobj(V) or not np.any(np.imag(V)) for V in Vs)
    lin = M.LinearIsometryMap()
    p = lin.init(jax.random.PRNGKey(0), 16, 8, len(Vs), warm=Vs)
    a = E.olrg_curve(m, 12, lin, TIMES[:5], params=p, n0=3)  # scales beyond the trained range reuse the last V
    b = E.olrg_curve(m, 8, M.NRGMap(), TIMES[:5], n0=3)
    c = E.olrg_curve(m, 8, lin, TIMES[:5], params=p, n0=3)
    np.testing.assert_allclose(c, b, atol=1e-10)
    assert a.shape == (5,) and np.all(np.isfinite(a))


def test_complex_warm_start_needs_a_complex_map() -> None:
    """The time-averaged DMRG map's isometries are complex: a real map refuses them (it would keep only the
    real part, another subspace), a complex map starts exactly from them (same curve, 1e-10: float64 algebra)."""
    m = models.tfim(8)
    Vs = E.fixed_map_isometries(m, 8, M.DMRGMap(T=1.0), n0=3)
    assert max(float(np.max(np.abs(np.imag(V)))) for V in Vs) > 1e-6
    with pytest.raises(ValueError, match="complex_=True"):
        M.LinearIsometryMap().init(jax.random.PRNGKey(0), 16, 8, len(Vs), warm=Vs)
    lin = M.LinearIsometryMap(complex_=True)
    p = lin.init(jax.random.PRNGKey(0), 16, 8, len(Vs), warm=Vs)
    np.testing.assert_allclose(E.olrg_curve(m, 8, lin, TIMES[:5], params=p, n0=3),
                               E.olrg_curve(m, 8, M.DMRGMap(T=1.0), TIMES[:5], n0=3), atol=1e-10)


def test_enlarged_evaluation_grows_exact_sites_after_the_maps() -> None:
    """``enlarge=1`` at N = 5 from the exact 4-site block (D = 16): the block is mapped to 4 sites (no compression)
    and one exact site is grown, so C(t) is exact (1e-12); without it NRG compresses the 5-site block (error > 0.1).
    ``n_mapped`` sets where the chain ends: 3 mapped sites (the exact 3-site block) + 1 is the 4-site chain."""
    model = models.tfim(5)
    times = np.linspace(0.0, 2.0, 21)
    plain = E.error_curve(model, 5, M.NRGMap(), times, n0=4)
    one_more = E.error_curve(model, 5, M.NRGMap(), times, n0=4, enlarge=1)
    assert plain["abs_err"].max() > 0.1
    assert one_more["abs_err"].max() < 1e-12
    short = E.olrg_curve(model, 5, M.NRGMap(), times, n0=3, enlarge=1, n_mapped=3)
    np.testing.assert_allclose(short, E.exact_curve(models.tfim(4), 4, times), atol=1e-12)


def test_orbit_tails_against_a_time_grid_and_time_reversal() -> None:
    """The best-subspace tails of the quench orbit: (1) the complex ones against G averaged on a midpoint grid of
    4000 times from ED states (grid error ~ (omega dt)^2 / 24 ~ 1e-7 here, so 1e-6); (2) the real tails on [0, T]
    equal the complex tails on [0, 2T] (time reversal, to rounding); (3) complex never misses more than real, and
    strictly less here; (4) nothing is missed once D covers the orbit's eigenstates."""
    from olrg_hpc.spins import ed

    m, n, T, dims = models.tfim(6), 6, 1.5, [2, 4, 8, 16, 64]
    tails = E.orbit_tails(m, n, T, dims)
    ts = (np.arange(4000) + 0.5) * T / 4000
    psi = ed.evolve_states(ed.dense_hamiltonian(m), ed.zero_state(n), ts)
    G = np.einsum("ti,tj->ij", psi, psi.conj()) / len(ts)
    ev = np.sort(np.linalg.eigvalsh(G))[::-1]
    np.testing.assert_allclose(tails["complex"], [max(0.0, 1 - ev[:D].sum()) for D in dims], atol=1e-6)
    np.testing.assert_allclose(tails["real"], E.orbit_tails(m, n, 2 * T, dims)["complex"], atol=1e-12)
    assert all(c <= r + 1e-14 for c, r in zip(tails["complex"], tails["real"], strict=True))
    assert tails["real"][1] > 10 * tails["complex"][1] > 0
    assert tails["complex"][-1] < 1e-12 and tails["real"][-1] < 1e-12


@pytest.mark.parametrize("h,t_max", [(1.0, 4.0), (2.0, 3.0)])
def test_light_cone_sites_cover_the_window(h: float, t_max: float) -> None:
    """The extent decided from chains of at most 12 sites holds C(t) of the 64-site chain on [0, t_max] to 1e-6
    (free fermions judge; the criterion's own eps is 1e-6 per site and one margin site is added), while the chain three
    sites shorter is off by more than 1e-6: the criterion neither falls short nor takes more than two sites too
    many (one is its margin, the other its eps per site). The
    departure times it measured come from pairs of chains of at most 12 sites and grow by about 1/(2 min(h, J))
    per site (light-cone velocity 2 at h = J = 1)."""
    m = models.tfim(12, J=1.0, h=h)
    r = E.light_cone_sites(m, t_max)
    n = r["n_sites"]
    assert max(r["t_departure"]) + 1 <= 12 and 12 < n < 30
    t = np.linspace(0.0, t_max, 401)
    ref = E.exact_curve(m.with_n(64), 64, t)
    assert np.abs(E.exact_curve(m.with_n(n), n, t) - ref).max() < 1e-6
    assert np.abs(E.exact_curve(m.with_n(n - 3), n - 3, t) - ref).max() > 1e-6
    if h == 1.0:
        assert r["velocity"] == pytest.approx(2.0, rel=0.2)
