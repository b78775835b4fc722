"""Exact time-ordered boundary correlations (TOBCs) of an n-site block (docs/spin-chains.md).

Definition
----------
For a block Hamiltonian ``H`` (the n-site open chain of a :class:`~olrg_hpc.spins.models.ChainModel`),
boundary operator ``B`` (default ``Z`` on the last site, ``n-1``), target ``O`` (default ``Z_0 Z_1``,
the OLRG paper's ``Z_1 Z_2``) and initial state ``rho`` (default ``|0...0><0...0|``)::

    chi_k(t_1..t_k; c_1..c_k; T) = Tr[ rho  ad_{B(t_k),c_k} ... ad_{B(t_1),c_1} ( O(T) ) ],
    ad_{A,c}(X) = A X + c X A,   A(t) = e^{iHt} A e^{-iHt}  (Heisenberg picture of the block alone).

Order 0 is ``<O(T)> = Tr[rho O(T)]``. ``c = -1`` gives commutators, ``c = +1`` anticommutators.

Time-ordering convention. ``ad_{B(t_1),c_1}`` is the innermost (applied first to ``O(T)``), and the
Dyson series of the coupling ``V = B (x) E`` to the rest of the chain produces exactly the ordering::

    T >= t_1 >= t_2 >= ... >= t_k >= 0,

because ``U_I(T)^dag O U_I(T) = O + i int_0^T dt_1 [V(t_1), O] + i^2 int_0^T dt_1 int_0^{t_1} dt_2
[V(t_2), [V(t_1), O]] + ...``. :func:`sample_tobc_inputs` draws times in this order (``times[:, 0]`` is
``t_1``, the largest). The evaluators accept any times and apply them in the given nesting order.

Values are complex: for Hermitian ``B``, ``O``, ``rho`` a chi with an even number of ``c = -1`` is real,
with an odd number purely imaginary (returned as complex128 either way; compare with ``abs``).

Algorithm (dense, ``n <= 12``). ``H = W diag(E) W^dag`` once; in the eigenbasis the Heisenberg picture is a
phase, ``A(t)_{mn} = e^{i(E_m - E_n)t} A_{mn}``. Using ``Tr[rho ad_{A,c}(X)] = Tr[(rho A + c A rho) X]``, the
adjoint maps act on ``rho``. For a pure state ``rho = |psi><psi|`` the iterate stays a sum of ``2^k``
dyads ``|l><r|`` (``ad'(|l><r|) = |l><A^dag r| + c |A l><r|``), so one chi costs ``O(2^k D^2)`` (matrix-vector
products) instead of ``O(k D^3)``; a mixed ``rho`` (2-D array) uses the dense ``O(k D^3)`` recursion.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from . import ed
from .models import OPERATORS, ChainModel

__all__ = [
    "TOBCInputs",
    "ExactTOBC",
    "exact_tobc",
    "exact_tobc_batch",
    "sample_tobc_inputs",
    "parse_operator",
]

OperatorSpec = str | np.ndarray

_TOKEN = re.compile(r"(Sx|Sy|Sz|Sp|Sm|X|Y|Z|I)(\d+)")


def parse_operator(spec: OperatorSpec, n: int, default_site: int | None = None) -> np.ndarray:
    """Dense ``2^n x 2^n`` operator from a spec.

    * ``"Z0Z1"``, ``"Sz3"``, ``"X0Y2"``: product of named single-site operators (``OPERATORS`` names,
      0-based sites).
    * a bare name (``"Z"``, ``"Sp"``) acts on ``default_site``.
    * a 2x2 array acts on ``default_site``; a ``2^n x 2^n`` array is returned as is.
    """
    dim = 1 << n
    if isinstance(spec, np.ndarray):
        if spec.shape == (dim, dim):
            return spec
        if spec.shape == (2, 2):
            if default_site is None:
                raise ValueError("a 2x2 operator needs a site")
            return ed.site_op(spec, default_site, n).toarray()
        raise ValueError(f"operator of shape {spec.shape} does not fit {n} sites")
    if spec in OPERATORS:
        if default_site is None:
            raise ValueError(f"operator {spec!r} needs a site")
        return ed.site_op(OPERATORS[spec], default_site, n).toarray()
    tokens = _TOKEN.findall(spec)
    if not tokens or "".join(a + b for a, b in tokens) != spec:
        raise ValueError(f"cannot parse operator spec {spec!r} (e.g. 'Z0Z1', 'Sz3')")
    out = np.eye(dim, dtype=complex)
    for name, site in tokens:
        if int(site) >= n:
            raise ValueError(f"site {site} outside the {n}-site block")
        out = out @ ed.site_op(OPERATORS[name], int(site), n).toarray()
    return out.real.copy() if not np.any(out.imag) else out


def _initial_state(initial: str | np.ndarray, n: int) -> np.ndarray:
    if isinstance(initial, np.ndarray):
        return np.asarray(initial)
    if initial in ("up", "0", "zero"):
        return ed.zero_state(n)
    if initial in ("plus", "+"):
        return ed.plus_state(n)
    raise ValueError(f"initial must be 'up', 'plus', a state vector or a density matrix, got {initial!r}")


class ExactTOBC:
    """Exact TOBCs of one block: diagonalize once, evaluate many ``(times, signs, T)``.

    Parameters
    ----------
    model:
        The block (``model.n <= 12``; ``D = 2^n``).
    boundary:
        Boundary operator ``B``: a name (``"Z"``, ``"Sz"``, ``"Sp"`` ...) on ``boundary_site``, a 2x2 array, a
        ``D x D`` array, or a spec like ``"Z3"``. May also be a list (one per nesting level) in
        :meth:`chi` via ``boundaries``.
    observable:
        Target ``O`` (spec as in :func:`parse_operator`), default ``"Z0Z1"``.
    initial:
        ``"up"`` (``|0...0>``), ``"plus"``, a state vector, or a density matrix.
    boundary_site:
        Site of named/2x2 boundary operators, default ``n - 1`` (the site the next one attaches to).
    """

    def __init__(
        self,
        model: ChainModel,
        boundary: OperatorSpec = "Z",
        observable: OperatorSpec = "Z0Z1",
        initial: str | np.ndarray = "up",
        boundary_site: int | None = None,
    ):
        n = model.n
        if n > ed.DENSE_MAX_SITES:
            raise ValueError(f"exact TOBCs are dense: n <= {ed.DENSE_MAX_SITES}")
        self.model = model
        self.n = n
        self.boundary_site = n - 1 if boundary_site is None else int(boundary_site)
        H = ed.dense_hamiltonian(model)
        self.energies, self._W = np.linalg.eigh(H)
        self._Wh = self._W.conj().T
        self._O = self._to_eig(parse_operator(observable, n, self.boundary_site))
        self._B_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._B_default = self._boundary(boundary)
        state = _initial_state(initial, n)
        if state.ndim == 1:
            self._psi = self._Wh @ state
            self._rho = None
        else:
            self._psi = None
            self._rho = self._to_eig(state)

    def _to_eig(self, op: np.ndarray) -> np.ndarray:
        return self._Wh @ op @ self._W

    def _boundary(self, spec: OperatorSpec) -> tuple[np.ndarray, np.ndarray]:
        key = spec if isinstance(spec, str) else None
        if key is not None and key in self._B_cache:
            return self._B_cache[key]
        Be = self._to_eig(parse_operator(spec, self.n, self.boundary_site))
        pair = (Be, Be.conj().T)
        if key is not None:
            self._B_cache[key] = pair
        return pair

    def _phase(self, t: float) -> np.ndarray:
        return np.exp(1j * self.energies * t)

    def _heis_apply(self, Ae: np.ndarray, t: float, V: np.ndarray) -> np.ndarray:
        """``A(t) V`` in the eigenbasis: ``e^{iEt} A e^{-iEt} V`` (V: D x m)."""
        ph = self._phase(t)[:, None]
        return ph * (Ae @ (ph.conj() * V))

    def expectation(self, T: float) -> float:
        """Order 0: ``<O(T)>`` (real part)."""
        return float(np.real(self.chi([], [], T)))

    def chi(
        self,
        times: Sequence[float] | np.ndarray,
        signs: Sequence[int] | np.ndarray,
        T: float,
        boundaries: Sequence[OperatorSpec] | None = None,
    ) -> complex:
        """``Tr[rho ad_{B_k(t_k),c_k} ... ad_{B_1(t_1),c_1}(O(T))]`` with ``k = len(times)``.

        ``times[0]`` is ``t_1`` (innermost). ``boundaries`` optionally gives one boundary operator per level
        (e.g. ``["Sz", "Sp"]`` for XXZ); default: the constructor's ``boundary`` at every level.
        """
        times = np.asarray(times, dtype=float).ravel()
        signs = np.asarray(signs).ravel()
        k = times.size
        if signs.size != k:
            raise ValueError(f"{k} times but {signs.size} signs")
        if k and not np.all(np.isin(signs, (-1, 1))):
            raise ValueError("signs must be +1 or -1")
        if boundaries is None:
            Bs = [self._B_default] * k
        else:
            if len(boundaries) != k:
                raise ValueError("need one boundary operator per level")
            Bs = [self._boundary(b) for b in boundaries]
        # adjoint maps act on rho, outermost level (k) first: rho <- rho A + c A rho
        if self._psi is not None:
            L = self._psi[:, None].astype(complex)
            R = L.copy()
            for j in range(k - 1, -1, -1):
                Be, Bh = Bs[j]
                t, c = float(times[j]), float(signs[j])
                L, R = (
                    np.concatenate([L, c * self._heis_apply(Be, t, L)], axis=1),
                    np.concatenate([self._heis_apply(Bh, t, R), R], axis=1),
                )
            OL = self._heis_apply(self._O, T, L)
            return complex(np.sum(R.conj() * OL))
        sigma = self._rho.astype(complex)
        for j in range(k - 1, -1, -1):
            Be, _ = Bs[j]
            ph = self._phase(float(times[j]))
            A = ph[:, None] * Be * ph.conj()[None, :]
            sigma = sigma @ A + float(signs[j]) * (A @ sigma)
        ph = self._phase(T)
        OT = ph[:, None] * self._O * ph.conj()[None, :]
        return complex(np.trace(sigma @ OT))

    def batch(self, inputs: TOBCInputs, T: float | None = None) -> np.ndarray:
        """chi for every sample of ``inputs`` (``T`` defaults to ``inputs.T``), complex array (n_samples,)."""
        T = inputs.T if T is None else T
        return np.array([self.chi(t, s, T) for _, t, s in inputs], dtype=complex)


def exact_tobc(
    model: ChainModel,
    order: int,
    times: Sequence[float] | np.ndarray,
    signs: Sequence[int] | np.ndarray,
    T: float,
    *,
    boundary: OperatorSpec = "Z",
    observable: OperatorSpec = "Z0Z1",
    initial: str | np.ndarray = "up",
) -> complex:
    """One exact TOBC of order ``order`` (uses ``times[:order]``, ``signs[:order]``; padding ignored).

    Diagonalizes the block on every call: for many samples build :class:`ExactTOBC` once or use
    :func:`exact_tobc_batch`.
    """
    if len(times) < order or len(signs) < order:
        raise ValueError(f"order {order} needs at least {order} times and signs")
    ev = ExactTOBC(model, boundary=boundary, observable=observable, initial=initial)
    return ev.chi(np.asarray(times, dtype=float)[:order], np.asarray(signs)[:order], T)


@dataclass(frozen=True, eq=False)
class TOBCInputs:
    """A reproducible set of TOBC samples (see :func:`sample_tobc_inputs`).

    ``orders[s]`` is the order of sample ``s``; ``times[s, :orders[s]]`` its times (descending,
    ``t_1 >= ... >= t_k``) and ``signs[s, :orders[s]]`` its signs; padding is ``nan`` / ``0``.
    """

    orders: np.ndarray  # (S,) int
    times: np.ndarray  # (S, K) float, nan-padded
    signs: np.ndarray  # (S, K) int8, 0-padded
    T: float
    K: int
    seed: int

    def __len__(self) -> int:
        return int(self.orders.size)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        for s in range(len(self)):
            k = int(self.orders[s])
            yield k, self.times[s, :k], self.signs[s, :k]


def sample_tobc_inputs(
    K: int,
    n_per_order: int,
    T: float,
    seed: int,
    *,
    n_order0: int = 1,
    grid: int | None = None,
) -> TOBCInputs:
    """Draw TOBC samples for orders ``0..K`` with a seeded ``numpy.random.Generator`` (PCG64).

    Order ``k >= 1``: ``n_per_order`` samples, times i.i.d. uniform on ``[0, T]`` (or on the ``grid``-point
    grid ``linspace(0, T, grid)`` when given, times drawn from a grid), sorted descending
    (``T >= t_1 >= ... >= t_k >= 0``, the Dyson ordering), signs uniform in ``{+1, -1}``. Order 0 has no
    times; it is deterministic, so ``n_order0`` (default 1) copies are included.
    """
    if K < 0 or n_per_order < 0 or n_order0 < 0:
        raise ValueError("K, n_per_order and n_order0 must be non-negative")
    rng = np.random.default_rng(seed)
    counts = [n_order0] + [n_per_order] * K
    S = sum(counts)
    orders = np.repeat(np.arange(K + 1), counts)
    times = np.full((S, max(K, 1)), np.nan)
    signs = np.zeros((S, max(K, 1)), dtype=np.int8)
    grid_pts = None if grid is None else np.linspace(0.0, T, int(grid))
    for s, k in enumerate(orders):
        if k == 0:
            continue
        t = rng.uniform(0.0, T, size=k) if grid_pts is None else rng.choice(grid_pts, size=k)
        times[s, :k] = np.sort(t)[::-1]
        signs[s, :k] = rng.choice(np.array([-1, 1], dtype=np.int8), size=k)
    return TOBCInputs(orders=orders, times=times, signs=signs, T=float(T), K=int(K), seed=int(seed))


def exact_tobc_batch(
    model: ChainModel,
    inputs: TOBCInputs,
    *,
    T: float | None = None,
    boundary: OperatorSpec = "Z",
    observable: OperatorSpec = "Z0Z1",
    initial: str | np.ndarray = "up",
) -> np.ndarray:
    """Exact chi for every sample of ``inputs`` (one diagonalization), complex array (n_samples,)."""
    return ExactTOBC(model, boundary=boundary, observable=observable, initial=initial).batch(inputs, T)


def tobc_task(model: str, n_sites: int, couplings: dict[str, float], max_order: int, n_per_order: int, T: float,
              seed: int, grid: int | None = None) -> dict[str, np.ndarray]:
    """Exact TOBC targets of one block: a seeded sample of orders 0..K, times and signs, and chi.

    One (model, n, orders, times) task of a sweep; the arrays are those of :class:`TOBCInputs` plus
    ``chi`` (complex) and ``expectation_T`` = <O(T)> (equal to chi at order 0).
    """
    from olrg_hpc.spins.models import make_model

    m = make_model(model, n_sites, **couplings)
    inputs = sample_tobc_inputs(max_order, n_per_order, T, seed % (2**32), grid=grid)
    ex = ExactTOBC(m)
    return {"orders": inputs.orders, "times": inputs.times, "signs": inputs.signs,
            "chi": ex.batch(inputs, T), "expectation_T": np.asarray(ex.expectation(T))}
