"""TEBD reference (TeNPy) against free fermions and ED: conventions and truncation."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tenpy", reason="physics-tenpy (the tebd extra) is not installed")

from olrg_hpc.olrg.evaluate import exact_curve  # noqa: E402
from olrg_hpc.spins import models  # noqa: E402
from olrg_hpc.spins.tebd import tebd_curve  # noqa: E402

TIMES = np.round(np.arange(0.0, 1.51, 0.1), 10)


def test_untruncated_tebd_is_the_exact_curve() -> None:
    """N = 8 with chi = 16 (the largest Schmidt rank of 8 sites): only the Trotter error is left, second order at
    dt = 0.01, about 1e-5 on t <= 1.5; the tolerance 1e-4 would catch any sign or basis slip (errors of order 1).
    The mixed-field chain (g = 0.5) is checked against ED, so the longitudinal field's sign is tested too."""
    for m in (models.tfim(8), models.mixed_field_ising(8, h=1.0, g=0.5)):
        got = tebd_curve(m, 8, TIMES, chi=16)
        np.testing.assert_allclose(got, exact_curve(m, 8, TIMES), atol=1e-4)


def test_truncation_is_applied_and_times_come_back_in_order() -> None:
    """chi = 2 at N = 10 is far from exact by t = 3 (error > 1e-2; 5e-3 at t <= 1.5), chi = 32 is not; a shuffled
    time list gives the same values in its own order."""
    m, times = models.tfim(10), np.round(np.arange(0.0, 3.01, 0.25), 10)
    exact = exact_curve(m, 10, times)
    assert np.abs(tebd_curve(m, 10, times, chi=2) - exact).max() > 1e-2
    shuffled = np.random.default_rng(0).permutation(len(times))
    np.testing.assert_allclose(tebd_curve(m, 10, times[shuffled], chi=32), exact[shuffled], atol=1e-4)


def test_bad_times_are_refused() -> None:
    with pytest.raises(ValueError, match="multiples of dt"):
        tebd_curve(models.tfim(4), 4, [0.005], chi=4)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_tenpy_hamiltonian_is_ours_entry_by_entry(name: str) -> None:
    """Every registered model, written for TeNPy from its named terms, has our ED Hamiltonian on 4 sites, entry by
    entry (same basis: TeNPy's "up" is our |0>, site 0 most significant): the TEBD reference needs no per-model code.
    Couplings away from the defaults so that every term counts; 1e-13: rounding of 16 x 16 sums."""
    from tenpy.algorithms.exact_diag import ExactDiag

    from olrg_hpc.spins import ed
    from olrg_hpc.spins.tebd import _tenpy_model

    kind = models.MODELS[name]
    m = kind(4, *(0.7 + 0.3 * i for i in range(len(kind.couplings))))
    exact = ExactDiag.from_H_mpo(_tenpy_model(m, 4).H_MPO)
    exact.build_full_H_from_mpo()
    np.testing.assert_allclose(exact.full_H.to_ndarray(), ed.dense_hamiltonian(m), atol=1e-13)
