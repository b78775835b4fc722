"""Relevant-operator sets and site growth (docs/conventions.md section 1, "Relevant operators and site growth").

A block of ``n`` sites is represented by ``S_n = {H_n, B_n, O_n, rho_n}``, every member a dense ``D x D``
complex128 JAX array (:class:`RelevantSet`):

* ``H_terms[a]`` (shape ``(n_terms, D, D)``) and ``H_coefs[a]``: the block Hamiltonian is
  ``H_n = sum_a H_coefs[a] H_terms[a]``. The terms are kept separately (docs/conventions.md: "keep its terms separately
  so that coefficients may depend on time or on h"). Each term is the *unit* sum over the block of one
  operator type: every bond term ``(c_k, L_k, R_k)`` of :meth:`ChainModel.bond_terms` gives
  ``sum_i L_k,i R_k,i+1`` with coefficient ``c_k``; the on-site term ``h_site`` of :meth:`ChainModel.site_term`
  is decomposed in the Pauli basis ``h_site = sum_P a_P P`` (``P in {X, Y, Z}``, non-zero ``a_P`` only) and gives
  ``sum_i P_i`` with coefficient ``a_P``. The identity part of ``h_site`` (if any) is a term ``sum_i I``.
* ``B[k]`` (shape ``(n_boundary, D, D)``): the boundary operators of :meth:`ChainModel.boundary_ops` on the
  last site (``Z`` for the Ising chains; ``S^z`` and ``S^+`` for XXZ). A bond whose left operator is the adjoint of
  a boundary operator (``S^-`` for XXZ) uses ``B[k]^dagger``.
* ``O``: target observable, ``Z_0 Z_1`` (docs/conventions.md's ``Z_1 Z_2``; sites are 0-based as in
  :mod:`olrg_hpc.spins.models`).
* ``rho``: initial density matrix ``|0...0><0...0|``.

Kronecker convention as in :mod:`olrg_hpc.spins.models`: the block is the most significant factor, the new site
the least significant one, so growth is ``X_{n+1} = X_n (x) I_2`` etc. and grown operators agree entry by entry
with :func:`olrg_hpc.spins.ed.dense_hamiltonian` when nothing is compressed.

Growth (docs/conventions.md, generalized to several bond types):
``H_{n+1} = H_n (x) I + sum_k c_k B^k_n (x) E^k + I_D (x) h_site``, ``B_{n+1} = I_D (x) B_site``,
``O_{n+1} = O_n (x) I``, ``rho_{n+1} = rho_n (x) |0><0|``.
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from olrg_hpc.jaxsetup import enable_x64
from olrg_hpc.spins.models import OPERATORS, ChainModel, X, Y, Z

enable_x64()

__all__ = [
    "RelevantSet",
    "term_specs",
    "initial_set",
    "grow_site",
    "grow_exact",
    "couple",
    "hamiltonian",
    "xp_of",
    "to_jax",
]

_PAULI = {"X": X, "Y": Y, "Z": Z}
_KET0 = np.array([[1.0, 0.0], [0.0, 0.0]])


@flax.struct.dataclass
class RelevantSet:
    """The relevant operators of a block (all ``D x D`` complex128). A JAX pytree; ``n`` is static.

    ``hamiltonian(S) = sum_a H_coefs[a] H_terms[a]``.
    """

    H_terms: Any  # (n_terms, D, D)
    H_coefs: Any  # (n_terms,) float64
    B: Any  # (n_boundary, D, D)
    O: Any  # (D, D)
    rho: Any  # (D, D)
    n: int = flax.struct.field(pytree_node=False, default=0)

    @property
    def dim(self) -> int:
        """Kept dimension ``D``."""
        return int(self.O.shape[-1])

    @property
    def H(self) -> Any:
        """The block Hamiltonian ``sum_a H_coefs[a] H_terms[a]``."""
        return hamiltonian(self)


def term_specs(model: ChainModel) -> list[tuple[float, str, Any, np.ndarray]]:
    """Term decomposition of ``model`` (module docstring): ``[(coef, kind, left, right2x2), ...]``.

    ``kind == "bond"``: ``left = (boundary index, adjoint flag)``, ``right`` the operator ``E`` on the new site;
    ``kind == "site"``: ``left = None``, ``right`` the Pauli (or identity) operator on the new site.
    """
    bnames = model.boundary_ops()
    specs: list[tuple[float, str, Any, np.ndarray]] = []
    for c, a, b in model.bond_terms_named():
        if a in bnames:
            left = (bnames.index(a), False)
        else:
            adj = [k for k, nm in enumerate(bnames) if np.allclose(OPERATORS[nm].conj().T, OPERATORS[a])]
            if not adj:
                raise ValueError(f"bond operator {a!r} is neither a boundary operator nor an adjoint of one")
            left = (adj[0], True)
        specs.append((float(c), "bond", left, np.asarray(OPERATORS[b], dtype=complex)))
    hs = np.asarray(model.site_term(), dtype=complex)
    a_id = np.trace(hs) / 2.0
    if abs(a_id) > 0:
        specs.append((float(np.real(a_id)), "site", None, np.eye(2, dtype=complex)))
    for P in _PAULI.values():
        a = np.trace(P.conj().T @ hs) / 2.0
        if abs(a) > 0:
            if abs(np.imag(a)) > 1e-14:
                raise ValueError("site term is not Hermitian")
            specs.append((float(np.real(a)), "site", None, np.asarray(P, dtype=complex)))
    return specs


def xp_of(*arrays: Any) -> Any:
    """``jax.numpy`` if any argument is a JAX array or tracer, else ``numpy`` (fast eager path for fixed maps)."""
    return jnp if any(isinstance(a, jax.Array) for a in arrays) else np


def hamiltonian(S: RelevantSet) -> Any:
    """``H = sum_a H_coefs[a] H_terms[a]`` (D x D)."""
    xp = xp_of(S.H_coefs, S.H_terms)
    return xp.einsum("a,aij->ij", S.H_coefs.astype(S.H_terms.dtype), S.H_terms)


def initial_set(model: ChainModel, n0: int, observable: str = "Z0Z1") -> RelevantSet:
    """Exact relevant set of the first ``n0`` sites (``D = 2^n0``; ``n0 >= 2`` for ``Z0Z1``).

    Built by growing from one site without compression, so the term bookkeeping is that of :func:`grow_site`.
    """
    if n0 < 1:
        raise ValueError("n0 must be >= 1")
    specs = term_specs(model)
    bnames = model.boundary_ops()
    terms = [np.asarray(r, dtype=complex) if kind == "site" else np.zeros((2, 2), complex) for _, kind, _, r in specs]
    S = RelevantSet(
        H_terms=np.stack(terms),
        H_coefs=np.asarray([c for c, *_ in specs], dtype=np.float64),
        B=np.stack([np.asarray(OPERATORS[b], dtype=complex) for b in bnames]),
        O=np.eye(2, dtype=complex),
        rho=np.asarray(_KET0, dtype=complex),
        n=1,
    )
    # the observable: product of site operators; sites >= n are attached during growth
    from olrg_hpc.spins.tobc import _TOKEN

    tokens = [(nm, int(s)) for nm, s in _TOKEN.findall(observable)]
    if not tokens:
        raise ValueError(f"cannot parse observable {observable!r}")
    site_ops = {s: np.asarray(OPERATORS[nm], dtype=complex) for nm, s in tokens}
    if max(site_ops) >= n0:
        raise ValueError(f"observable {observable!r} must fit in the first n0 = {n0} sites")
    S = S.replace(O=np.asarray(site_ops.get(0, np.eye(2)), dtype=complex))
    for s in range(1, n0):
        S = grow_site(S, model, new_site_op=site_ops.get(s))
    return S


def grow_site(S: RelevantSet, model: ChainModel, new_site_op: np.ndarray | None = None) -> RelevantSet:
    """Add one site: ``D -> 2D`` (docs/conventions.md growth rules; module docstring).

    Works on numpy arrays (fast eager path) and on JAX arrays/tracers (result in the same array library).

    ``new_site_op`` (2x2) is the factor of the observable on the new site (default identity:
    ``O_{n+1} = O_n (x) I``). Pure ``jax.numpy``: differentiable and jittable (``model`` is static).
    """
    xp = xp_of(S.H_terms, S.B, S.O, S.rho, S.H_coefs)
    D = S.dim
    dt = S.H_terms.dtype
    eye_d = xp.eye(D, dtype=dt)
    eye2 = xp.eye(2, dtype=dt)
    specs = term_specs(model)
    if len(specs) != S.H_terms.shape[0]:
        raise ValueError("relevant set does not match the model's term decomposition")
    new_terms = []
    for a, (_, kind, left, right) in enumerate(specs):
        grown = xp.kron(S.H_terms[a], eye2)
        if kind == "bond":
            k, adj = left
            Bk = S.B[k].conj().T if adj else S.B[k]
            grown = grown + xp.kron(Bk, xp.asarray(right, dtype=dt))
        else:
            grown = grown + xp.kron(eye_d, xp.asarray(right, dtype=dt))
        new_terms.append(grown)
    bsite = [xp.asarray(OPERATORS[b], dtype=dt) for b in model.boundary_ops()]
    op_new = eye2 if new_site_op is None else xp.asarray(new_site_op, dtype=dt)
    return RelevantSet(
        H_terms=xp.stack(new_terms),
        H_coefs=S.H_coefs,
        B=xp.stack([xp.kron(eye_d, b) for b in bsite]),
        O=xp.kron(S.O, op_new),
        rho=xp.kron(S.rho, xp.asarray(_KET0, dtype=dt)),
        n=S.n + 1,
    )


def grow_exact(model: ChainModel, n: int, n0: int = 2) -> RelevantSet:
    """The uncompressed ``n``-site set (``D = 2^n``): :func:`initial_set` then :func:`grow_site` (testing aid)."""
    S = initial_set(model, n0)
    for _ in range(n - n0):
        S = grow_site(S, model)
    return S


def couple(S: RelevantSet, E: RelevantSet, model: ChainModel) -> RelevantSet:
    """The superblock of ``S`` and the environment block ``E`` joined at their last sites (``E`` mirrored).

    ``H = H_S (x) I + I (x) H_E + sum_k c_k B^k_S (x) E^k_E``, where ``E^k_E`` is the bond's right operator on ``E``'s
    last site (one of ``E.B`` or its adjoint); ``O = O_S (x) I``, ``rho = rho_S (x) rho_E``; one Hamiltonian term and
    no boundary operator (``B = 0``): the superblock is closed. Mirroring ``E`` is exact for chains whose bonds are
    symmetric under reflection (the Ising chains). Kronecker order ``S (x) E``. Works on numpy and JAX arrays,
    differentiable in both blocks.
    """
    xp = xp_of(S.H_terms, S.B, S.O, S.rho, E.H_terms, E.B, E.rho)
    dt = S.H_terms.dtype
    ds, de = S.dim, E.dim
    bnames = model.boundary_ops()
    H = xp.kron(hamiltonian(S), xp.eye(de, dtype=dt)) + xp.kron(xp.eye(ds, dtype=dt), hamiltonian(E))
    for c, kind, left, right in term_specs(model):
        if kind != "bond":
            continue
        k, adj = left
        Bs = S.B[k].conj().T if adj else S.B[k]
        match = [(j, False) for j, nm in enumerate(bnames) if np.allclose(OPERATORS[nm], right)]
        match += [(j, True) for j, nm in enumerate(bnames) if np.allclose(OPERATORS[nm].conj().T, right)]
        if not match:
            raise ValueError("a bond's right operator is neither a boundary operator nor an adjoint of one")
        j, adj_e = match[0]
        H = H + c * xp.kron(Bs, E.B[j].conj().T if adj_e else E.B[j])
    d = ds * de
    return RelevantSet(H_terms=H[None], H_coefs=xp.ones(1, dtype=S.H_coefs.dtype), B=xp.zeros((1, d, d), dtype=dt),
                       O=xp.kron(S.O, xp.eye(de, dtype=dt)), rho=xp.kron(S.rho, E.rho), n=S.n + E.n)


def to_jax(S: RelevantSet) -> RelevantSet:
    """The same set with every member a JAX array."""
    return jax.tree_util.tree_map(jnp.asarray, S)
