"""Exact diagonalization and exact real-time evolution of open spin-1/2 chains.

Conventions are those of :mod:`olrg_hpc.spins.models`: ``|0> = Z=+1``, site 0 is the most significant
factor of Kronecker products (basis index ``b``, bit ``n-1-i`` of ``b`` is the state of site ``i``, 0 = up).

Sparse Hamiltonians are built with bit tricks, not Kronecker products: every k-site term with 2x2 factors
is split into its ``2^k`` "flip patterns" (which bits it flips); all terms with the same flip mask ``x``
form one generalized permutation ``H[b ^ x, b] = d_x(b)``, so CSR rows have exactly one entry per distinct
mask and are written directly (no COO sort). Exact zeros (e.g. ``S^+S^-`` on parallel spins) are removed.

Memory (N sites, dim = 2^N)
---------------------------
* One state vector: ``16 * 2^N`` bytes complex (16 MiB at N = 20, 4 MiB at N = 18).
* TFIM Hamiltonian: ``nnz = (N + 1) 2^N`` (diagonal + one bit flip per site), stored as float64 data
  + int32 indices: ``12 (N+1) 2^N`` bytes = 264 MB at N = 20 (69 MB at N = 18). Complex models (any
  ``Y`` term) use complex128 data, 20 bytes per entry. XXZ: ``nnz ~ (N+1)/2 2^N`` after dropping zeros.
* Build transient: about twice the final matrix.
* :func:`evolve_expectations` keeps the real Hamiltonian (no complex copy: ``-iH`` is applied as a
  LinearOperator on real and imaginary parts) plus a chunk of states capped at ``max_chunk_bytes``
  (default 256 MiB, i.e. 16 states at N = 20). scipy's interval algorithm also holds its Taylor terms,
  ``m* + 1 <= 56`` states (up to ~0.9 GiB at N = 20, 235 MiB at N = 18): budget ~2 GiB at N = 20.
* Cost: ``expm_multiply`` needs about ``4 ||H||_1 t`` mat-vecs over ``[0, t]`` plus a fixed ~300 for its
  1-norm estimates (see ``benchmarks/bench_spins.py`` for measured numbers).
* Dense path (:func:`dense_hamiltonian`, eigendecomposition): ``N <= 12`` (a 4096 x 4096 float64 matrix
  is 128 MiB; its ``eigh`` takes ~10 s on one core, N <= 10 is instant).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from .models import ChainModel

__all__ = [
    "DENSE_MAX_SITES",
    "sparse_hamiltonian",
    "sparse_from_terms",
    "dense_hamiltonian",
    "site_op",
    "two_point",
    "product_state",
    "zero_state",
    "plus_state",
    "ground_state",
    "expectation",
    "evolve_states",
    "minus_i_h",
    "evolve_expectations",
]

#: Largest chain for which dense matrices and full eigendecompositions are offered.
DENSE_MAX_SITES = 12

Operator = Any  # scipy sparse matrix/array, dense ndarray (2-D) or a diagonal as 1-D ndarray


# --------------------------------------------------------------------------- building operators


def _site_bits(n: int) -> list[np.ndarray]:
    b = np.arange(1 << n, dtype=np.int64)
    return [((b >> (n - 1 - i)) & 1).astype(np.uint8) for i in range(n)]


def sparse_from_terms(terms: Iterable[tuple[complex, Sequence[tuple[int, np.ndarray]]]], n: int) -> sp.csr_array:
    """CSR matrix of ``sum_terms coef * prod_k op_k(site_k)`` on ``n`` sites (bit-trick builder).

    ``terms`` is a list of ``(coef, ((site, op2x2), ...))`` as returned by :meth:`ChainModel.terms`; sites in
    one term must be distinct. float64 if every entry is real, else complex128. Rows hold one entry per
    distinct flip mask (column indices are not sorted within a row, which sparse mat-vecs do not need).
    """
    dim = 1 << n
    bits = _site_bits(n)
    groups: dict[int, np.ndarray] = {}
    for coef, factors in terms:
        sites = [int(s) for s, _ in factors]
        if len(set(sites)) != len(sites) or min(sites) < 0 or max(sites) >= n:
            raise ValueError(f"bad sites {sites} for n = {n}")
        ops = [np.asarray(o) for _, o in factors]
        for flips in itertools.product((0, 1), repeat=len(factors)):
            # value of H[b ^ x, b] = coef * prod_k op_k[bit_k ^ f_k, bit_k]
            tables = [np.array([o[f, 0], o[1 ^ f, 1]]) for o, f in zip(ops, flips, strict=True)]
            if any(not np.any(t) for t in tables):
                continue
            val = np.full(dim, coef, dtype=np.result_type(coef, *tables, float))
            for t, s in zip(tables, sites, strict=True):
                if not np.all(t == 1):
                    val = val * t[bits[s]]
            mask = sum(f << (n - 1 - s) for f, s in zip(flips, sites, strict=True))
            if mask in groups:
                groups[mask] = groups[mask] + val
            else:
                groups[mask] = val
    if not groups:
        return sp.csr_array((dim, dim), dtype=np.float64)
    dtype = np.result_type(*groups.values())
    if dtype.kind == "c" and all(not np.any(g.imag) for g in groups.values()):
        dtype = np.dtype(np.float64)
    masks = sorted(groups)
    rows = np.arange(dim, dtype=np.int64)
    data = np.empty((dim, len(masks)), dtype=dtype)
    indices = np.empty((dim, len(masks)), dtype=np.int32 if dim < 2**31 else np.int64)
    for g, x in enumerate(masks):
        cols = rows ^ x
        indices[:, g] = cols
        d = groups.pop(x)
        data[:, g] = d[cols].real if dtype.kind == "f" else d[cols]
        del d
    keep = data != 0
    if keep.all():
        indptr = np.arange(0, dim * len(masks) + 1, len(masks), dtype=indices.dtype)
        return sp.csr_array((data.ravel(), indices.ravel(), indptr), shape=(dim, dim))
    counts = keep.sum(axis=1)
    indptr = np.zeros(dim + 1, dtype=indices.dtype)
    np.cumsum(counts, out=indptr[1:])
    return sp.csr_array((data[keep], indices[keep], indptr), shape=(dim, dim))


def sparse_hamiltonian(model: ChainModel) -> sp.csr_array:
    """Sparse CSR Hamiltonian of ``model`` (float64 when real). Memory: see the module docstring."""
    return sparse_from_terms(model.terms(), model.n)


def dense_hamiltonian(model: ChainModel) -> np.ndarray:
    """Dense Hamiltonian, for ``model.n <= DENSE_MAX_SITES`` (12)."""
    if model.n > DENSE_MAX_SITES:
        raise ValueError(f"dense path limited to n <= {DENSE_MAX_SITES} sites, got {model.n}")
    return sparse_hamiltonian(model).toarray()


def site_op(op: np.ndarray, i: int, n: int) -> sp.csr_array:
    """``I^{(x) i} (x) op (x) I^{(x) n-i-1}`` as CSR (op: any 2x2 matrix, site i in 0..n-1)."""
    if not 0 <= i < n:
        raise ValueError(f"site {i} outside 0..{n - 1}")
    left = sp.identity(1 << i, format="csr")
    right = sp.identity(1 << (n - i - 1), format="csr")
    return sp.csr_array(sp.kron(sp.kron(left, sp.csr_array(np.asarray(op))), right, format="csr"))


def two_point(opA: np.ndarray, i: int, opB: np.ndarray, j: int, n: int) -> sp.csr_array:
    """``opA_i opB_j`` as CSR; for ``i == j`` the site operator ``opA @ opB``."""
    if i == j:
        return site_op(np.asarray(opA) @ np.asarray(opB), i, n)
    return sparse_from_terms([(1.0, ((i, np.asarray(opA)), (j, np.asarray(opB))))], n)


# --------------------------------------------------------------------------- states


def product_state(site_states: Sequence[np.ndarray] | np.ndarray, n: int | None = None) -> np.ndarray:
    """Kronecker product of single-site vectors (one 2-vector repeated ``n`` times, or a list)."""
    arr = np.asarray(site_states)
    if arr.ndim == 1:
        if n is None:
            raise ValueError("give n when passing a single site state")
        vecs = [arr] * n
    else:
        vecs = list(arr)
    out = np.ones(1, dtype=np.result_type(*vecs, float))
    for v in vecs:
        out = np.kron(out, v)
    return out


def zero_state(n: int) -> np.ndarray:
    """``|0...0>`` (all ``Z = +1``), float64."""
    psi = np.zeros(1 << n)
    psi[0] = 1.0
    return psi


def plus_state(n: int) -> np.ndarray:
    """``|+...+>`` (all ``X = +1``), float64."""
    return np.full(1 << n, 2.0 ** (-n / 2))


# --------------------------------------------------------------------------- spectra


def ground_state(H: Operator, k: int = 1, *, tol: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Lowest ``k`` eigenpairs ``(energies[k], vectors[dim, k])``, energies ascending.

    Dense ``ndarray`` or ``dim <= 256``: ``numpy.linalg.eigh``. Sparse: Lanczos (``eigsh``, ``which="SA"``)
    from a seeded random start vector (reproducible), converged to machine precision by default.
    """
    dim = H.shape[0]
    if isinstance(H, np.ndarray) or dim <= 256:
        Hd = H if isinstance(H, np.ndarray) else H.toarray()
        w, v = np.linalg.eigh(Hd)
        return w[:k], v[:, :k]
    v0 = np.random.default_rng(seed).standard_normal(dim)
    w, v = spla.eigsh(H, k=k, which="SA", tol=tol, v0=v0)
    order = np.argsort(w)
    return w[order], v[:, order]


# --------------------------------------------------------------------------- dynamics


def _apply(O: Operator, states: np.ndarray) -> np.ndarray:
    """``O`` applied to the columns of ``states`` ((dim,) or (dim, m))."""
    if isinstance(O, np.ndarray) and O.ndim == 1:
        return O[:, None] * states if states.ndim == 2 else O * states
    return O @ states


def expectation(O: Operator, psi: np.ndarray) -> float:
    """``<psi|O|psi>`` (real part; O Hermitian). O: sparse, dense, or a diagonal given as 1-D array."""
    return float(np.real(np.vdot(psi, _apply(O, psi))))


def _expectations_batch(O: Operator, states: np.ndarray, probs: np.ndarray | None = None) -> np.ndarray:
    """Real ``<psi_t|O|psi_t>`` for the rows ``psi_t`` of ``states`` (shape (m, dim)).

    Diagonal observables (1-D arrays) use the probabilities ``|psi_t|^2`` (pass them to share them);
    others ``Re sum conj(psi) O psi`` on real/imaginary views, with no conjugated copy of the states.
    """
    if isinstance(O, np.ndarray) and O.ndim == 1:
        p = np.abs(states) ** 2 if probs is None else probs
        return p @ np.real(O)
    Opsi = np.asarray(_apply(O, states.T))
    if not np.iscomplexobj(states):
        return np.real(np.einsum("md,dm->m", states, Opsi))
    Opsi = Opsi.astype(np.complex128, copy=False)
    return np.einsum("md,dm->m", states.real, Opsi.real) + np.einsum("md,dm->m", states.imag, Opsi.imag)


def minus_i_h(H: Operator) -> spla.LinearOperator:
    """``A = -i H`` (H Hermitian) as a LinearOperator, the generator handed to ``expm_multiply``.

    For real H no complex copy of H is made (half the memory of ``-1j * H``): vectors are split into real
    and imaginary parts, blocks of vectors are viewed as real blocks with twice the columns (one
    ``csr_matvecs`` pass). ``A^dagger = +i H`` serves the transposed products of the norm estimators.
    """
    real = not np.iscomplexobj(H.data if sp.issparse(H) else H)

    def mv(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v)
        if not (real and np.iscomplexobj(v)):
            return -1j * (H @ v)
        if v.ndim == 1:
            return -1j * (H @ v.real) + (H @ v.imag)
        vc = np.ascontiguousarray(v, dtype=np.complex128)
        w = np.ascontiguousarray(H @ vc.view(np.float64))  # columns re0, im0, re1, im1, ...
        return -1j * w.view(np.complex128)

    def rmv(v: np.ndarray) -> np.ndarray:
        return -mv(v)

    return spla.LinearOperator(H.shape, matvec=mv, rmatvec=rmv, matmat=mv, rmatmat=rmv, dtype=np.complex128)


def _is_uniform(times: np.ndarray) -> bool:
    if times.size < 3:
        return True
    d = np.diff(times)
    return bool(np.allclose(d, d[0], rtol=1e-10, atol=1e-13 * max(1.0, abs(times[-1]))))


def _sparse_trajectory(H: Operator, psi0: np.ndarray, times: np.ndarray, max_chunk_bytes: int):
    """Yield ``(index_slice, states[m, dim])`` along ``times`` using expm_multiply in chunks."""
    dim = psi0.shape[0]
    A = minus_i_h(H)
    trA = -1j * float(np.real(H.diagonal().sum()))
    psi = np.asarray(psi0, dtype=np.complex128)
    chunk = max(2, int(max_chunk_bytes // (16 * dim)))
    if times.size == 1 or not _is_uniform(times):
        t_prev = 0.0
        for k, t in enumerate(times):
            if t != t_prev:
                psi = spla.expm_multiply(A, psi, start=0.0, stop=t - t_prev, num=2, endpoint=True, traceA=trA)[1]
            t_prev = t
            yield slice(k, k + 1), psi[None, :]
        return
    dt = times[1] - times[0]
    if times[0] != 0:
        psi = spla.expm_multiply(A, psi, start=0.0, stop=times[0], num=2, endpoint=True, traceA=trA)[1]
    yield slice(0, 1), psi[None, :]
    k = 1
    while k < times.size:
        m = min(chunk - 1, times.size - k)
        # states at t_{k-1} + dt, ..., t_{k-1} + m dt, including the start point (discarded)
        states = spla.expm_multiply(A, psi, start=0.0, stop=m * dt, num=m + 1, endpoint=True, traceA=trA)
        yield slice(k, k + m), states[1:]
        psi = states[-1]
        k += m


def _dense_trajectory(H: np.ndarray, psi0: np.ndarray, times: np.ndarray, max_chunk_bytes: int):
    w, V = np.linalg.eigh(H)
    c0 = V.conj().T @ psi0
    chunk = max(1, int(max_chunk_bytes // (16 * H.shape[0])))
    for k in range(0, times.size, chunk):
        ts = times[k : k + chunk]
        coeff = np.exp(-1j * np.outer(ts, w)) * c0[None, :]
        yield slice(k, k + ts.size), coeff @ V.T


def evolve_states(
    H: Operator, psi0: np.ndarray, times: Sequence[float] | np.ndarray, *, max_chunk_bytes: int = 2**28
) -> np.ndarray:
    """States ``exp(-i H t) psi0`` at every time, shape ``(len(times), dim)`` (mind the memory)."""
    times = np.asarray(times, dtype=float)
    out = np.empty((times.size, psi0.shape[0]), dtype=np.complex128)
    traj = _dense_trajectory if isinstance(H, np.ndarray) else _sparse_trajectory
    for sl, states in traj(H, psi0, times, max_chunk_bytes):
        out[sl] = states
    return out


def evolve_expectations(
    H: Operator,
    psi0: np.ndarray,
    observables: Mapping[str, Operator],
    times: Sequence[float] | np.ndarray,
    *,
    max_chunk_bytes: int = 2**28,
) -> dict[str, np.ndarray]:
    """``<psi(t)|O|psi(t)>`` for every observable at every time, ``psi(t) = exp(-i H t) psi0``.

    Parameters
    ----------
    H:
        Hermitian Hamiltonian: scipy sparse (Krylov-free Taylor propagation by
        ``scipy.sparse.linalg.expm_multiply``, Al-Mohy & Higham 2011, accurate to double precision) or a
        dense ndarray (exact eigendecomposition, for ``n <= 12``).
    psi0:
        Initial state (normalized), length ``2^n``.
    observables:
        name -> Hermitian operator (sparse, dense, or 1-D array = diagonal in the Z basis). The real part
        of the expectation is returned.
    times:
        Non-decreasing times, ``times >= 0``. Uniformly spaced times go through ONE interval call of
        ``expm_multiply`` (``start, stop, num, endpoint=True``) per chunk of at most ``max_chunk_bytes`` of
        states; other grids are propagated interval by interval.

    Returns
    -------
    ``{name: array of shape (len(times),)}``.
    """
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size == 0:
        raise ValueError("times must be a non-empty 1-D array")
    if np.any(np.diff(times) < 0) or times[0] < 0:
        raise ValueError("times must be non-negative and non-decreasing")
    out = {name: np.empty(times.size) for name in observables}
    traj = _dense_trajectory if isinstance(H, np.ndarray) else _sparse_trajectory
    any_diag = any(np.ndim(O) == 1 for O in observables.values())
    for sl, states in traj(H, np.asarray(psi0), times, max_chunk_bytes):
        # observables on sub-batches of at most 16 MiB of states: bounded temporaries (O psi, |psi|^2)
        sub = max(1, (2**24) // (16 * states.shape[1]))
        for j in range(0, states.shape[0], sub):
            block = states[j : j + sub]
            probs = np.abs(block) ** 2 if any_diag else None
            idx = np.arange(sl.start, sl.stop)[j : j + sub]
            for name, O in observables.items():
                out[name][idx] = _expectations_batch(O, block, probs)
    return out
