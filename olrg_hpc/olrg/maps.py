"""Operator maps: compress a grown relevant set (``2D x 2D``) back to ``D x D`` (docs/conventions.md "Operator maps").

One interface (:class:`OperatorMap`)::

    params = m.init(key, dim_grown, dim_keep, n_scales)      # pytree ({} for maps without parameters)
    S_small = m(params, S_grown, scale, key)                  # RelevantSet, D x D

``scale`` is the index of the compression step (0 for the first map after the exact initial block); maps with
per-scale parameters reuse the last trained scale beyond their range (so a map trained on ``n = 4..10`` can be
applied up to any ``N``). ``key`` feeds the noise of generative maps and is ignored by the others.

Linear maps use ONE isometry ``V`` (``2D x D``, ``V^dagger V = I_D``) for every operator:
``X -> V^dagger X V`` for every Hamiltonian term, every boundary operator, ``O`` and ``rho``.

* :class:`IdentityMap`: no compression (``V = I``; ``D`` grows). Exact.
* :class:`NRGMap`: ``V`` = the ``D`` lowest eigenvectors of ``H_{n+1}`` (Wilson's NRG). Keeps the lowest ``D``
  eigenvalues of ``H`` exactly.
* :class:`DMRGMap`: ``V`` = the ``D`` dominant eigenvectors of a block density matrix. For the quench we use the
  *time-averaged* density matrix of the grown block evolved by its own Hamiltonian,
  ``rho_avg = (1/T) int_0^T dt e^{-iH t} rho_{n+1} e^{iH t}``, computed exactly in the eigenbasis of ``H``:
  ``(rho_avg)_{mn} = rho_{mn} (e^{-i w T} - 1)/(-i w T)``, ``w = E_m - E_n`` (entry ``rho_{mn}`` for ``w = 0``).
  ``mode="ground"`` uses the ground state of the grown block instead (a rank-1 density matrix padded by the
  next eigenvectors of ``H``: the DMRG ground-state choice without environment). There is no superblock /
  environment: this is the cheap "DMRG-style" baseline of docs/conventions.md, stated here as the choice we made.
* :class:`LinearIsometryMap`: learned ``V = Q`` of the QR decomposition of an unconstrained ``2D x D`` matrix
  ``M`` (real, or complex with ``complex_=True``), sign-fixed so that ``diag(R) > 0`` (then ``V`` is a smooth
  function of ``M``, and ``M = V`` for any isometry ``V`` reproduces it). Parameters per scale (``shared=False``)
  or one shared matrix. :meth:`LinearIsometryMap.init` can warm-start from NRG/DMRG isometries. Beyond the
  trained scales, ``beyond="reuse"`` (default) applies the last trained ``V`` again; ``beyond="decouple"`` drops
  the new site instead (:func:`decouple`: normalized partial trace over it, so the block and everything it
  already holds stay unchanged and the sites beyond are cut off). Per-scale isometries act on a basis that
  changes from scale to scale, so reusing one is only sensible for a shared map (measured: a map trained to
  10 sites and reused to 16 has relative error 0.4 at t = 0.1). Decoupling is exact while the light cone of
  the observable's times has not reached the last trained site (TFIM at h = J = 1: exact ``C(t)`` of 14 and
  64 sites agree to 2e-9 on ``t <= 4``, of 16 and 64 sites to 2e-13), so a map learned to ``n`` sites then
  gives the ``N``-site chain for every ``N > n``. Projecting the new site onto ``|0>`` instead (``V = I_D (x)
  |0>``) leaves the field ``J B_n`` on the block and failed (relative error 0.55 for the map trained to 10).
  ``keep_state=True``: the first column of ``M`` is replaced by the block's (pure) state ``|psi_n> (x) |0>``,
  so ``V`` keeps it exactly: ``Tr rho = 1`` and ``<O>(t = 0)`` are exact at every scale (the plain learned
  isometry lost 0.5% of ``rho``, the largest error of ``C(t)`` at short times in the paper benchmark).
* :class:`OperatorMatrixMap` (OMM, the paper's main ansatz): ``X -> V(X)^dagger X V(X)`` where an MLP maps the
  flattened operator (real and imaginary parts) plus Gaussian noise to a ``2D x D`` matrix whose sign-fixed QR
  factor is ``V(X)``. ``V`` is computed per operator *family*: ``V(H)`` from the total ``H_{n+1}`` is applied to
  every Hamiltonian term (so ``sum_a c_a V^dag T_a V = V^dag H V`` and the term bookkeeping stays valid),
  ``V(B_k)`` to ``B_k``, ``V(O)`` to ``O`` and ``V(rho)`` to ``rho``. The map is generative: expectations are
  averaged over ``n_noise`` noise samples by the callers (:mod:`olrg_hpc.olrg.loss`,
  :mod:`olrg_hpc.olrg.evaluate`). Reference hyperparameters (teal README): depth 8, 5 noise samples.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from olrg_hpc.jaxsetup import enable_x64

from .relevant import RelevantSet, hamiltonian, xp_of

enable_x64()

__all__ = [
    "OperatorMap",
    "IdentityMap",
    "NRGMap",
    "DMRGMap",
    "LinearIsometryMap",
    "OperatorMatrixMap",
    "compress",
    "decouple",
    "qr_isometry",
    "time_averaged_rho",
    "make_map",
]


def compress(S: RelevantSet, V: Any) -> RelevantSet:
    """``X -> V^dagger X V`` for every operator of ``S`` (``V``: ``2D x D``)."""
    V = V.astype(complex)
    Vh = V.conj().T
    return S.replace(H_terms=Vh @ S.H_terms @ V, B=Vh @ S.B @ V, O=Vh @ S.O @ V, rho=Vh @ S.rho @ V)


def decouple(S: RelevantSet) -> RelevantSet:
    """Drop the last site of a grown set: ``X -> Tr_site(X) / 2`` (``H`` terms, ``B``, ``O``), ``rho -> Tr_site(rho)``.

    For ``S = grow_site(S0)`` this returns ``S0`` except ``B = 0`` (Pauli site operators are traceless), so later
    sites no longer couple to the block: the chain is cut after ``S0``.
    """
    xp = xp_of(S.H_terms, S.B, S.O, S.rho)
    D = S.dim // 2

    def tr(X: Any) -> Any:
        return xp.einsum("...iaja->...ij", X.reshape(*X.shape[:-2], D, 2, D, 2))

    return S.replace(H_terms=tr(S.H_terms) / 2, B=tr(S.B) / 2, O=tr(S.O) / 2, rho=tr(S.rho))


def _decoupled_from(n: int, scale: Any, mapped: RelevantSet, S: RelevantSet) -> RelevantSet:
    """``mapped`` at scales ``< n``, :func:`decouple` ``(S)`` from scale ``n`` on (``scale`` may be traced)."""
    return jax.tree_util.tree_map(lambda a, b: jnp.where(scale >= n, b.astype(a.dtype), a), mapped, decouple(S))


def state_vector(rho: Any) -> Any:
    """Unit ``v`` with ``rho = Tr(rho) |v><v|`` for a rank-1 ``rho``: its largest-diagonal column, normalized."""
    j = jnp.argmax(jnp.real(jnp.diagonal(jax.lax.stop_gradient(rho))))
    col = rho[:, j]
    return col / jnp.linalg.norm(col)


def qr_isometry(M: Any) -> Any:
    """Sign-fixed ``Q`` of ``M = Q R`` (reduced): ``diag(R) > 0``, so ``qr_isometry(V) = V`` for isometries."""
    Q, R = jnp.linalg.qr(M, mode="reduced")
    d = jnp.diagonal(R)
    if jnp.iscomplexobj(M):
        ph = d / jnp.where(jnp.abs(d) > 0, jnp.abs(d), 1.0)
        ph = jnp.where(jnp.abs(d) > 0, ph, 1.0)
        return Q * ph[None, :]
    return Q * jnp.where(d < 0, -1.0, 1.0)[None, :]


def time_averaged_rho(H: Any, rho: Any, T: float) -> Any:
    """``(1/T) int_0^T e^{-iHt} rho e^{iHt} dt`` exactly (eigenbasis of Hermitian ``H``); ``rho`` for ``T = 0``."""
    xp = xp_of(H, rho)
    if T == 0:
        return rho
    E, W = xp.linalg.eigh(H)
    r = W.conj().T @ rho @ W
    x = (E[:, None] - E[None, :]) * T
    small = xp.abs(x) < 1e-8
    xs = xp.where(small, 1.0, x)
    f = xp.where(small, 1.0 - 0.5j * x, (xp.exp(-1j * xs) - 1.0) / (-1j * xs))
    return W @ (r * f) @ W.conj().T


def _greedy_orthonormal(cand: Any, k: int, tol: float = 1e-6) -> Any:
    """Gram-Schmidt over the columns of ``cand`` in order, skipping (near-)dependent ones, keeping ``k``."""
    dim = cand.shape[0]
    if xp_of(cand) is np:
        cols: list[np.ndarray] = []
        for j in range(cand.shape[1]):
            r = cand[:, j].astype(complex)
            for _ in range(2):
                for q in cols:
                    r = r - q * np.vdot(q, r)
            nr = np.linalg.norm(r)
            if nr > tol:
                cols.append(r / nr)
            if len(cols) == k:
                break
        return np.stack(cols, axis=1)
    Q = jnp.zeros((dim, k), dtype=jnp.complex128)
    cnt = jnp.asarray(0)
    for j in range(cand.shape[1]):
        r = cand[:, j].astype(jnp.complex128)
        for _ in range(2):
            r = r - Q @ (Q.conj().T @ r)
        nr = jnp.linalg.norm(r)
        add = (nr > tol) & (cnt < k)
        col = r / jnp.where(add, nr, 1.0)
        Q = jnp.where(add, jax.lax.dynamic_update_slice(Q, col[:, None], (0, jnp.minimum(cnt, k - 1))), Q)
        cnt = cnt + add.astype(cnt.dtype)
    return Q


class OperatorMap:
    """Base class: a map ``(params, grown set, scale, key) -> compressed set`` (module docstring)."""

    #: number of noise samples to average expectations over (1 for deterministic maps)
    n_noise: int = 1
    #: whether ``D`` is kept (False only for the identity map)
    compresses: bool = True

    def init(self, key: Any, dim_grown: int, dim_keep: int, n_scales: int) -> Any:
        """Parameters (a pytree; ``{}`` for maps without parameters)."""
        return {}

    def isometry(self, params: Any, S: RelevantSet, scale: int, key: Any, dim_keep: int) -> Any:
        """The isometry ``V`` (``2D x D``) of a linear map."""
        raise NotImplementedError

    def decoupled_after(self, params: Any) -> int | None:
        """The scale from which on the map drops every new site (:func:`decouple`); ``None``: it never does."""
        return None

    def __call__(self, params: Any, S: RelevantSet, scale: int, key: Any = None, dim_keep: int | None = None) -> Any:
        """Compress ``S`` (``2D``) to ``dim_keep`` (default ``D = dim(S) // 2``)."""
        D = S.dim // 2 if dim_keep is None else dim_keep
        return compress(S, self.isometry(params, S, scale, key, D))


class IdentityMap(OperatorMap):
    """No compression: returns the grown set unchanged (exact, ``D`` doubles every step)."""

    compresses = False

    def __call__(self, params: Any, S: RelevantSet, scale: int, key: Any = None, dim_keep: int | None = None) -> Any:
        return S

    def isometry(self, params: Any, S: RelevantSet, scale: int, key: Any, dim_keep: int) -> Any:
        return xp_of(S.O).eye(S.dim, dtype=complex)


def _sg(x: Any) -> Any:
    return jax.lax.stop_gradient(x) if isinstance(x, jax.Array) else x


class NRGMap(OperatorMap):
    """Wilson's NRG: ``V`` = the ``D`` lowest eigenvectors of ``H_{n+1}`` (no gradient flows through ``V``)."""

    def isometry(self, params: Any, S: RelevantSet, scale: int, key: Any, dim_keep: int) -> Any:
        H = _sg(hamiltonian(S))
        if xp_of(H) is np and not np.any(np.imag(H)):
            H = np.real(H)  # real eigenvectors for real H (usable as a warm start of a real linear map)
        _, W = xp_of(H).linalg.eigh(H)
        return W[:, :dim_keep]


class DMRGMap(OperatorMap):
    """DMRG-style truncation to the dominant eigenvectors of a block density matrix (module docstring).

    ``mode="time_averaged"`` (default): time average over ``[0, T]`` of the grown block's own evolution of
    ``rho_{n+1}``; ``mode="ground"``: ground state of ``H_{n+1}``. Eigenvectors of (numerically) zero weight are
    filled with the lowest remaining eigenvectors of ``H`` projected off the kept space, so ``V`` is always a
    full-rank isometry. Hence ``mode="ground"`` (rank-1 density matrix, no environment) keeps exactly the space
    of :class:`NRGMap`, the ``D`` lowest eigenvectors of ``H_{n+1}`` (tested to 1e-8 in the projector).
    """

    def __init__(self, T: float = 1.0, mode: str = "time_averaged"):
        if mode not in ("time_averaged", "ground"):
            raise ValueError("mode must be 'time_averaged' or 'ground'")
        self.T = float(T)
        self.mode = mode

    def density_matrix(self, S: RelevantSet) -> Any:
        """The block density matrix whose dominant eigenvectors are kept."""
        H = _sg(hamiltonian(S))
        if self.mode == "ground":
            _, W = xp_of(H).linalg.eigh(H)
            g = W[:, :1]
            return g @ g.conj().T
        return time_averaged_rho(H, _sg(S.rho), self.T)

    def isometry(self, params: Any, S: RelevantSet, scale: int, key: Any, dim_keep: int) -> Any:
        rho = self.density_matrix(S)
        xp = xp_of(rho)
        rho = 0.5 * (rho + rho.conj().T)
        p, U = xp.linalg.eigh(rho)
        p, U = p[::-1], U[:, ::-1]
        # complete the (possibly rank-deficient) dominant space with low-energy states of H
        H = _sg(hamiltonian(S))
        _, W = xp.linalg.eigh(H)
        keep = p[:dim_keep] > 1e-12 * xp.maximum(p[0], 1e-300)
        cand = xp.concatenate([U[:, :dim_keep] * keep[None, :], W], axis=1)
        return _greedy_orthonormal(cand, dim_keep)


class LinearIsometryMap(OperatorMap):
    """Learned linear isometry ``V = qr_isometry(M)`` per scale (``shared=False``) or shared (module docstring)."""

    def __init__(
        self,
        shared: bool = False,
        complex_: bool = False,
        init_scale: float = 0.1,
        beyond: str = "reuse",
        keep_state: bool = False,
    ):
        if beyond not in ("reuse", "decouple"):
            raise ValueError("beyond must be 'reuse' or 'decouple'")
        self.keep_state = bool(keep_state)
        self.shared = bool(shared)
        self.complex_ = bool(complex_)
        self.init_scale = float(init_scale)
        self.beyond = beyond

    def init(self, key: Any, dim_grown: int, dim_keep: int, n_scales: int, warm: Sequence[Any] | None = None) -> Any:
        """``{"M": (n, 2D, D)}`` (``n = 1`` if shared), plus ``"Mi"`` (imaginary part) when complex.

        Default: ``[I_D; 0] + init_scale * N(0, 1)``. ``warm``: one isometry per scale (e.g. NRG's) to start from;
        complex ones need ``complex_=True`` (a real map would keep only their real part: ``ValueError``).
        """
        n = 1 if self.shared else n_scales
        # numpy generator seeded from the key: no eager JAX ops (each would compile a kernel)
        seed = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
        rng = np.random.default_rng(seed.astype(np.uint32).ravel().tolist())
        base = np.zeros((dim_grown, dim_keep))
        base[:dim_keep, :dim_keep] = np.eye(dim_keep)
        M = base[None] + self.init_scale * rng.standard_normal((n, dim_grown, dim_keep))
        Mi = self.init_scale * rng.standard_normal((n, dim_grown, dim_keep))
        if warm is not None:
            W = np.stack([np.asarray(w) for w in warm])[:n]
            if not self.complex_ and np.max(np.abs(np.imag(W)), initial=0.0) > 1e-12:
                # the real part of a complex isometry is another subspace: refuse rather than start elsewhere
                raise ValueError("warm isometries are complex (e.g. the time-averaged DMRG map's): "
                                 "use LinearIsometryMap(complex_=True)")
            M, Mi = np.real(W).copy(), np.imag(W).copy()
        M, Mi = jnp.asarray(M), jnp.asarray(Mi)
        return {"M": M, "Mi": Mi} if self.complex_ else {"M": M}

    def isometry(self, params: Any, S: RelevantSet, scale: int, key: Any, dim_keep: int) -> Any:
        n = params["M"].shape[0]
        s = jnp.minimum(scale, n - 1)
        M = params["M"][s]
        if self.complex_:
            M = M + 1j * params["Mi"][s]
        if self.keep_state:  # first column = the block's state: V keeps it exactly (Tr rho and C(0) preserved)
            v = state_vector(jnp.asarray(S.rho))
            v = v if self.complex_ else jnp.real(v)  # real maps of real models: rho stays real
            M = jnp.concatenate([v[:, None].astype(M.dtype), M[:, 1:]], axis=1)
        return qr_isometry(M)

    def decoupled_after(self, params: Any) -> int | None:
        """The number of trained scales with ``beyond="decouple"`` (per-scale maps only)."""
        return params["M"].shape[0] if self.beyond == "decouple" and not self.shared else None

    def __call__(self, params: Any, S: RelevantSet, scale: int, key: Any = None, dim_keep: int | None = None) -> Any:
        D = S.dim // 2 if dim_keep is None else dim_keep
        out = compress(S, self.isometry(params, S, scale, key, D))
        cut = self.decoupled_after(params)
        if cut is not None and D == S.dim // 2:
            out = _decoupled_from(cut, scale, out, S)
        return out


class _MLP(nn.Module):
    width: int
    depth: int
    out: int

    @nn.compact
    def __call__(self, x: Any) -> Any:
        for _ in range(self.depth - 1):
            x = nn.gelu(nn.Dense(self.width, param_dtype=jnp.float64)(x))
        return nn.Dense(self.out, param_dtype=jnp.float64, kernel_init=nn.initializers.zeros)(x)


class OperatorMatrixMap(OperatorMap):
    """Neural Operator Matrix Map (OMM): ``X -> V(X)^dagger X V(X)``, ``V(X) = qr_isometry(M0 + MLP([X, noise]))``.

    ``M0`` is ``[I_D; 0]``, and the last layer starts at zero, so the initial map is the plain truncation to the
    first ``D`` basis states (plus the effect of nothing else); training moves it. Parameters are shared across
    scales. ``noise_dim`` Gaussian inputs (std ``noise_std``) make the map generative; ``n_noise`` samples are
    averaged by the callers. The parameters do not know how many scales were trained: with
    ``decouple_after = k`` every scale ``>= k`` drops its new site (:func:`decouple`, as
    ``LinearIsometryMap(beyond="decouple")``), otherwise the shared map is applied at every scale.
    """

    def __init__(
        self,
        width: int = 64,
        depth: int = 8,
        noise_dim: int = 4,
        noise_std: float = 1.0,
        n_noise: int = 5,
        complex_: bool = False,
        decouple_after: int | None = None,
    ):
        if decouple_after is not None and decouple_after < 1:
            raise ValueError(f"decouple_after must be >= 1 (got {decouple_after})")
        self.decouple_after = decouple_after
        self.width, self.depth = int(width), int(depth)
        self.noise_dim, self.noise_std = int(noise_dim), float(noise_std)
        self.n_noise = int(n_noise)
        self.complex_ = bool(complex_)
        self._dims: tuple[int, int] | None = None

    def _net(self, dim_grown: int, dim_keep: int) -> _MLP:
        out = dim_grown * dim_keep * (2 if self.complex_ else 1)
        return _MLP(width=self.width, depth=self.depth, out=out)

    def init(self, key: Any, dim_grown: int, dim_keep: int, n_scales: int) -> Any:
        x = jnp.zeros((2 * dim_grown * dim_grown + self.noise_dim,))
        return jax.jit(self._net(dim_grown, dim_keep).init)(key, x)

    def matrix_isometry(self, params: Any, X: Any, key: Any, dim_keep: int) -> Any:
        """``V(X)`` for one operator ``X`` (``2D x 2D``)."""
        dg = X.shape[-1]
        noise = self.noise_std * jax.random.normal(key, (self.noise_dim,)) if self.noise_dim else jnp.zeros((0,))
        x = jnp.concatenate([jnp.real(X).ravel(), jnp.imag(X).ravel(), noise])
        y = self._net(dg, dim_keep).apply(params, x)
        base = jnp.zeros((dg, dim_keep)).at[:dim_keep, :dim_keep].set(jnp.eye(dim_keep))
        M = base + y[: dg * dim_keep].reshape(dg, dim_keep)
        if self.complex_:
            M = M + 1j * y[dg * dim_keep :].reshape(dg, dim_keep)
        return qr_isometry(M)

    def __call__(self, params: Any, S: RelevantSet, scale: int, key: Any = None, dim_keep: int | None = None) -> Any:
        D = S.dim // 2 if dim_keep is None else dim_keep
        key = jax.random.PRNGKey(0) if key is None else key
        kH, kB, kO, kR = jax.random.split(key, 4)

        def c(X: Any, V: Any) -> Any:
            V = V.astype(jnp.complex128)
            return V.conj().T @ X @ V

        VH = self.matrix_isometry(params, hamiltonian(S), kH, D)
        kBs = jax.random.split(kB, S.B.shape[0])
        B = jnp.stack([c(S.B[k], self.matrix_isometry(params, S.B[k], kBs[k], D)) for k in range(S.B.shape[0])])
        out = S.replace(
            H_terms=jax.vmap(lambda X: c(X, VH))(S.H_terms),
            B=B,
            O=c(S.O, self.matrix_isometry(params, S.O, kO, D)),
            rho=c(S.rho, self.matrix_isometry(params, S.rho, kR, D)),
        )
        if self.decouple_after is not None and D == S.dim // 2:
            out = _decoupled_from(self.decouple_after, scale, out, S)
        return out

    def decoupled_after(self, params: Any) -> int | None:
        return self.decouple_after


def make_map(name: str, **kw: Any) -> OperatorMap:
    """Map by name: ``identity``, ``nrg``, ``dmrg``, ``linear``, ``omm``; an option the map's class does not take is
    refused with the options it does take (``ValueError``)."""
    table = {
        "identity": IdentityMap,
        "nrg": NRGMap,
        "dmrg": DMRGMap,
        "linear": LinearIsometryMap,
        "omm": OperatorMatrixMap,
    }
    if name not in table:
        raise ValueError(f"unknown map {name!r}; known: {sorted(table)}")
    cls = table[name]
    accepted = list(inspect.signature(cls).parameters)
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown}; {cls.__name__} takes {accepted}")
    return cls(**kw)
