"""Domain-decomposed HMC for 2D phi^4 with numpy + mpi4py (science.md section 2, "HMC baseline").

Launch::

    mpiexec -n 4 python -m olrg_hpc.lattice.mpi_hmc --L 16 --beta 0.634 --lam 0.5 --n-traj 100 \\
        --seed 1 --out run.h5 [--checkpoint ckpt.h5 --checkpoint-every 10 --restart]

or call :func:`run_mpi_hmc` with a parameter dict and a communicator.

Design
------
* **Action.** Any of the three conventions of :mod:`olrg_hpc.lattice.phi4` is accepted (``m2``/``lam``:
  tutorial; ``beta``/``lam``: Albandea beta/lambda; ``kappa``/``lam``: hopping). The simulation always
  runs in the *tutorial* field variable ``phi`` with ``S = sum_x [-2 sum_mu phi_x phi_{x+mu} + (4 + m2)
  phi_x^2 + lam phi_x^4]`` (conversion formulas as in ``phi4``: ``m2 = 2 (1 - 2 lam_bl)/beta - 4``,
  ``lam = 4 lam_bl / beta^2``); the field in the requested convention is ``field_scale * phi``
  (``field_scale = sqrt(2/beta)`` or ``1/sqrt(kappa)``; 1 for tutorial). Unit-mass momenta in ``phi``,
  so trajectories coincide with :mod:`olrg_hpc.lattice.hmc` on the equivalent ``Phi4Action``.
* **Decomposition.** ``MPI.Compute_dims(size, 2)`` and a periodic ``Create_cart`` (``reorder=False``).
  Global array layout ``phi[y, x]`` (axis 0 split over ``dims[0]``, axis 1 over ``dims[1]``; the
  extents must be divisible). Each rank holds its ``(ly + 2, lx + 2)`` block with a halo of width 1,
  refreshed by ``Sendrecv`` of boundary rows and then boundary columns before every force evaluation.
* **Integrators.** Leapfrog and Omelyan 2MN, with the same operation order as ``hmc.py``.
* **Reductions.** One ``Allreduce`` per trajectory of the local ``dH`` (sum of per-site differences) and
  of the action, ``sum phi`` and ``sum phi^2`` of old and new fields; rank 0's result is broadcast so all
  ranks take the identical accept/reject decision.
* **Random numbers (decomposition independent).** Counter-based Philox-4x64 (numpy): the momentum of
  global row ``y`` at trajectory ``k`` is ``Generator(Philox(key=seed, counter=[0, y, k, 1]))
  .standard_normal(Lx)``; each rank generates only its own rows and slices its columns. The Metropolis
  uniform of trajectory ``k`` comes from ``counter=[0, 0, k, 2]``; a hot start from ``counter=[0, y, 0,
  0]``. Hence 1, 2, 4 ranks produce the same chain (to the rounding of the global sums, ~1e-13).
* **Checkpoint / restart.** Rank 0 gathers the global field and writes an HDF5 checkpoint atomically
  (:func:`olrg_hpc.store.write_shard`: temporary sibling + fsync + ``os.replace``) with the field
  (float64, bit-exact), the number of completed trajectories and the Philox key (together the whole RNG
  state: the generator is a pure function of ``(seed, trajectory, row)``), the physics identity, the
  run config, the process grid, provenance attributes (host, time, package version, git commit, library
  versions) and all histories (:func:`write_checkpoint`). ``n_traj`` is the *total* target; a restarted
  run (any number of ranks) continues from the checkpoint to ``n_traj``, bit-identically to a straight
  run: 3 + 3 trajectories equal 6 straight ones. A checkpoint that is not a complete MPI HMC checkpoint,
  or one written for other parameters, stops every rank with one :class:`~olrg_hpc.errors.UserError`
  naming the file (:func:`read_checkpoint`).
* **Results** (``out``, rank 0, atomic): HDF5 with provenance, holding the arrays ``dH``, ``accepted``,
  ``action``, ``magnetization``, ``phi2``, ``phi``, ``acceptance``, ``field_scale``, ``dims``.

Timings returned (each the maximum over ranks): ``md_s`` (molecular dynamics incl. halo exchange),
``halo_s`` (halo exchanges inside the MD, including waiting for slower neighbours),
``force_s``, ``rng_s``, ``reduce_s``, ``total_s``, and the number of force evaluations.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from olrg_hpc.errors import UserError

__all__ = [
    "OMELYAN_LAMBDA",
    "tutorial_parameters",
    "philox_generator",
    "momentum_rows",
    "momentum_field",
    "accept_uniform",
    "initial_field",
    "CHECKPOINT_FORMAT",
    "write_checkpoint",
    "read_checkpoint",
    "run_mpi_hmc",
    "main",
]

OMELYAN_LAMBDA = 0.1931833275037836  # same as hmc.OMELYAN_LAMBDA (kept jax-free here)

_PURPOSE_INIT = 0
_PURPOSE_MOMENTA = 1
_PURPOSE_ACCEPT = 2

_DEFAULTS: dict[str, Any] = {
    "tau": 1.0,
    "n_steps": 10,
    "integrator": "leapfrog",
    "init": "hot",
    "init_scale": 0.5,
    "checkpoint": None,
    "checkpoint_every": 0,
    "restart": False,
    "out": None,
    "dims": None,
}


# ---------------------------------------------------------------------------------------- parameters
def tutorial_parameters(params: dict[str, Any]) -> tuple[float, float, float, str]:
    """``(m2, lam, field_scale, convention)`` in the tutorial convention from ``params`` (2D).

    ``m2``+``lam`` -> tutorial (scale 1); ``beta``+``lam`` -> ``m2 = 2 (1 - 2 lam)/beta - 4``,
    ``lam_tut = 4 lam / beta^2``, scale ``sqrt(2/beta)``; ``kappa``+``lam`` -> as beta = 2 kappa.
    """
    given = [k for k in ("m2", "beta", "kappa") if params.get(k) is not None]
    if len(given) != 1 or params.get("lam") is None:
        raise ValueError("give exactly one of m2 / beta / kappa, plus lam")
    lam = float(params["lam"])
    if given[0] == "m2":
        return float(params["m2"]), lam, 1.0, "tutorial"
    beta = float(params["beta"]) if given[0] == "beta" else 2.0 * float(params["kappa"])
    if beta <= 0:
        raise ValueError("beta / kappa must be positive")
    c2 = 2.0 / beta
    conv = "beta_lambda" if given[0] == "beta" else "hopping"
    return (1.0 - 2.0 * lam) * c2 - 4.0, lam * c2 * c2, math.sqrt(c2), conv


def _shape(params: dict[str, Any]) -> tuple[int, int]:
    L = params["L"]
    if isinstance(L, (int, np.integer)):
        return int(L), int(L)
    L = [int(v) for v in L]
    if len(L) == 1:
        return L[0], L[0]
    if len(L) != 2:
        raise ValueError(f"L must be an int or [Ly, Lx], got {params['L']}")
    return L[0], L[1]


# ---------------------------------------------------------------------------------------- random numbers
def philox_generator(seed: int, trajectory: int, row: int, purpose: int) -> np.random.Generator:
    """Counter-based stream: ``Philox(key=seed, counter=[0, row, trajectory, purpose])``."""
    return np.random.Generator(
        np.random.Philox(key=int(seed), counter=[0, int(row), int(trajectory), int(purpose)])
    )


def momentum_rows(seed: int, trajectory: int, rows: range, lx: int) -> np.ndarray:
    """Momenta of global rows ``rows`` (all ``lx`` columns) at ``trajectory``, shape ``(len(rows), lx)``."""
    out = np.empty((len(rows), lx))
    for i, y in enumerate(rows):
        out[i] = philox_generator(seed, trajectory, y, _PURPOSE_MOMENTA).standard_normal(lx)
    return out


def momentum_field(seed: int, trajectory: int, shape: tuple[int, int]) -> np.ndarray:
    """Global momentum field of ``trajectory`` (what every decomposition uses), shape ``(Ly, Lx)``."""
    return momentum_rows(seed, trajectory, range(shape[0]), shape[1])


def accept_uniform(seed: int, trajectory: int) -> float:
    """Metropolis uniform ``u in [0, 1)`` of ``trajectory``."""
    return float(philox_generator(seed, trajectory, 0, _PURPOSE_ACCEPT).random())


def initial_field(seed: int, shape: tuple[int, int], kind: str = "hot", scale: float = 0.5) -> np.ndarray:
    """Global start field: ``"hot"`` = ``scale * N(0, 1)`` per site (rows from ``counter=[0, y, 0, 0]``;
    the default ``scale = 0.5`` keeps the quartic force moderate at ``lam ~ 8``), ``"cold"`` = 0."""
    if kind == "cold":
        return np.zeros(shape)
    if kind != "hot":
        raise ValueError(f"init must be 'hot' or 'cold', got {kind!r}")
    out = np.empty(shape)
    for y in range(shape[0]):
        out[y] = scale * philox_generator(seed, 0, y, _PURPOSE_INIT).standard_normal(shape[1])
    return out


# ---------------------------------------------------------------------------------------- decomposition
class _Domain:
    """Cartesian decomposition, halo exchange and local kernels of one rank."""

    def __init__(self, comm: Any, shape: tuple[int, int], dims: Sequence[int] | None, m2: float, lam: float):
        from mpi4py import MPI

        self.MPI = MPI
        self.shape = shape
        dims = MPI.Compute_dims(comm.Get_size(), list(dims) if dims else [0, 0])
        if shape[0] % dims[0] or shape[1] % dims[1]:
            raise ValueError(f"lattice {shape} not divisible by process grid {dims}")
        self.dims = tuple(dims)
        self.cart = comm.Create_cart(dims, periods=[True, True], reorder=False)
        self.rank = self.cart.Get_rank()
        self.coords = tuple(self.cart.Get_coords(self.rank))
        self.ly, self.lx = shape[0] // dims[0], shape[1] // dims[1]
        self.y0, self.x0 = self.coords[0] * self.ly, self.coords[1] * self.lx
        self.src_y, self.dst_y = self.cart.Shift(0, 1)
        self.src_x, self.dst_x = self.cart.Shift(1, 1)
        self.b = 4.0 + m2  # (2d + m2) in 2D
        self.lam = lam
        self.col_send = np.empty(self.ly)
        self.col_recv = np.empty(self.ly)
        self.halo_s = 0.0
        self.force_s = 0.0
        self.n_force = 0

    # ------------------------------------------------------------- data movement
    def local_slice(self, global_field: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(
            global_field[self.y0 : self.y0 + self.ly, self.x0 : self.x0 + self.lx], dtype=np.float64
        )

    def padded(self, local: np.ndarray) -> np.ndarray:
        a = np.zeros((self.ly + 2, self.lx + 2))
        a[1:-1, 1:-1] = local
        self.exchange(a)
        return a

    def exchange(self, a: np.ndarray) -> None:
        """Refresh the width-1 halo of ``a`` (rows, then columns; corners are not needed)."""
        t0 = time.perf_counter()
        c = self.cart
        # my last interior row -> neighbour at +y (its top halo); receive the -y neighbour's last row
        c.Sendrecv(
            a[-2, 1:-1], dest=self.dst_y, sendtag=10, recvbuf=a[0, 1:-1], source=self.src_y, recvtag=10
        )
        c.Sendrecv(
            a[1, 1:-1], dest=self.src_y, sendtag=11, recvbuf=a[-1, 1:-1], source=self.dst_y, recvtag=11
        )
        self.col_send[:] = a[1:-1, -2]
        c.Sendrecv(
            self.col_send, dest=self.dst_x, sendtag=12, recvbuf=self.col_recv, source=self.src_x, recvtag=12
        )
        a[1:-1, 0] = self.col_recv
        self.col_send[:] = a[1:-1, 1]
        c.Sendrecv(
            self.col_send, dest=self.src_x, sendtag=13, recvbuf=self.col_recv, source=self.dst_x, recvtag=13
        )
        a[1:-1, -1] = self.col_recv
        self.halo_s += time.perf_counter() - t0

    def gather(self, local: np.ndarray) -> np.ndarray | None:
        """Global field on rank 0 (``None`` elsewhere)."""
        blocks = self.cart.gather((self.coords, np.ascontiguousarray(local)), root=0)
        if self.rank != 0:
            return None
        out = np.empty(self.shape)
        for (cy, cx), blk in blocks:
            out[cy * self.ly : (cy + 1) * self.ly, cx * self.lx : (cx + 1) * self.lx] = blk
        return out

    # ------------------------------------------------------------- local kernels (halo must be fresh)
    def force(self, a: np.ndarray) -> np.ndarray:
        """``-dS/dphi`` on the interior; same operation order as ``Phi4Action.force``."""
        t0 = time.perf_counter()
        c = a[1:-1, 1:-1]
        nb = (a[2:, 1:-1] + a[:-2, 1:-1]) + (a[1:-1, 2:] + a[1:-1, :-2])
        f = 2.0 * nb - 2.0 * self.b * c - 4.0 * self.lam * (c * c * c)
        self.force_s += time.perf_counter() - t0
        self.n_force += 1
        return f

    def action_sum(self, a: np.ndarray) -> float:
        c = a[1:-1, 1:-1]
        c2 = c * c
        hop = c * a[2:, 1:-1] + c * a[1:-1, 2:]
        return float(np.sum(-2.0 * hop + self.b * c2 + self.lam * (c2 * c2)))

    # ------------------------------------------------------------- molecular dynamics
    def _drift(self, a: np.ndarray, p: np.ndarray, h: float) -> None:
        a[1:-1, 1:-1] += h * p
        self.exchange(a)

    def leapfrog(self, a: np.ndarray, p: np.ndarray, eps: float, n: int) -> None:
        p += 0.5 * eps * self.force(a)
        for _ in range(n - 1):
            self._drift(a, p, eps)
            p += eps * self.force(a)
        self._drift(a, p, eps)
        p += 0.5 * eps * self.force(a)

    def omelyan(self, a: np.ndarray, p: np.ndarray, eps: float, n: int, lam: float = OMELYAN_LAMBDA) -> None:
        half = 0.5 * eps
        p += lam * eps * self.force(a)
        for _ in range(n - 1):
            self._drift(a, p, half)
            p += (1.0 - 2.0 * lam) * eps * self.force(a)
            self._drift(a, p, half)
            p += 2.0 * lam * eps * self.force(a)
        self._drift(a, p, half)
        p += (1.0 - 2.0 * lam) * eps * self.force(a)
        self._drift(a, p, half)
        p += lam * eps * self.force(a)


# ---------------------------------------------------------------------------------------- checkpoint I/O
#: ``format`` attribute of a checkpoint file; a file without it is not an MPI HMC checkpoint.
CHECKPOINT_FORMAT = "olrg-hpc mpi_hmc checkpoint 1"
_HISTORY = ("dH", "accepted", "action", "magnetization", "phi2")
_PHYSICS_KEYS = ("m2", "lam", "Ly", "Lx", "seed", "tau", "n_steps", "integrator")
_RNG = "numpy Philox4x64, key=seed, counter=[0, row, trajectory, purpose]; momenta purpose 1, accept 2, init 0"


def _provenance() -> dict[str, Any]:
    from olrg_hpc import provenance

    return {"host": provenance.host(), "written": provenance.now(), "provenance": provenance.run_provenance()}


def write_checkpoint(
    path: str,
    phi: np.ndarray,
    trajectory: int,
    identity: dict[str, Any],
    history: dict[str, Any],
    attrs: dict[str, Any] | None = None,
) -> None:
    """Write an HDF5 checkpoint atomically (:func:`olrg_hpc.store.write_shard`: temporary sibling, fsync,
    ``os.replace``; ``complete = True`` is the last attribute written).

    Datasets: ``phi`` (global field, tutorial normalisation, float64), the per-trajectory histories
    ``dH``, ``accepted``, ``action``, ``magnetization``, ``phi2``. Root attributes: ``format``,
    ``trajectory`` (completed trajectories = the next trajectory counter of the counter-based RNG),
    ``seed`` and ``rng_key`` (the Philox key), ``rng`` (the stream layout), ``identity`` (JSON of the
    physics/integrator parameters a restart must match), ``attrs`` (e.g. ``config``, ``dims``) and the
    provenance (``host``, ``written``, ``provenance`` JSON: package version, git commit, library versions).
    """
    from olrg_hpc.store import write_shard

    results: dict[str, Any] = {"phi": np.asarray(phi, dtype=np.float64)}
    for k in _HISTORY:
        results[k] = np.asarray(history[k], dtype=bool if k == "accepted" else np.float64)
    meta = {
        "format": CHECKPOINT_FORMAT,
        "trajectory": int(trajectory),
        "seed": int(identity["seed"]),
        "rng_key": int(identity["seed"]),
        "rng": _RNG,
        "identity": json.dumps(identity, sort_keys=True),
        **(attrs or {}),
        **_provenance(),
    }
    write_shard(path, results, meta, durable=True)


def read_checkpoint(path: str) -> dict[str, Any]:
    """Load a checkpoint written by :func:`write_checkpoint`.

    Returns ``phi``, ``trajectory``, ``identity`` (dict) and the histories. Anything that is not a
    complete, self-consistent checkpoint (not HDF5, truncated, written by something else, missing
    datasets, histories of the wrong length, a dataset or attribute that fails its checksum: a history edited
    in place) raises :class:`~olrg_hpc.errors.UserError` naming ``path``.
    """
    import h5py

    from olrg_hpc.store import CorruptFile, verify

    def bad(why: str) -> UserError:
        return UserError(
            f"checkpoint {path}: {why}; delete it (or point 'checkpoint' elsewhere) to start the chain afresh"
        )

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != CHECKPOINT_FORMAT:
                raise bad("not an olrg-hpc MPI HMC checkpoint (no 'format' attribute)")
            if not bool(f.attrs.get("complete", False)):
                raise bad("incomplete (no 'complete' attribute)")
            missing = [k for k in ("phi", *_HISTORY) if k not in f]
            if missing:
                raise bad(f"missing dataset(s) {', '.join(missing)}")
            try:
                verify(f)
            except CorruptFile as exc:
                raise bad(f"fails its checksums ({exc})") from None
            out: dict[str, Any] = {k: f[k][()] for k in ("phi", *_HISTORY)}
            out["trajectory"] = int(f.attrs["trajectory"])
            out["identity"] = json.loads(f.attrs["identity"])
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError, KeyError, ValueError... for damaged files
        msg = " ".join(str(exc).split()) or type(exc).__name__
        raise bad(f"unreadable HDF5, truncated or corrupt ({msg})") from None
    n = out["trajectory"]
    if n < 0 or any(np.shape(out[k]) != (n,) for k in _HISTORY):
        raise bad(f"histories do not have {n} entries (the trajectory counter)")
    if np.ndim(out["phi"]) != 2 or not np.all(np.isfinite(out["phi"])):
        raise bad("the field is not a finite 2D array")
    return out


def _write_results(path: str, result: dict[str, Any], identity: dict[str, Any], attrs: dict[str, Any]) -> None:
    """Results file of rank 0: one HDF5 file written atomically through the store, with provenance."""
    from olrg_hpc.store import write_shard

    data = {k: np.asarray(result[k]) for k in ("dH", "accepted", "action", "magnetization", "phi2", "phi")}
    data["field_scale"] = np.float64(result["field_scale"])
    data["acceptance"] = np.float64(result["acceptance"])
    data["dims"] = np.asarray(result["dims"])
    meta = {"format": "olrg-hpc mpi_hmc results 1", "identity": json.dumps(identity, sort_keys=True),
            "trajectory": int(result["trajectory"]), **attrs, **_provenance()}
    write_shard(path, data, meta, durable=True)


# ---------------------------------------------------------------------------------------- driver
def run_mpi_hmc(params: dict[str, Any], comm: Any) -> dict[str, Any]:
    """Run (or resume) a domain-decomposed HMC chain; collective over ``comm``.

    ``params`` keys: ``L`` (int or ``[Ly, Lx]``), ``n_traj`` (total target), ``seed``, action
    (``m2``+``lam`` | ``beta``+``lam`` | ``kappa``+``lam``), optional ``tau`` (1.0), ``n_steps`` (10),
    ``integrator`` (``"leapfrog"``|``"omelyan"``), ``init`` (``"hot"``|``"cold"``), ``init_scale`` (0.5),
    ``phi0`` (global start field, tutorial normalisation; overrides ``init``), ``checkpoint`` (path),
    ``checkpoint_every`` (0 = only at the end), ``restart`` (resume from ``checkpoint`` if it exists),
    ``out`` (results, HDF5), ``dims`` (process grid). A damaged or
    mismatched checkpoint raises :class:`~olrg_hpc.errors.UserError` on every rank.

    Returns on every rank: ``dH``, ``accepted``, ``action``, ``magnetization``, ``phi2`` (one entry per
    trajectory, after the accept/reject step, including trajectories done before a restart),
    ``acceptance``, ``trajectory`` (completed), ``m2``, ``lam``, ``field_scale``, ``dims``, ``timings``;
    ``phi`` (final global field, tutorial normalisation) on rank 0, ``None`` elsewhere.
    """
    p = {**_DEFAULTS, **params}
    t_start = time.perf_counter()
    m2, lam, scale, convention = tutorial_parameters(p)
    shape = _shape(p)
    seed, n_traj, n_steps, tau = int(p["seed"]), int(p["n_traj"]), int(p["n_steps"]), float(p["tau"])
    integrator = str(p["integrator"])
    if integrator not in ("leapfrog", "omelyan"):
        raise ValueError(f"unknown integrator {integrator!r}")
    if n_steps < 1:
        raise ValueError("n_steps must be >= 1")
    dom = _Domain(comm, shape, p["dims"], m2, lam)
    cart = dom.cart
    ident = {
        "m2": m2,
        "lam": lam,
        "Ly": shape[0],
        "Lx": shape[1],
        "seed": seed,
        "tau": tau,
        "n_steps": n_steps,
        "integrator": integrator,
    }

    hist: dict[str, list[Any]] = {k: [] for k in ("dH", "accepted", "action", "magnetization", "phi2")}
    start_traj = 0
    global_phi: np.ndarray | None = None
    ckpt = p["checkpoint"]
    if p["restart"] and ckpt:
        state = None
        if dom.rank == 0 and os.path.exists(ckpt):
            try:
                state = read_checkpoint(ckpt)
            except UserError as exc:
                state = {"error": str(exc)}
            else:
                saved = state["identity"]
                bad = {k: (saved.get(k), ident[k]) for k in _PHYSICS_KEYS if saved.get(k) != ident[k]}
                if bad:
                    state = {"error": f"checkpoint {ckpt}: written for other parameters {bad} (saved, requested)"}
                elif state["phi"].shape != shape:
                    state = {"error": f"checkpoint {ckpt}: field of shape {state['phi'].shape}, expected {shape}"}
        state = cart.bcast(state, root=0)  # every rank fails alike (the CLI prints rank 0's line)
        if state is not None:
            if "error" in state:
                cart.Free()
                raise UserError(state["error"])
            global_phi = state["phi"]
            start_traj = int(state["trajectory"])
            for k in hist:
                hist[k] = list(state[k])
    if global_phi is None:
        if p.get("phi0") is not None:
            global_phi = np.asarray(p["phi0"], dtype=np.float64)
            if global_phi.shape != shape:
                raise ValueError(f"phi0 has shape {global_phi.shape}, expected {shape}")
        else:
            global_phi = initial_field(seed, shape, str(p["init"]), float(p["init_scale"]))

    a = dom.padded(dom.local_slice(global_phi))
    del global_phi
    dom.halo_s = 0.0  # time only the exchanges inside the molecular dynamics
    eps = tau / n_steps
    volume = shape[0] * shape[1]
    rows = range(dom.y0, dom.y0 + dom.ly)
    xs = slice(dom.x0, dom.x0 + dom.lx)
    md_s = rng_s = reduce_s = ckpt_s = 0.0
    every = int(p["checkpoint_every"] or 0)

    config = {k: v for k, v in p.items() if k != "phi0"}
    ckpt_attrs = {"config": config, "dims": list(dom.dims), "n_ranks": cart.Get_size(),
                  "field_scale": scale, "convention": convention}

    def checkpoint(done: int) -> None:
        loc = np.ascontiguousarray(a[1:-1, 1:-1])
        g = dom.gather(loc)
        err: str | None = None
        failure: BaseException | None = None
        if dom.rank == 0:
            try:
                write_checkpoint(ckpt, g, done, ident, hist, ckpt_attrs)
            except Exception as exc:  # noqa: BLE001 - reported on every rank below, so none waits forever
                failure = exc
                err = f"checkpoint {ckpt}: cannot write ({' '.join(str(exc).split()) or type(exc).__name__})"
        err = cart.bcast(err, root=0)
        if err:
            cart.Free()
            if failure is not None and not isinstance(failure, OSError):
                raise failure  # a bug, not the user's disk: keep the traceback (rank 0)
            raise UserError(err)  # unwritable directory, full disk, ...

    for k in range(start_traj, n_traj):
        t0 = time.perf_counter()
        mom = momentum_rows(seed, k, rows, shape[1])[:, xs].copy()
        u = accept_uniform(seed, k)
        rng_s += time.perf_counter() - t0

        a_old = a.copy()
        s_old = dom.action_sum(a)
        k_old = 0.5 * float(np.sum(mom * mom))
        t0 = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging trajectory gives dH = nan: rejected
            if integrator == "leapfrog":
                dom.leapfrog(a, mom, eps, n_steps)
            else:
                dom.omelyan(a, mom, eps, n_steps)
            md_s += time.perf_counter() - t0
            s_new = dom.action_sum(a)
            k_new = 0.5 * float(np.sum(mom * mom))
        c_new, c_old = a[1:-1, 1:-1], a_old[1:-1, 1:-1]

        t0 = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):
            loc = np.array(
                [
                    (k_new - k_old) + (s_new - s_old),
                    s_new,
                    s_old,
                    float(np.sum(c_new)),
                    float(np.sum(c_old)),
                    float(np.sum(c_new * c_new)),
                    float(np.sum(c_old * c_old)),
                ]
            )
        tot = np.empty_like(loc)
        cart.Allreduce(loc, tot, op=dom.MPI.SUM)
        cart.Bcast(tot, root=0)  # identical decision on every rank regardless of reduction order
        reduce_s += time.perf_counter() - t0
        dh = float(tot[0])
        # u < exp(-dH), written so that a very negative dH cannot overflow (u < 1 <= exp(-dH) there)
        accepted = (not math.isnan(dh)) and (dh <= 0.0 or u < math.exp(-dh))
        if not accepted:
            a = a_old
        j = 1 if accepted else 2
        hist["dH"].append(dh)
        hist["accepted"].append(accepted)
        hist["action"].append(tot[j])
        hist["magnetization"].append(tot[j + 2] / volume)
        hist["phi2"].append(tot[j + 4] / volume)
        if ckpt and every and (k + 1) % every == 0 and k + 1 < n_traj:
            t0 = time.perf_counter()
            checkpoint(k + 1)
            ckpt_s += time.perf_counter() - t0

    if ckpt:
        t0 = time.perf_counter()
        checkpoint(n_traj)
        ckpt_s += time.perf_counter() - t0
    phi_final = dom.gather(np.ascontiguousarray(a[1:-1, 1:-1]))

    n_new = max(n_traj - start_traj, 0)
    timings = {
        "total_s": time.perf_counter() - t_start,
        "md_s": md_s,
        "halo_s": dom.halo_s,
        "force_s": dom.force_s,
        "rng_s": rng_s,
        "reduce_s": reduce_s,
        "checkpoint_s": ckpt_s,
        "n_force": dom.n_force,
        "n_traj_run": n_new,
    }
    # slowest rank defines the wall time
    timings = {
        k: (cart.allreduce(v, op=dom.MPI.MAX) if isinstance(v, float) else v) for k, v in timings.items()
    }
    result: dict[str, Any] = {
        "dH": np.asarray(hist["dH"], dtype=np.float64),
        "accepted": np.asarray(hist["accepted"], dtype=bool),
        "action": np.asarray(hist["action"], dtype=np.float64),
        "magnetization": np.asarray(hist["magnetization"], dtype=np.float64),
        "phi2": np.asarray(hist["phi2"], dtype=np.float64),
        "trajectory": n_traj,
        "m2": m2,
        "lam": lam,
        "field_scale": scale,
        "convention": convention,
        "dims": dom.dims,
        "size": cart.Get_size(),
        "timings": timings,
        "phi": phi_final,
    }
    result["acceptance"] = float(np.mean(result["accepted"])) if len(result["accepted"]) else float("nan")
    if p["out"] and dom.rank == 0:
        _write_results(str(p["out"]), result, ident, {**ckpt_attrs, "timings": timings})
    cart.Free()
    return result


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m olrg_hpc.lattice.mpi_hmc", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--L", type=int, nargs="+", required=True, help="L, or Ly Lx")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--m2", type=float, help="tutorial convention (with --lam)")
    g.add_argument("--beta", type=float, help="beta/lambda convention (with --lam)")
    g.add_argument("--kappa", type=float, help="hopping convention (with --lam)")
    ap.add_argument("--lam", type=float, required=True)
    ap.add_argument("--n-traj", type=int, required=True, help="total number of trajectories")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--tau", type=float, default=1.0)
    ap.add_argument("--n-steps", type=int, default=10)
    ap.add_argument("--integrator", choices=["leapfrog", "omelyan"], default="leapfrog")
    ap.add_argument("--init", choices=["hot", "cold"], default="hot")
    ap.add_argument("--init-scale", type=float, default=0.5, help="width of the hot start")
    ap.add_argument("--dims", type=int, nargs=2, default=None)
    ap.add_argument("--checkpoint", default=None, help="HDF5 checkpoint (rank 0, atomic)")
    ap.add_argument("--checkpoint-every", type=int, default=0)
    ap.add_argument("--restart", action="store_true")
    ap.add_argument("--out", default=None, help="results file (HDF5, written atomically by rank 0)")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry (``python -m olrg_hpc.lattice.mpi_hmc``); prints a JSON summary on rank 0."""
    args = _parser().parse_args(argv)
    from mpi4py import MPI

    params = {k: v for k, v in vars(args).items() if v is not None}
    try:
        res = run_mpi_hmc(params, MPI.COMM_WORLD)
    except UserError as exc:  # every rank fails alike: say it once
        if MPI.COMM_WORLD.Get_rank() == 0:
            print(f"mpi_hmc: error: {exc}", file=sys.stderr)
        return 2
    if MPI.COMM_WORLD.Get_rank() == 0:
        summary = {
            "size": res["size"],
            "dims": list(res["dims"]),
            "trajectory": res["trajectory"],
            "acceptance": res["acceptance"],
            "mean_dH": float(np.mean(res["dH"])) if len(res["dH"]) else None,
            "timings": res["timings"],
        }
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
