"""Open spin-1/2 chains with explicit conventions (docs/spin-chains.md, "Conventions").

Conventions used everywhere in :mod:`olrg_hpc.spins`
----------------------------------------------------
* Pauli matrices ``X, Y, Z`` in the basis ``|0> = (1, 0)``, ``|1> = (0, 1)`` with ``Z|0> = +|0>``
  (so ``|0...0>`` is "all up", all ``Z = +1``).
* Spin operators ``S^a = sigma^a / 2``; ``S^+ = |0><1| = [[0, 1], [0, 0]]``, ``S^- = (S^+)^dagger``.
* Sites are numbered ``0 .. n-1`` in code (the OLRG paper's ``Z_1 Z_2`` is sites ``(0, 1)``); open
  boundary conditions; site 0 is the most significant factor of Kronecker products (``kron(A_0, A_1, ...)``).

Models (all couplings uniform; the registry :data:`MODELS`, one :class:`ModelKind` per model)
-----------------------------------------------------------------------------------------
* ``tfim``: ``H = J sum_{i<n-1} Z_i Z_{i+1} + h sum_i X_i`` (the OLRG paper's sign, J = +1).
* ``mixed_field_ising``: the TFIM plus ``g sum_i Z_i`` (non-integrable for ``g != 0, h != 0``).
* ``xxz``: spin-operator convention
  ``H = J sum_i (S^x_i S^x_{i+1} + S^y_i S^y_{i+1} + delta S^z_i S^z_{i+1}) + hz sum_i S^z_i``
  ``  = J sum_i [delta S^z S^z + (S^+ S^- + S^- S^+)/2] + hz sum_i S^z_i``.
  ``delta = 1`` is the Heisenberg chain (:func:`heisenberg`). Boundary operators are ``S^z`` and ``S^+``:
  the coupling of a block to a new site is ``C_z (x) S^z + (C_+ (x) S^- + h.c.)/2`` with
  ``C_z = J delta S^z_last`` and ``C_+ = J S^+_last``.

Adding a model is one :class:`ModelKind` entry in :data:`MODELS`: its couplings with defaults, its site and bond
terms by operator name, its boundary operators and its exact route. Exact diagonalization, exact TOBCs, TEBD,
the quench tasks and the sweep workflows read it from there.

Block growth interface (docs/olrg.md)
------------------------------------
OLRG grows an n-site block by one site as
``H_{n+1} = H_n (x) I_2 + sum_k c_k B^k_n (x) E^k + I_D (x) h_site``.
Every :class:`ChainModel` exposes the pieces: :meth:`ChainModel.site_term` is ``h_site`` (2x2, coefficients
included), :meth:`ChainModel.bond_terms` is the list of ``(c_k, B^k, E^k)`` (2x2 matrices; ``B^k`` acts on the
last site of the block, ``E^k`` on the new site), :meth:`ChainModel.boundary_ops` names the operators the
block must carry (``B^k`` is always one of them or the adjoint of one of them).

Conversions to other codes (tested numerically in ``tests/spins/test_models.py``)
-------------------------------------------------------------------------------
* TeNPy ``TFIChain``: ``H_T = -J_T sum sigma^x sigma^x - g_T sum sigma^z`` (Pauli matrices, docstring of
  ``tenpy.models.tf_ising.TFIModel``). With the Hadamard ``W = H^{(x) n}`` (``W X W = Z``, ``W Z W = X``),
  ``W H_ours W = J sum X X + h sum Z`` = ``H_T`` with ``J_T = -J, g_T = -h``. Our ``|0...0>`` becomes
  TeNPy's all-``sigma^x = +1`` state, and our ``Z_i Z_{i+1}`` becomes ``Sigmax_i Sigmax_{i+1}``.
* quimb ``MPO_ham_ising(n, j, bx)``: ``H_q = j sum S^z S^z - bx sum S^x`` with spin operators
  ``S = sigma/2`` (quimb ``_ham_ising``: ``H += j, 'Z', 'Z'; H -= bx, 'X'``; docstring "spin operators not
  Pauli matrices"), same basis as ours. Hence ``j = 4 J`` and ``bx = -2 h``; no basis change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "I2",
    "X",
    "Y",
    "Z",
    "SZ",
    "SP",
    "SM",
    "OPERATORS",
    "ModelKind",
    "MODELS",
    "ModelName",
    "ChainModel",
    "tfim",
    "mixed_field_ising",
    "xxz",
    "heisenberg",
    "make_model",
    "MODEL_NAMES",
    "to_tenpy_tfi",
    "from_tenpy_tfi",
    "to_quimb_ising",
    "from_quimb_ising",
    "hadamard_chain",
]

I2 = np.eye(2)
X = np.array([[0.0, 1.0], [1.0, 0.0]])
Y = np.array([[0.0, -1.0j], [1.0j, 0.0]])
Z = np.array([[1.0, 0.0], [0.0, -1.0]])
SZ = 0.5 * Z
SP = np.array([[0.0, 1.0], [0.0, 0.0]])  # S^+ = |0><1| = (X + iY)/2
SM = SP.T.copy()  # S^- = (S^+)^dagger
HADAMARD = np.array([[1.0, 1.0], [1.0, -1.0]]) / np.sqrt(2.0)

#: Named single-site operators (read-only arrays) used by bond terms and boundary operators.
OPERATORS: dict[str, np.ndarray] = {
    "I": I2,
    "X": X,
    "Y": Y,
    "Z": Z,
    "Sx": 0.5 * X,
    "Sy": 0.5 * Y,
    "Sz": SZ,
    "Sp": SP,
    "Sm": SM,
}
for _op in (*OPERATORS.values(), HADAMARD):
    _op.setflags(write=False)

BondTerm = tuple[float, np.ndarray, np.ndarray]
Term = tuple[complex, tuple[tuple[int, np.ndarray], ...]]
NamedSite = list[tuple[float, str]]
NamedBond = list[tuple[float, str, str]]


@dataclass(frozen=True)
class ModelKind:
    """Everything the package knows about one spin model, in one place (the registry :data:`MODELS`).

    ``couplings``: the coupling names with their defaults, in the order of positional arguments;
    ``site_terms(p)``: the on-site term as ``(coefficient, operator name)`` pairs; ``bond_terms(p)``: the bond
    ``(i, i+1)`` as ``(coefficient, left operator, right operator)`` triples (names in :data:`OPERATORS`, ``p`` the
    couplings as a dict); ``boundary``: the operators a block must carry for OLRG's site growth (every left bond
    operator is one of them or the adjoint of one); ``free_fermion``: whether the exact reference at any length is
    :mod:`olrg_hpc.spins.freefermion`'s TFIM solution (otherwise exact diagonalization); ``aliases``: other names,
    each with the couplings it fixes (``heisenberg`` is the XXZ chain at ``delta = 1``).

    Calling a kind builds a :class:`ChainModel`: ``MODELS["tfim"](8, 1.0, 0.5) == tfim(8, J=1.0, h=0.5)``.
    Exact diagonalization (:mod:`olrg_hpc.spins.ed`), exact TOBCs, TEBD (:mod:`olrg_hpc.spins.tebd`), the OLRG
    block growth and the sweep workflows read a model through these fields only.
    """

    name: str
    description: str
    couplings: tuple[tuple[str, float], ...]
    site_terms: Callable[[dict[str, float]], NamedSite]
    bond_terms: Callable[[dict[str, float]], NamedBond]
    boundary: tuple[str, ...]
    free_fermion: bool = False
    aliases: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @property
    def coupling_names(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.couplings)

    def __call__(self, n: int, *values: float, **couplings: float) -> ChainModel:
        """The chain of ``n`` sites with these couplings (positional in the order of :attr:`couplings`, the rest at
        their defaults); an unknown coupling raises ``TypeError``, as a function's unknown keyword does."""
        names = self.coupling_names
        if len(values) > len(names):
            raise TypeError(f"{self.name} takes {len(names)} couplings ({', '.join(names)}), got {len(values)}")
        given = dict(zip(names, values, strict=False))
        for k, v in couplings.items():
            if k not in names:
                raise TypeError(f"{self.name} has no coupling {k!r} (couplings: {', '.join(names)})")
            if k in given:
                raise TypeError(f"{self.name}: coupling {k!r} given twice")
            given[k] = v
        return ChainModel(self.name, n, _couplings(**{**dict(self.couplings), **given}))


@dataclass(frozen=True)
class ChainModel:
    """An open, uniform spin-1/2 chain (conventions in the module docstring).

    Attributes
    ----------
    name:
        A key of :data:`MODELS`.
    n:
        Number of sites.
    couplings:
        ``(name, value)`` pairs, sorted by name (a tuple so that the model is hashable and picklable);
        :attr:`params` returns them as a dict.
    """

    name: str
    n: int
    couplings: tuple[tuple[str, float], ...]

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ValueError(f"unknown model {self.name!r}; known: {sorted(MODELS)}")
        if int(self.n) != self.n or self.n < 1:
            raise ValueError(f"n must be a positive integer, got {self.n!r}")

    @property
    def kind(self) -> ModelKind:
        """What the package knows about this model (:data:`MODELS`)."""
        return MODELS[self.name]

    @property
    def params(self) -> dict[str, float]:
        """The couplings as a new dict, e.g. ``{"J": 1.0, "h": 1.0}``."""
        return dict(self.couplings)

    def __getitem__(self, key: str) -> float:
        return self.params[key]

    def site_terms_named(self) -> NamedSite:
        """The on-site term as ``(coefficient, operator name)`` pairs (names in OPERATORS)."""
        return self.kind.site_terms(self.params)

    def site_term(self) -> np.ndarray:
        """The on-site term ``h_site`` (2x2, coefficients included), e.g. ``h X`` for the TFIM."""
        out = np.zeros((2, 2))
        for c, op in self.site_terms_named():
            out = out + c * OPERATORS[op]
        return out

    def bond_terms_named(self) -> NamedBond:
        """Bond terms as ``(coefficient, left operator name, right operator name)`` (names in OPERATORS)."""
        return self.kind.bond_terms(self.params)

    def bond_terms(self) -> list[BondTerm]:
        """Bond terms ``(c_k, B^k, E^k)``: the bond ``(i, i+1)`` contributes ``sum_k c_k B^k_i E^k_{i+1}``."""
        return [(c, OPERATORS[a], OPERATORS[b]) for c, a, b in self.bond_terms_named()]

    def boundary_ops(self) -> tuple[str, ...]:
        """Names of the boundary operators a block must carry (``("Z",)`` or ``("Sz", "Sp")``).

        Every left operator of :meth:`bond_terms` is one of these or the adjoint of one of these
        (``Sm = Sp^dagger``).
        """
        return self.kind.boundary

    def operator(self, name: str) -> np.ndarray:
        """The 2x2 matrix of a named single-site operator (see ``OPERATORS``)."""
        return OPERATORS[name]

    def terms(self) -> list[Term]:
        """All terms of the n-site Hamiltonian as ``(coef, ((site, op2x2), ...))`` (for ED builders)."""
        out: list[Term] = []
        hs = self.site_term()
        if np.any(hs != 0):
            out.extend((1.0, ((i, hs),)) for i in range(self.n))
        for c, a, b in self.bond_terms():
            if c != 0:
                out.extend((c, ((i, a), (i + 1, b))) for i in range(self.n - 1))
        return out

    def with_n(self, n: int) -> ChainModel:
        """The same model on ``n`` sites."""
        return ChainModel(self.name, n, self.couplings)


def _couplings(**kw: float) -> tuple[tuple[str, float], ...]:
    return tuple(sorted((k, float(v)) for k, v in kw.items()))


def _ising_site(p: dict[str, float]) -> NamedSite:
    return [(p["h"], "X"), *([(p["g"], "Z")] if "g" in p else [])]


def _ising_bonds(p: dict[str, float]) -> NamedBond:
    return [(p["J"], "Z", "Z")]


def _xxz_site(p: dict[str, float]) -> NamedSite:
    return [(p["hz"], "Sz")]


def _xxz_bonds(p: dict[str, float]) -> NamedBond:
    J, delta = p["J"], p["delta"]
    return [(J * delta, "Sz", "Sz"), (0.5 * J, "Sp", "Sm"), (0.5 * J, "Sm", "Sp")]


#: every spin model, by name: adding a model is one entry here
MODELS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("tfim", "transverse-field Ising chain H = J sum Z_i Z_{i+1} + h sum X_i (the OLRG paper's sign)",
              (("J", 1.0), ("h", 1.0)), _ising_site, _ising_bonds, ("Z",), free_fermion=True,
              aliases={"ising": {}, "tfi": {}}),
    ModelKind("mixed_field_ising", "mixed-field Ising chain H = J sum Z_i Z_{i+1} + h sum X_i + g sum Z_i "
              "(non-integrable for g != 0, h != 0)", (("J", 1.0), ("h", 1.0), ("g", 0.5)), _ising_site,
              _ising_bonds, ("Z",), aliases={"mfi": {}, "mixed": {}}),
    ModelKind("xxz", "XXZ chain H = J sum (S^x S^x + S^y S^y + delta S^z S^z) + hz sum S^z (spin operators)",
              (("J", 1.0), ("delta", 1.0), ("hz", 0.0)), _xxz_site, _xxz_bonds, ("Sz", "Sp"),
              aliases={"heisenberg": {"delta": 1.0}}),
)}

#: the model names a config may give (a ``Literal`` of the registry's keys, for pydantic)
ModelName = Literal[tuple(MODELS)]  # type: ignore[valid-type]

#: Transverse-field Ising chain ``H = J sum_{i<n-1} Z_i Z_{i+1} + h sum_i X_i``: ``tfim(n, J=1.0, h=1.0)``.
tfim = MODELS["tfim"]
#: Mixed-field Ising chain ``H = J sum Z_i Z_{i+1} + h sum X_i + g sum Z_i``: ``mixed_field_ising(n, J, h, g=0.5)``.
mixed_field_ising = MODELS["mixed_field_ising"]
#: XXZ chain, spin operators: ``xxz(n, J=1.0, delta=1.0, hz=0.0)``.
xxz = MODELS["xxz"]


def heisenberg(n: int, J: float = 1.0, hz: float = 0.0) -> ChainModel:
    """Heisenberg chain ``H = J sum S_i . S_{i+1} + hz sum S^z`` (the XXZ chain at ``delta = 1``)."""
    return xxz(n, J=J, delta=1.0, hz=hz)


def _lookup(name: str) -> tuple[ModelKind, Mapping[str, float]]:
    key = name.lower().replace("-", "_")
    if key in MODELS:
        return MODELS[key], {}
    for k in MODELS.values():
        if key in k.aliases:
            return k, k.aliases[key]
    raise ValueError(f"unknown model {name!r}; known: {MODEL_NAMES}")


#: Names accepted by :func:`make_model` (aliases included).
MODEL_NAMES: tuple[str, ...] = tuple(sorted([*MODELS, *(a for k in MODELS.values() for a in k.aliases)]))


def make_model(name: str, n: int, **couplings: float) -> ChainModel:
    """Build a model by name or alias (``tfim``, ``mixed_field_ising``/``mfi``, ``xxz``, ``heisenberg``, ...).

    Unknown coupling names (or one an alias fixes) raise ``TypeError``, unknown model names ``ValueError``.
    """
    kind, fixed = _lookup(name)
    clash = sorted(set(fixed) & set(couplings))
    if clash:
        raise TypeError(f"{name} fixes {', '.join(clash)}")
    return kind(n, **couplings, **fixed)


# --------------------------------------------------------------------------- conversions


def to_tenpy_tfi(J: float, h: float) -> dict[str, float]:
    """TeNPy ``TFIChain`` parameters for our ``J ZZ + h X`` chain: ``{"J": -J, "g": -h}``.

    Exact unitary equivalence ``hadamard_chain(n) H_ours hadamard_chain(n) = H_TeNPy`` (module docstring).
    """
    return {"J": -float(J), "g": -float(h)}


def from_tenpy_tfi(J: float, g: float) -> dict[str, float]:
    """Inverse of :func:`to_tenpy_tfi`: TeNPy ``(J, g)`` -> our ``{"J": -J, "h": -g}``."""
    return {"J": -float(J), "h": -float(g)}


def to_quimb_ising(J: float, h: float) -> dict[str, float]:
    """quimb ``MPO_ham_ising`` parameters (spin operators, ``j SzSz - bx Sx``): ``{"j": 4J, "bx": -2h}``."""
    return {"j": 4.0 * float(J), "bx": -2.0 * float(h)}


def from_quimb_ising(j: float, bx: float) -> dict[str, float]:
    """Inverse of :func:`to_quimb_ising`: quimb ``(j, bx)`` -> our ``{"J": j/4, "h": -bx/2}``."""
    return {"J": float(j) / 4.0, "h": -float(bx) / 2.0}


def hadamard_chain(n: int) -> np.ndarray:
    """Dense ``H^{(x) n}`` (Hadamard on every site), the basis change to TeNPy's TFIChain. n <= 12."""
    if n > 12:
        raise ValueError("hadamard_chain is dense; n <= 12")
    out = np.ones((1, 1))
    for _ in range(n):
        out = np.kron(out, HADAMARD)
    return out
