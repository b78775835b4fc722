"""TEBD reference curves with TeNPy: the baseline OLRG is compared with at a bond dimension ``chi`` (issue #4).

The quench of the OLRG benchmark (science.md section 1): an open chain prepared in ``|0...0>`` (all ``Z = +1``),
evolved with the Ising chains of :mod:`olrg_hpc.spins.models` (``H = J sum Z_i Z_{i+1} + h sum X_i + g sum Z_i``),
measuring ``C(t) = <Z_0 Z_1>(t)`` at the open end. TeNPy (``physics-tenpy``, the ``tebd`` extra) runs TEBD on a
finite MPS: Suzuki-Trotter of ``order`` 2 by default, step ``dt``, and after every gate a truncation to at most
``chi`` singular values (and none below ``svd_min``). The model is written in our own basis (TeNPy's
``SpinHalfSite``: ``"up"`` is ``Sigmaz = +1``, our ``|0>``), so no basis change is involved: ``Sigmax``,
``Sigmaz`` are our ``X``, ``Z``.

The truncation error is the only approximation besides the Trotter error, which at ``dt = 0.01`` (second order)
is about 1e-5 on ``t <= 2`` (``tests/spins/test_tebd.py``, against free fermions with ``chi`` large enough to be
exact).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .models import ChainModel

__all__ = ["tebd_curve", "steps_on_grid"]


def steps_on_grid(times: Any, dt: float) -> np.ndarray | None:
    """Number of ``dt`` steps to each time, or ``None`` when ``dt <= 0`` or a time is negative or not a multiple of
    ``dt`` (to 1e-9): TEBD can only stop on its step grid."""
    times = np.asarray(times, dtype=float)
    if dt <= 0:
        return None
    steps = np.rint(times / dt).astype(int)
    return None if np.any(steps < 0) or np.any(np.abs(steps * dt - times) > 1e-9) else steps


def _ising_model(model: ChainModel, N: int) -> Any:
    from tenpy.models.model import CouplingMPOModel, NearestNeighborModel
    from tenpy.networks.site import SpinHalfSite

    class _Ising(CouplingMPOModel, NearestNeighborModel):
        def init_sites(self, p: Any) -> Any:
            return SpinHalfSite(conserve="None")

        def init_terms(self, p: Any) -> None:
            self.add_onsite(p.get("h", 0.0, expect_type="real"), 0, "Sigmax")
            self.add_onsite(p.get("g", 0.0, expect_type="real"), 0, "Sigmaz")
            self.add_coupling(p.get("J", 0.0, expect_type="real"), 0, "Sigmaz", 0, "Sigmaz", 1)

    return _Ising({"L": N, "bc_MPS": "finite", **model.params})


def tebd_curve(model: ChainModel, N: int, times: Any, chi: int, dt: float = 0.01, order: int = 2,
               svd_min: float = 1e-14) -> np.ndarray:
    """``<Z_0 Z_1>(t)`` from ``|0...0>`` on ``N`` sites by TEBD at bond dimension ``chi`` (module docstring).

    ``times`` must be non-negative multiples of ``dt`` (to 1e-9); the state is evolved through them in increasing
    order and the curve is returned in the order given. Ising chains only (``tfim``, ``mixed_field_ising``).
    """
    if model.name not in ("tfim", "mixed_field_ising"):
        raise ValueError(f"tebd_curve covers the Ising chains (tfim, mixed_field_ising), not {model.name!r}")
    if chi < 1 or dt <= 0:
        raise ValueError(f"need chi >= 1 and dt > 0, got chi = {chi}, dt = {dt}")
    steps = steps_on_grid(times, dt)
    if steps is None:
        raise ValueError(f"times must be non-negative multiples of dt = {dt}")
    from tenpy.algorithms.tebd import TEBDEngine
    from tenpy.networks.mps import MPS

    M = _ising_model(model, N)
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
