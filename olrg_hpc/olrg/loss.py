"""The OLRG loss on time-ordered boundary correlations (docs/conventions.md section 1, "Loss: TOBCs").

Conventions are those of :mod:`olrg_hpc.spins.tobc` (so exact targets and the learned loss agree):

    chi = Tr[ rho  ad_{B(t_k),c_k} ... ad_{B(t_1),c_1} ( O(T) ) ],   ad_{A,c}(X) = A X + c X A,
    A(t) = e^{iHt} A e^{-iHt}   (Heisenberg picture of the block's own Hamiltonian),

``times[:, 0]`` is ``t_1`` (innermost; Dyson ordering ``T >= t_1 >= ... >= t_k >= 0`` as drawn by
:func:`olrg_hpc.spins.tobc.sample_tobc_inputs`), order 0 is ``<O(T)>``. Evaluated through the adjoint action on
``rho``: ``sigma <- sigma A + c A sigma`` from level ``k`` down to 1, then ``chi = Tr[sigma O(T)]``.

Evolution. One ``eigh`` of the Hermitian block Hamiltonian per scale; chi is computed in its eigenbasis, where
``U(t) = e^{-iHt}`` is diagonal, so evolving an operator is an elementwise phase product and only the adjoint chain
costs matrix products (:func:`_tobc_chi_eig`: the loss gradient takes 1.8-2.2 times less than when every ``U(t)``
is formed, ``benchmarks/bench_olrg.py --formulations``). Its custom JVP is the Daleckii-Krein divided-difference form
(as :func:`expm_herm`'s), so derivatives are finite and exact even for degenerate spectra (plain autodiff through
``eigh`` divides by ``E_i - E_j``).

Loss (docs/conventions.md): ``L = sum_scales sum_k sum_samples w_k |chi_grown - chi_mapped|^2`` (chi is complex:
real for an even number of commutators, imaginary otherwise, so ``|.|^2`` is the square of the non-zero part). At each
scale the grown set ``S_{n+1} = grow(S_n)`` (``2D``) and its compression ``map(S_{n+1})`` (``D``) are compared; the
compressed set is grown at the next scale (end to end: gradients flow through all earlier maps). Weights
``w_k``: ``"one"`` (1), ``"inv_factorial"`` (``1/k!``) or ``"delta"`` (``delta^k / (2^k k!)``). By default every
sample's weight is divided by the number of samples of its order (``normalize=True``: a mean within each order),
which keeps the learning rate independent of the batch size; ``normalize=False`` gives the plain sum.
Exact-target term (optional, ``exact_weight > 0``): for scales with ``n <= exact_max_n`` also
``exact_weight * w_k |chi_exact(n) - chi_mapped|^2`` with ``chi_exact`` from :class:`olrg_hpc.spins.tobc.ExactTOBC`.
One-more-site comparison (``enlarge = 1``, the ``enlarge_by`` of the reference code Roger-luo/teal): both sets are
grown by ``enlarge`` exact sites before chi is taken, ``grow^e(S_{n+1})`` against ``grow^e(map(S_{n+1}))``, so the
boundary operators and ``O(T)`` see the compressed block through exact sites, as the rest of the chain does; the
exact-target term then uses the ``(n + 1 + enlarge)``-site chain. It costs ``2^enlarge`` times larger matrices.
Consistency in environments (optional, ``environments``): at every scale also
``env_weight * sum_E sum_s w_0 |C_{G.E}(T_s) - C_{map(G).E}(T_s)|^2`` over the order-0 samples, where ``G.E`` is the
grown set joined at its open end to an environment block ``E`` (:func:`~olrg_hpc.olrg.relevant.couple`): an exact
chain of ``m`` sites, or ``"latest"``, the block the scale grew from (as infinite-system DMRG pairs a block with its
mirror). The isolated term fixes the block's own TOBCs; the environments fix how the compressed block responds to
sites it has not yet met, which is what growth past the exact blocks needs (experiments/olrg_long). The targets come
from ``G`` and small exact chains only, so no exact answer of a longer chain enters.
Generative maps (OMM): chi is averaged over ``n_noise`` noise realizations of the whole chain of maps before the
difference is squared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from olrg_hpc.jaxsetup import enable_x64
from olrg_hpc.spins.models import ChainModel
from olrg_hpc.spins.tobc import ExactTOBC, sample_tobc_inputs

from .maps import OperatorMap, state_vector
from .relevant import RelevantSet, couple, grow_site, hamiltonian, initial_set, to_jax

enable_x64()

__all__ = [
    "expm_herm",
    "tobc_chi",
    "pure_curve",
    "order_weights",
    "OrderBlock",
    "TOBCBatch",
    "make_batch",
    "Samples",
    "draw_samples",
    "exact_chi",
    "exact_sites",
    "final_time_fractions",
    "LossConfig",
    "olrg_loss",
    "scale_chis",
]


def _phi(z: Any) -> Any:
    """``(e^z - 1)/z`` with the series near 0."""
    small = jnp.abs(z) < 1e-6
    zs = jnp.where(small, 1.0, z)
    return jnp.where(small, 1.0 + z / 2.0 + z * z / 6.0, jnp.expm1(zs) / zs)


@jax.custom_jvp
def expm_herm(H: Any, ts: Any) -> Any:
    """``U(t) = exp(-i H t)`` for Hermitian ``H`` (D x D) and times ``ts`` (shape (m,)): (m, D, D) complex128."""
    E, W = jnp.linalg.eigh(H)
    f = jnp.exp(-1j * ts[:, None] * E[None, :])
    return jnp.einsum("ij,mj,kj->mik", W, f, W.conj())


@expm_herm.defjvp
def _expm_herm_jvp(primals: tuple[Any, Any], tangents: tuple[Any, Any]) -> tuple[Any, Any]:
    H, ts = primals
    dH, dts = tangents
    E, W = jnp.linalg.eigh(H)
    f = jnp.exp(-1j * ts[:, None] * E[None, :])  # (m, D)
    U = jnp.einsum("ij,mj,kj->mik", W, f, W.conj())
    Ht = W.conj().T @ dH @ W
    w = E[:, None] - E[None, :]
    L = f[:, None, :] * (-1j * ts[:, None, None]) * _phi(-1j * w[None] * ts[:, None, None])  # (m, D, D)
    dU = jnp.einsum("ij,mjk,lk->mil", W, Ht[None] * L, W.conj())
    dU = dU + (-1j) * dts[:, None, None] * jnp.einsum("ij,mjk->mik", H, U)
    return U, dU


def _phases(E: Any, t: Any) -> Any:
    """``f = exp(-i E t)``, shape ``t.shape + E.shape``, computed once and stored.

    XLA on CPU fuses an elementwise ``exp`` into every consumer that broadcasts its result, so
    ``conj(f_i) X_ij f_j`` on (m, D, D) recomputed two complex exponentials per element (measured: 5.3 ms against
    0.73 ms for m = 240, D = 32; ``optimization_barrier`` did not stop it). A product with the identity, which is
    exact, is a dot, and XLA does not fuse into dots.
    """
    f = jnp.exp(-1j * t[..., None] * E)
    return f @ jnp.eye(E.shape[0], dtype=f.dtype)


def _divided_differences(E: Any, f: Any, t: Any) -> Any:
    """``L_ij = (f_i - f_j) / (E_i - E_j)`` (``-i t f_i`` on the diagonal): ``dU/dH`` in the eigenbasis
    (Daleckii-Krein).

    Equal to ``f_j (-it) phi(-i (E_i - E_j) t)`` of :func:`expm_herm`'s JVP without an exponential per entry; where
    ``|(E_i - E_j) t| < 1e-3`` the quotient would cancel, and the series of ``phi`` to third order (truncation
    ``< 1e-14``) is used.
    """
    w = E[:, None] - E[None, :]
    tt = t[..., None, None]
    small = jnp.abs(w * tt) < 1e-3
    z = -1j * w * tt
    series = f[..., None, :] * (-1j * tt) * (1.0 + z * (1.0 / 2 + z * (1.0 / 6 + z / 24)))
    inv_w = 1.0 / jnp.where(small, 1.0, w)  # real: no complex division per entry
    return jnp.where(small, series, (f[..., :, None] - f[..., None, :]) * inv_w)


def _evolve_eig(Xt: Any, f: Any) -> Any:
    """``U^dagger X U`` in the eigenbasis of ``H``, where ``U = diag(f)``: ``conj(f_i) X_ij f_j`` (broadcasts)."""
    return f.conj()[..., :, None] * Xt * f[..., None, :]


def _trace_prod(X: Any, Y: Any, n: int) -> Any:
    """``Tr[X_s Y_s]`` for ``s < n``; ``X``, ``Y``: (D, D), (1, D, D) or (n, D, D), broadcast without copies."""
    return jnp.broadcast_to(jnp.sum(X * jnp.swapaxes(Y, -1, -2), axis=(-2, -1)).reshape(-1), (n,))


def _chi_eig_parts(E: Any, W: Any, B: Any, onehot: Any, O: Any, rho: Any, times: Any, signs: Any, Tf: Any,
                   mask: Any) -> dict[str, Any]:
    """The forward pass of :func:`_tobc_chi_eig` with the intermediates its JVP needs (eigenbasis of ``H``)."""
    Wh = W.conj().T
    Bsel, Ot = jnp.einsum("skb,bij->skij", onehot, Wh @ B @ W), Wh @ O @ W  # Bsel: B~ of every (sample, level)
    fA, fT = _phases(E, times), _phases(E, Tf)
    A = _evolve_eig(Bsel, fA)
    OT = _evolve_eig(Ot, fT)  # (1 or nS, D, D)
    sigma = Wh @ rho @ W  # one (D, D) until the first level: its products with A are then single GEMMs
    sigmas = [sigma]
    for j in range(A.shape[1] - 1, -1, -1):
        new = sigma @ A[:, j] + signs[:, j, None, None] * (A[:, j] @ sigma)
        sigma = jnp.where(mask[:, j, None, None], new, sigma)
        sigmas.append(sigma)
    chi = _trace_prod(sigma, OT, times.shape[0])
    return {"A": A, "OT": OT, "sigmas": sigmas, "chi": chi, "Wh": Wh, "Bsel": Bsel, "Ot": Ot, "fA": fA, "fT": fT}


@jax.custom_jvp
def _tobc_chi_eig(H: Any, B: Any, onehot: Any, O: Any, rho: Any, times: Any, signs: Any, Tf: Any,
                  mask: Any) -> Any:
    """chi of :func:`tobc_chi` computed in the eigenbasis of ``H``, where every ``U(t)`` is diagonal.

    Evolving an operator is then an elementwise product (no matrix products), so order 0 costs ``O(D^2)`` per
    sample and order ``k`` only the ``2k`` products of the adjoint chain. ``B``: (nB, D, D) boundary operators,
    ``onehot``: (nS, K, nB) their selection per level, ``Tf``: (1 or nS,) final times, ``mask``: (nS, K) bool.
    """
    E, W = jnp.linalg.eigh(H)
    return _chi_eig_parts(E, W, B, onehot, O, rho, times, signs, Tf, mask)["chi"]


@_tobc_chi_eig.defjvp
def _tobc_chi_eig_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
    """Exact JVP, finite for degenerate spectra (no eigenvector derivative; nothing divides by ``E_i - E_j``).

    A change ``dU`` of ``U(t) = W diag(f) W^dagger`` is, in the eigenbasis, ``Delta = dH~ o L(t)`` (Daleckii-Krein,
    :func:`_divided_differences`) plus ``-i E f dt`` on the diagonal, so
    ``d(U^dagger X U) = Delta^dagger X~ diag(f) + diag(f*) X~ Delta + diag(f*) dX~ diag(f)`` with every operator
    taken into the fixed eigenbasis of the primal ``H``; ``W``'s own derivative never appears because chi does not
    depend on the basis.
    """
    H, B, onehot, O, rho, times, signs, Tf, mask = primals
    dH, dB, _, dO, drho, dtimes, _, dTf, _ = tangents
    E, W = jnp.linalg.eigh(H)
    p = _chi_eig_parts(E, W, B, onehot, O, rho, times, signs, Tf, mask)
    Wh = p["Wh"]
    dHt = Wh @ dH @ W

    def d_evolved(Xt: Any, dXt: Any, t: Any, dt: Any, f: Any) -> Any:
        """Tangent of ``U(t)^dagger X U(t)`` in the eigenbasis; ``t``, ``dt``: (...,), ``Xt``: (..., D, D), ``f``: the
        primal's phases at ``t``."""
        delta = dHt * _divided_differences(E, f, t)
        delta = delta + (-1j * E * f * dt[..., None])[..., None] * jnp.eye(E.shape[0])
        return (jnp.swapaxes(delta.conj(), -1, -2) @ Xt) * f[..., None, :] + f.conj()[..., :, None] * (Xt @ delta) \
            + _evolve_eig(dXt, f)

    dA = d_evolved(p["Bsel"], jnp.einsum("skb,bij->skij", onehot, Wh @ dB @ W), times, dtimes, p["fA"])
    dOT = d_evolved(p["Ot"], Wh @ dO @ W, Tf, dTf, p["fT"])
    A, sigmas = p["A"], p["sigmas"]
    dsigma = Wh @ drho @ W
    for i, j in enumerate(range(A.shape[1] - 1, -1, -1)):
        s, a, da, c = sigmas[i], A[:, j], dA[:, j], signs[:, j, None, None]
        new = dsigma @ a + s @ da + c * (da @ s + a @ dsigma)
        dsigma = jnp.where(mask[:, j, None, None], new, dsigma)
    sigma, OT = sigmas[-1], p["OT"]
    dchi = _trace_prod(dsigma, OT, times.shape[0]) + _trace_prod(sigma, dOT, times.shape[0])
    return p["chi"], dchi


def tobc_chi(S: RelevantSet, times: Any, signs: Any, T: Any, mask: Any = None, bidx: Any = None) -> Any:
    """Batched TOBCs of the block ``S``: complex array (n_samples,).

    ``T``: the final time, a scalar or one per sample (shape (n_samples,)).
    ``times``, ``signs``: (n_samples, K) (``times[:, 0] = t_1``, innermost); ``mask`` (n_samples, K) bool marks the
    levels that exist (padding levels ``mask = False`` are skipped; default all); ``bidx`` (n_samples, K) int picks
    the boundary operator ``S.B[bidx]`` of each level (default 0). Jittable and differentiable (exactly, also for
    degenerate spectra: :func:`_tobc_chi_eig`, which works in the eigenbasis of ``H``).
    """
    S = to_jax(S)
    times = jnp.nan_to_num(jnp.asarray(times, dtype=jnp.float64))
    nS, K = times.shape
    signs = jnp.asarray(signs, dtype=jnp.float64)
    mask = jnp.ones((nS, K), bool) if mask is None else jnp.asarray(mask, bool)
    nB = S.B.shape[0]
    bidx = jnp.zeros((nS, K), jnp.int32) if bidx is None else jnp.asarray(bidx, jnp.int32)
    onehot = jax.nn.one_hot(bidx if nB > 1 else jnp.zeros_like(bidx), nB, dtype=jnp.float64)
    H = hamiltonian(S)
    H = 0.5 * (H + H.conj().T)
    Tarr = jnp.reshape(jnp.asarray(T, jnp.float64), (-1,))
    cdt = jnp.complex128
    return _tobc_chi_eig(H, S.B.astype(cdt), onehot, S.O.astype(cdt), S.rho.astype(cdt), times, signs, Tarr, mask)


@jax.custom_jvp
def _pure_curve_eig(H: Any, O: Any, psi: Any, t: Any) -> Any:
    """``<psi| U(t)^dagger O U(t) |psi>`` for each ``t`` (real, shape (m,)); ``H``, ``O`` Hermitian."""
    E, W = jnp.linalg.eigh(H)
    Wh = W.conj().T
    a = _phases(E, t) * (Wh @ psi)
    return jnp.real(jnp.sum(a.conj() * (a @ (Wh @ O @ W).T), axis=-1))


@_pure_curve_eig.defjvp
def _pure_curve_eig_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
    """Exact JVP in the eigenbasis of ``H`` (Daleckii-Krein, finite for degenerate spectra as in
    :func:`_tobc_chi_eig_jvp`), at ``O(m D^2)`` beyond one ``eigh``: with ``a(t) = f(t) o W^dagger psi``,
    ``da = (dH~ o L(t)) c + f o W^dagger dpsi - i E f c dt`` and ``dchi = 2 Re(a^dagger O~ da) + a^dagger dO~ a``."""
    H, O, psi, t = primals
    dH, dO, dpsi, dt = tangents
    E, W = jnp.linalg.eigh(H)
    Wh = W.conj().T
    c, f = Wh @ psi, _phases(E, t)
    a = f * c
    Oa = a @ (Wh @ O @ W).T  # rows: O~ a(t)
    da = jnp.einsum("ij,tij,j->ti", Wh @ dH @ W, _divided_differences(E, f, t), c) + f * (Wh @ dpsi) \
        + (-1j * E * f * dt[:, None]) * c
    dchi = 2.0 * jnp.real(jnp.sum(Oa.conj() * da, axis=-1)) \
        + jnp.real(jnp.sum(a.conj() * (a @ (Wh @ dO @ W).T), axis=-1))
    return jnp.real(jnp.sum(a.conj() * Oa, axis=-1)), dchi


def pure_curve(S: RelevantSet, times: Any) -> Any:
    """``C(t) = Tr[rho O(t)]`` of a block with a rank-1 state (every block's: the initial one is pure and a
    compression ``V^dagger rho V`` keeps the rank) at ``times`` (shape (m,), real): order 0 of
    :func:`tobc_chi` at ``O(m D^2)`` after one ``eigh`` where :func:`tobc_chi` takes ``O(m D^3)`` (it forms
    ``O(t)``); what the environments' consistency terms evaluate on superblocks of ``2 D^2`` states."""
    S = to_jax(S)
    H = hamiltonian(S)
    cdt = jnp.complex128
    rho = S.rho.astype(cdt)
    psi = state_vector(rho) * jnp.sqrt(jnp.real(jnp.trace(rho)))  # rho = psi psi^dagger (rank 1)
    return _pure_curve_eig((0.5 * (H + H.conj().T)).astype(cdt), S.O.astype(cdt), psi,
                           jnp.asarray(times, jnp.float64))


def _tobc_chi_expm(S: RelevantSet, times: Any, signs: Any, T: Any, mask: Any = None, bidx: Any = None) -> Any:
    """:func:`tobc_chi` written with the evolution matrices ``U(t)`` (:func:`expm_herm`): the plain definition,
    kept as the reference the eigenbasis form is tested and benchmarked against (2-3 times slower)."""
    S = to_jax(S)
    times = jnp.asarray(times, dtype=jnp.float64)
    nS, K = times.shape
    signs = jnp.asarray(signs, dtype=jnp.float64)
    mask = None if mask is None else jnp.asarray(mask, bool)
    bidx = jnp.zeros((nS, K), jnp.int32) if bidx is None else jnp.asarray(bidx, jnp.int32)
    H = hamiltonian(S)
    H = 0.5 * (H + H.conj().T)
    Tarr = jnp.reshape(jnp.asarray(T, jnp.float64), (-1,))
    all_t = jnp.concatenate([jnp.nan_to_num(times).ravel(), Tarr])
    U = expm_herm(H, all_t)
    UT = U[nS * K :]
    Us = U[: nS * K].reshape(nS, K, *H.shape)
    OT = jnp.einsum("tji,jl,tlm->tim", UT.conj(), S.O, UT)  # (1 or nS, D, D)
    nB = S.B.shape[0]
    if nB == 1:
        A = jnp.einsum("skji,jl,sklm->skim", Us.conj(), S.B[0], Us)
    else:  # one-hot selection (no gather: cheaper to differentiate and to compile)
        onehot = jax.nn.one_hot(bidx, nB, dtype=Us.dtype)
        Bsel = jnp.einsum("skb,bjl->skjl", onehot, S.B)
        A = jnp.einsum("skji,skjl,sklm->skim", Us.conj(), Bsel, Us)
    sigma = jnp.broadcast_to(S.rho.astype(jnp.complex128), (nS, *H.shape))
    for j in range(K - 1, -1, -1):
        Aj = A[:, j]
        new = sigma @ Aj + signs[:, j, None, None] * (Aj @ sigma)
        sigma = new if mask is None else jnp.where(mask[:, j, None, None], new, sigma)
    return jnp.einsum("sij,sji->s", sigma, jnp.broadcast_to(OT, sigma.shape))


def order_weights(K: int, kind: str = "inv_factorial", delta: float = 1.0) -> np.ndarray:
    """``w_k`` for ``k = 0..K``: ``"one"``, ``"inv_factorial"`` (``1/k!``) or ``"delta"`` (``delta^k/(2^k k!)``)."""
    ks = np.arange(K + 1)
    fact = np.array([math.factorial(int(k)) for k in ks], dtype=float)
    if kind == "one":
        return np.ones(K + 1)
    if kind == "inv_factorial":
        return 1.0 / fact
    if kind == "delta":
        return float(delta) ** ks / (2.0**ks * fact)
    raise ValueError(f"unknown weight kind {kind!r}; use 'one', 'inv_factorial' or 'delta'")


class OrderBlock(NamedTuple):
    """The samples of one order ``k`` (leading axis = samples; sharded over the "data" mesh axis in training).

    ``weight`` already contains ``w_k`` (and the ``1/n_k`` normalization); padded samples have ``weight = 0``.
    ``exact`` is (n_exact_scales, n) complex: exact chi of the ``n``-site chain for the scales that carry an
    exact-target term (zeros when there is none).
    """

    times: Any  # (n, k) float64: t_1 (innermost) first, Dyson-ordered
    signs: Any  # (n, k) float64
    bidx: Any  # (n, k) int32: boundary operator of each level
    weight: Any  # (n,) float64
    exact: Any  # (n_exact, n) complex128
    Tf: Any  # (n,) float64: final time of each sample


class TOBCBatch(NamedTuple):
    """A batch of TOBC samples: ``blocks[k]`` is the :class:`OrderBlock` of the order-``k`` samples, ``k = 0..K``.

    Grouping by order keeps padding levels out of the arrays: an order-``k`` sample costs ``k`` evolutions and
    ``k`` adjoint steps, not ``K`` (with ``K = 2`` and as many samples per order, one third fewer evolutions and half
    the adjoint steps; a D = 16 training step got 1.4 times faster, a D = 8 one 1.8 times).
    """

    blocks: tuple[OrderBlock, ...]

    @property
    def n_samples(self) -> int:
        """Samples in all blocks (padding included)."""
        return sum(int(np.shape(b.weight)[0]) for b in self.blocks)


@dataclass(frozen=True)
class LossConfig:
    """Static description of one OLRG loss (docs/conventions.md section 1).

    ``n0``: exact initial block (``D = 2^n0``); scales are the blocks ``n = n0+1 .. n_final`` (one compression each).
    ``sample_T`` (our extension, off by default): every sample gets its own final time ``T_s = u T``,
    ``u ~ U(0, 1)``, and its times are scaled to ``[0, T_s]`` (still Dyson-ordered), with ``n_order0``
    order-0 samples. Matching chi at one ``T`` only constrains ``<O(T)>`` at that time; sampling ``T_s``
    trains the map for the whole curve ``C(t)``, ``0 < t <= T`` (what the error curve measures).
    ``n_order0``: order-0 samples with ``sample_T`` (default ``n_per_order``; order 0 is the cheapest sample, one
    evolution of ``O``, and the only one with weight 1 under the ``delta`` weights).
    ``stratify_T`` (default): within each order the ``n`` fractions ``u`` are jittered strata, one uniform draw in
    each of ``[i/n, (i+1)/n)`` in random order, so no gap between the final times of one order exceeds ``2T/n``
    (i.i.d. draws leave gaps of several ``T/n``, and the learned curve's error peaks in them).
    ``enlarge``: exact sites added to both sets before chi is compared (module docstring; 0 or 1 in practice).
    ``consistency``: how the consistency term of a scale without exact targets (``n > exact_max_n``, the growth past
    the exact blocks) is differentiated. ``"joint"``: end to end, into every earlier map. ``"local"``: the grown set
    ``G_s`` is a fixed input, so the term trains only the map of scale ``s`` to compress faithfully what it
    receives. Jointly, the maps past the exact blocks can lower the loss by passing on a block whose dynamics is
    simpler (a consistent but wrong fixed point: at ``D = 16``, exact targets to 6 sites and consistency to 10,
    the jointly trained chain's ``C(t)`` was off by 0.25 already at ``t <= 1``); locally they cannot. Scales with
    exact targets are always trained end to end.
    ``environments``: the consistency term is also taken with the block joined to each of these (module
    docstring): an int ``m`` is the exact ``m``-site chain (1 to 6), ``"latest"`` the block the scale grew from;
    ``env_weight`` multiplies that term. Under ``"local"`` the environment blocks are fixed inputs too.
    """

    model: ChainModel
    n0: int = 3
    n_final: int = 10
    T: float = 1.0
    K: int = 2
    n_per_order: int = 20
    weights: str = "inv_factorial"
    delta: float = 1.0
    normalize: bool = True
    exact_weight: float = 0.0
    exact_max_n: int = 10
    observable: str = "Z0Z1"
    grid: int | None = None
    sample_T: bool = False
    stratify_T: bool = True
    n_order0: int | None = None
    enlarge: int = 0
    consistency: str = "joint"
    environments: tuple[int | str, ...] = ()
    env_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.consistency not in ("joint", "local"):
            raise ValueError(f"consistency must be 'joint' or 'local', got {self.consistency!r}")
        for e in self.environments:
            if e != "latest" and not (isinstance(e, int) and 1 <= e <= 6):
                raise ValueError(f"environments: {e!r} is neither 'latest' nor an exact block of 1 to 6 sites")

    @property
    def n_scales(self) -> int:
        return self.n_final - self.n0

    @property
    def dim(self) -> int:
        return 2**self.n0

    @property
    def exact_scales(self) -> list[int]:
        """Scale indices ``s`` (block ``n = n0 + 1 + s``) with an exact-target term."""
        if self.exact_weight <= 0:
            return []
        return [s for s in range(self.n_scales) if self.n0 + 1 + s + self.enlarge <= min(self.exact_max_n, 12)]


def final_time_fractions(orders: np.ndarray, seed: int, stratify: bool = True) -> np.ndarray:
    """Fractions ``u`` in ``(0, 1)`` of the final times ``T_s = u T`` (:class:`LossConfig` ``sample_T``): uniform,
    stratified within each order when ``stratify`` (one draw per ``[i/n, (i+1)/n)``, strata in random order)."""
    u = np.random.default_rng([seed, 11]).uniform(0.0, 1.0, len(orders))
    if not stratify:
        return u
    rng = np.random.default_rng([seed, 13])
    for k in np.unique(orders):
        idx = np.flatnonzero(orders == k)
        u[idx] = (rng.permutation(len(idx)) + u[idx]) / len(idx)
    return u


class Samples(NamedTuple):
    """The TOBC samples of one batch, flat (one row per sample, padding levels zero): what :func:`make_batch` groups
    by order and what :func:`exact_chi` evaluates on an exact chain."""

    orders: np.ndarray  # (nS,) int
    times: np.ndarray  # (nS, K) float64
    signs: np.ndarray  # (nS, K) float64
    bidx: np.ndarray  # (nS, K) int32
    Tf: np.ndarray  # (nS,) float64
    weight: np.ndarray  # (nS,) float64


def draw_samples(cfg: LossConfig, seed: int) -> Samples:
    """Draw the samples of a batch with :func:`sample_tobc_inputs` (seeded): a function of ``seed`` and the sampling
    fields of ``cfg`` (``K``, ``n_per_order``, ``n_order0``, ``T``, ``grid``, ``sample_T``, ``stratify_T``, the weights
    and the number of boundary operators) only, not of the block sizes, so one draw serves every ``D``."""
    n0 = (cfg.n_per_order if cfg.n_order0 is None else cfg.n_order0) if cfg.sample_T else 1
    inp = sample_tobc_inputs(cfg.K, cfg.n_per_order, cfg.T, seed, grid=cfg.grid, n_order0=n0)
    nS = len(inp)
    Kd = inp.times.shape[1]
    u = final_time_fractions(inp.orders, seed, cfg.stratify_T) if cfg.sample_T else np.ones(nS)
    w = order_weights(cfg.K, cfg.weights, cfg.delta)
    counts = np.bincount(inp.orders, minlength=cfg.K + 1)
    weight = w[inp.orders] / (counts[inp.orders] if cfg.normalize else 1.0)
    mask = np.arange(Kd)[None, :] < inp.orders[:, None]
    nb = len(cfg.model.boundary_ops())
    rng = np.random.default_rng([seed, 7])
    bidx = rng.integers(0, nb, size=(nS, Kd)).astype(np.int32) * mask
    times = np.where(mask, np.nan_to_num(inp.times) * u[:, None], 0.0)
    signs = np.where(mask, inp.signs, 0).astype(float)
    return Samples(inp.orders, times, signs, bidx, cfg.T * u, weight)


def exact_chi(cfg: LossConfig, samples: Samples, n_sites: int) -> np.ndarray:
    """Exact chi of every sample on the ``n_sites``-site chain of ``cfg.model`` (:class:`ExactTOBC`, dense: at most 12
    sites), complex (nS,): the targets of the exact-target term for the block of ``n_sites - cfg.enlarge`` sites."""
    bnames = cfg.model.boundary_ops()
    ev = ExactTOBC(cfg.model.with_n(n_sites), boundary=bnames[0], observable=cfg.observable)
    out = np.empty(len(samples.orders), complex)
    for j, k in enumerate(samples.orders):
        out[j] = ev.chi(samples.times[j, :k], samples.signs[j, :k], samples.Tf[j],
                        boundaries=[bnames[b] for b in samples.bidx[j, :k]])
    return out


def exact_sites(cfg: LossConfig) -> list[int]:
    """Chain lengths whose exact chi the exact-target term needs, one per :attr:`LossConfig.exact_scales`."""
    return [cfg.n0 + 1 + s + cfg.enlarge for s in cfg.exact_scales]


def make_batch(cfg: LossConfig, seed: int, pad_to: int = 1,
               exact: dict[int, np.ndarray] | None = None) -> TOBCBatch:
    """The samples of :func:`draw_samples` grouped into one block per order, with their exact targets.

    Each order's block is padded with zero-weight samples to a multiple of ``pad_to`` (the device count).
    Boundary indices are uniform over the model's boundary operators (always 0 for the Ising chains).
    ``exact``: chain length -> :func:`exact_chi` of these samples, computed elsewhere (e.g. as separate tasks);
    lengths it lacks are computed here.
    """
    smp = draw_samples(cfg, seed)
    orders, times, signs, bidx, Tf, weight = smp
    nS = len(orders)
    exact_in = exact or {}
    rows = []
    for n in exact_sites(cfg):
        row = exact_in[n] if n in exact_in else exact_chi(cfg, smp, n)
        if np.shape(row) != (nS,):
            raise ValueError(f"exact targets of the {n}-site chain have shape {np.shape(row)}, the batch {nS} samples")
        rows.append(np.asarray(row, complex))
    exact_arr = np.stack(rows) if rows else np.zeros((0, nS), complex)
    blocks = []
    for k in range(cfg.K + 1):
        idx = np.flatnonzero(orders == k)
        pad = (-len(idx)) % max(1, pad_to)
        blocks.append(OrderBlock(
            times=np.concatenate([times[idx, :k], np.zeros((pad, k))]),
            signs=np.concatenate([signs[idx, :k], np.zeros((pad, k))]),
            bidx=np.concatenate([bidx[idx, :k], np.zeros((pad, k), np.int32)]),
            weight=np.concatenate([weight[idx], np.zeros(pad)]),
            exact=np.concatenate([exact_arr[:, idx], np.zeros((exact_arr.shape[0], pad), complex)], axis=1),
            Tf=np.concatenate([Tf[idx], np.full(pad, cfg.T)]),
        ))
    return TOBCBatch(tuple(blocks))


def scale_chis(
    params: Any,
    omap: OperatorMap,
    cfg: LossConfig,
    batch: TOBCBatch,
    key: Any,
    S0: RelevantSet | None = None,
    scan: bool = True,
) -> tuple[Any, Any]:
    """chi of the grown and of the mapped set at every scale for one noise key.

    Two tuples with one (n_scales, n_k) array per block of ``batch`` (order ``k``, :class:`TOBCBatch`), then one
    (n_scales, n_0) array of order-0 chis per environment (``cfg.environments``).

    Compressing maps run the scales in a ``lax.scan`` (``scan=True``; the scale index is then traced, and the
    static ``RelevantSet.n`` inside the body is that of the initial block); the identity map uses a Python loop.
    """
    S = initial_set(cfg.model, cfg.n0, cfg.observable) if S0 is None else S0
    keys = jax.random.split(key, cfg.n_scales)
    n_exact = len(cfg.exact_scales)
    exact_envs = {m: to_jax(initial_set(cfg.model, m, "Z0")) for m in cfg.environments if m != "latest"}
    b0 = batch.blocks[0]

    def one_scale(S: RelevantSet, s: Any, k: Any) -> tuple[RelevantSet, Any, Any]:
        if cfg.consistency == "local":  # past the exact scales the input is fixed (LossConfig.consistency)
            S = jax.tree_util.tree_map(lambda a: jnp.where(s >= n_exact, jax.lax.stop_gradient(a), a), S)
        G = grow_site(S, cfg.model)
        Sm = omap(params, G, s, k, dim_keep=cfg.dim if omap.compresses else None)
        Ge, Sme = G, Sm
        for _ in range(cfg.enlarge):
            Ge, Sme = grow_site(Ge, cfg.model), grow_site(Sme, cfg.model)
        cg = tuple(tobc_chi(Ge, b.times, b.signs, b.Tf, None, b.bidx) for b in batch.blocks)
        cm = tuple(tobc_chi(Sme, b.times, b.signs, b.Tf, None, b.bidx) for b in batch.blocks)
        for E in (S if e == "latest" else exact_envs[e] for e in cfg.environments):  # C(T_s) joined to E
            cg += (pure_curve(couple(G, E, cfg.model), b0.Tf),)
            cm += (pure_curve(couple(Sm, E, cfg.model), b0.Tf),)
        return Sm, cg, cm

    if not omap.compresses or not scan or cfg.n_scales < 2:
        cg, cm = [], []
        for s in range(cfg.n_scales):
            S, a, b = one_scale(S, s, keys[s])
            cg.append(a)
            cm.append(b)
        return tuple(map(jnp.stack, zip(*cg, strict=True))), tuple(map(jnp.stack, zip(*cm, strict=True)))
    # compressing maps keep D fixed: one lax.scan over the scales (one compiled body; short compile times)
    S = to_jax(S)

    def body(S: RelevantSet, xs: tuple[Any, Any]) -> tuple[RelevantSet, tuple[tuple[Any, ...], tuple[Any, ...]]]:
        Sm, a, b = one_scale(S, xs[0], xs[1])
        return Sm.replace(n=S.n), (a, b)

    _, (cg, cm) = jax.lax.scan(body, S, (jnp.arange(cfg.n_scales), keys))
    return cg, cm


def olrg_loss(
    params: Any, omap: OperatorMap, cfg: LossConfig, batch: TOBCBatch, key: Any = None, S0: RelevantSet | None = None
) -> Any:
    """The OLRG loss (module docstring): a float64 scalar, differentiable in ``params``."""
    key = jax.random.PRNGKey(0) if key is None else key
    nn_ = max(1, int(omap.n_noise))
    cgs, cms = jax.vmap(lambda k: scale_chis(params, omap, cfg, batch, k, S0))(jax.random.split(key, nn_))
    exact_idx = jnp.asarray(cfg.exact_scales, jnp.int32)
    loss = jnp.zeros((), jnp.float64)
    nb = len(batch.blocks)
    for i, (cg, cm) in enumerate(zip(cgs, cms, strict=True)):
        b = batch.blocks[i if i < nb else 0]  # past the orders: the environments, on the order-0 samples
        cg, cm = cg.mean(0), cm.mean(0)
        w = jnp.asarray(b.weight)[None, :]
        loss = loss + (1.0 if i < nb else cfg.env_weight) * jnp.sum(w * jnp.abs(cg - cm) ** 2)
        if i < nb and cfg.exact_scales:
            loss = loss + cfg.exact_weight * jnp.sum(w * jnp.abs(jnp.asarray(b.exact) - cm[exact_idx]) ** 2)
    return loss
