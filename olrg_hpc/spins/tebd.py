"""TEBD reference curves with TeNPy: the baseline OLRG is compared with at a bond dimension ``chi`` (issue #4).

The quench of the OLRG benchmark (docs/spin-chains.md): an open chain prepared in ``|0...0>`` (all ``Z = +1``),
evolved with any chain of :mod:`olrg_hpc.spins.models`, measuring ``C(t) = <Z_0 Z_1>(t)`` at the open end. TeNPy
(``physics-tenpy``, the ``tebd`` extra) runs TEBD on a finite MPS: Suzuki-Trotter of ``order`` 2 by default, step
``dt``, and after every gate a truncation to at most ``chi`` singular values (and none below ``svd_min``). The model
is written term by term from its :class:`~olrg_hpc.spins.models.ModelKind` (named site and bond terms) in our own
basis (TeNPy's ``SpinHalfSite``: ``"up"`` is ``Sigmaz = +1``, our ``|0>``, and ``Sp`` raises to it, our ``S^+``),
so no basis change is involved: :data:`TENPY_OPERATORS` maps our operator names to TeNPy's.

The truncation error is the only approximation besides the Trotter error, which at ``dt = 0.01`` (second order)
is about 1e-5 on ``t <= 2`` (``tests/spins/test_tebd.py``, against free fermions with ``chi`` large enough to be
exact).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .models import ChainModel

__all__ = ["tebd_curve", "steps_on_grid", "TENPY_OPERATORS"]

#: our operator names (:data:`olrg_hpc.spins.models.OPERATORS`) -> TeNPy ``SpinHalfSite`` operator names
TENPY_OPERATORS = {"I": "Id", "X": "Sigmax", "Y": "Sigmay", "Z": "Sigmaz", "Sx": "Sx", "Sy": "Sy", "Sz": "Sz",
                   "Sp": "Sp", "Sm": "Sm"}


def steps_on_grid(times: Any, dt: float) -> np.ndarray | None:
    """Number of ``dt`` steps to each time, or ``None`` when ``dt <= 0`` or a time is negative or not a multiple of
    ``dt`` (to 1e-9): TEBD can only stop on its step grid."""
    times = np.asarray(times, dtype=float)
    if dt <= 0:
        return None
    steps = np.rint(times / dt).astype(int)
    return None if np.any(steps < 0) or np.any(np.abs(steps * dt - times) > 1e-9) else steps


def _tenpy_model(model: ChainModel, N: int) -> Any:
    """The chain ``model`` on ``N`` sites as a TeNPy nearest-neighbour model, term by term."""
    from tenpy.models.model import CouplingMPOModel, NearestNeighborModel
    from tenpy.networks.site import SpinHalfSite

    site, bonds = model.site_terms_named(), model.bond_terms_named()

    class _Chain(CouplingMPOModel, NearestNeighborModel):
        def init_sites(self, p: Any) -> Any:
            return SpinHalfSite(conserve="None")

        def init_terms(self, p: Any) -> None:
            for c, op in site:
                self.add_onsite(float(c), 0, TENPY_OPERATORS[op])
            for c, a, b in bonds:
                self.add_coupling(float(c), 0, TENPY_OPERATORS[a], 0, TENPY_OPERATORS[b], 1)

    return _Chain({"L": N, "bc_MPS": "finite"})


def tebd_curve(model: ChainModel, N: int, times: Any, chi: int, dt: float = 0.01, order: int = 2,
               svd_min: float = 1e-14) -> np.ndarray:
    """``<Z_0 Z_1>(t)`` from ``|0...0>`` on ``N`` sites by TEBD at bond dimension ``chi`` (module docstring).

    ``times`` must be non-negative multiples of ``dt`` (to 1e-9); the state is evolved through them in increasing
    order and the curve is returned in the order given.
    """
    if chi < 1 or dt <= 0:
        raise ValueError(f"need chi >= 1 and dt > 0, got chi = {chi}, dt = {dt}")
    steps = steps_on_grid(times, dt)
    if steps is None:
        raise ValueError(f"times must be non-negative multiples of dt = {dt}")
    from tenpy.algorithms.tebd import TEBDEngine
    from tenpy.networks.mps import MPS

    M = _tenpy_model(model, N)
    psi = MPS.from_product_state(M.lat.mps_sites(), ["up"] * N, bc="finite", unit_cell_width=M.lat.mps_unit_cell_width)
    trunc = {"chi_max": int(chi), "svd_min": float(svd_min)}
    out = np.empty(len(steps))
    done = 0
    for i in np.argsort(steps, kind="stable"):
        if steps[i] > done:
            TEBDEngine(psi, M, {"order": order, "dt": dt, "N_steps": int(steps[i] - done), "trunc_params": trunc}).run()
            done = int(steps[i])
        out[i] = float(np.real(psi.expectation_value_term([("Sigmaz", 0), ("Sigmaz", 1)])))
    return out
