"""Independent dense reference builders for the spin tests (plain numpy.kron, no olrg_hpc code)."""

from __future__ import annotations

import numpy as np

PX = np.array([[0.0, 1.0], [1.0, 0.0]])
PY = np.array([[0.0, -1.0j], [1.0j, 0.0]])
PZ = np.array([[1.0, 0.0], [0.0, -1.0]])


def op_at(ops: dict[int, np.ndarray], n: int) -> np.ndarray:
    """Dense kron(A_0, ..., A_{n-1}) with identities where ``ops`` has no entry."""
    out = np.ones((1, 1))
    for i in range(n):
        out = np.kron(out, ops.get(i, np.eye(2)))
    return out


def chain(n: int, bond: list[tuple[complex, np.ndarray, np.ndarray]], site: list[tuple[complex, np.ndarray]]):
    """sum_bonds sum_terms c A_i B_{i+1} + sum_sites sum_terms c O_i, dense."""
    H = np.zeros((2**n, 2**n), dtype=complex)
    for i in range(n - 1):
        for c, a, b in bond:
            H += c * op_at({i: a, i + 1: b}, n)
    for i in range(n):
        for c, o in site:
            H += c * op_at({i: o}, n)
    return H


# docs/conventions.md section 1, "Exact references": E0 of H = -J sum ZZ - g sum X, J = 1 (12 decimals given).
E0_TABLE = {
    (8, 0.5): -7.640592553590,
    (8, 1.0): -9.837951447459,
    (8, 1.5): -13.191404952189,
    (10, 0.5): -9.765503957927,
    (10, 1.0): -12.381489999655,
    (10, 1.5): -16.535254946759,
}
E0_TABLE_LARGE = {(64, 0.5): -67.196171190601, (64, 1.0): -81.125980123144}
# docs/conventions.md: <S^z_1 S^z_2>(t) = <Z_1 Z_2>/4 at h = J = 1, t = 0.1 ... 2.0, three digits
SZSZ_TABLE = [0.240, 0.213, 0.176, 0.137, 0.104, 0.084, 0.077, 0.083, 0.095, 0.109,
              0.120, 0.126, 0.127, 0.125, 0.123, 0.121, 0.121, 0.122, 0.124, 0.125]  # fmt: skip
