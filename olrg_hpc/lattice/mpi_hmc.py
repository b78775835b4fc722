"""Domain-decomposed HMC for 2D phi^4: every MPI rank runs the jitted JAX trajectory on its block, with the
halo exchange inside the compiled program (docs/conventions.md section 2, "HMC baseline").

Launch::

    mpiexec -n 4 python -m olrg_hpc.lattice.mpi_hmc --L 16 --beta 0.634 --lam 0.5 --n-traj 100 \\
        --seed 1 --out run.h5 [--checkpoint ckpt.h5 --checkpoint-every 10]

or ``mpiexec -n 4 olrg-hpc hmc CONFIG``, or call :func:`run_mpi_hmc` with an
:class:`~olrg_hpc.lattice.mpi_hmc_spec.MPIHMCSpec` and a communicator. The spec holds every setting, its
defaults and its checks; the command line has one option per field (``--help``).

Design
------
* **Action.** Any of the three conventions of :mod:`olrg_hpc.lattice.phi4` is accepted (``m2``/``lam``:
  tutorial; ``beta``/``lam``: Albandea beta/lambda; ``kappa``/``lam``: hopping). The simulation always
  runs in the *tutorial* field variable ``phi`` with ``S = sum_x [-2 sum_mu phi_x phi_{x+mu} + (4 + m2)
  phi_x^2 + lam phi_x^4]`` (conversion formulas as in ``phi4``: ``m2 = 2 (1 - 2 lam_bl)/beta - 4``,
  ``lam = 4 lam_bl / beta^2``); the field in the requested convention is ``field_scale * phi``
  (``field_scale = sqrt(2/beta)`` or ``1/sqrt(kappa)``; 1 for tutorial). Unit-mass momenta in ``phi``,
  so trajectories coincide with :mod:`olrg_hpc.lattice.hmc` on the equivalent ``Phi4Action``.
* **Decomposition** (:class:`olrg_hpc.lattice.halo.Decomposition`): a periodic Cartesian grid ``dims``
  (``MPI.Compute_dims`` unless given), global layout ``phi[y, x]``, each rank one ``(Ly/Py, Lx/Px)`` block.
* **Kernel.** The integrators are :func:`olrg_hpc.lattice.hmc.leapfrog` / ``omelyan`` themselves, applied
  to the block with the same operations per site as on the whole lattice. The halos travel once per
  trajectory (``halo: trajectory``, the default): the block's ``phi`` and ``p`` are extended by ``w = n_force +
  1`` rows and columns of the neighbours (:meth:`~olrg_hpc.lattice.halo.Decomposition.extend`: one exchange per
  split axis, corners included) and the trajectory runs on the extended block as if it were periodic; the
  wrapped edges are wrong, each force evaluation carries that one site further in, and after ``n_force``
  evaluations the block and its forward neighbours are still exact (:func:`molecular_dynamics`). That trades
  ``2 w / l`` more force work for ``n_force + 1`` fewer message rounds, each of which costs about as much as a
  force evaluation of a 256^2 block on CPU (tens of microseconds). A block shallower than ``w`` along a split axis
  (or ``halo: force``) exchanges one row/column at every force evaluation instead (four ``sendrecv``, none along
  an axis with one rank). A whole run segment (up to :data:`SEGMENT`
  trajectories: momenta, molecular dynamics, global sums, Metropolis) is one jitted program; the messages
  are XLA custom calls (mpi4jax) or host callbacks through mpi4py (``transport``, see
  :mod:`olrg_hpc.lattice.halo`). Each rank runs on its own JAX device (:func:`~olrg_hpc.lattice.halo.rank_device`:
  a GPU when JAX has one, else the CPU, where XLA is kept to one thread per rank and ``mpiexec`` binds each rank
  to a core, :func:`olrg_hpc.mpi.mpi_launcher`).
* **Reductions.** One global sum per trajectory of the local ``dH`` (kinetic plus action differences of the
  block) and of the action, ``sum phi`` and ``sum phi^2`` of old and new fields, bit-identical on every
  rank, so all ranks take the same accept/reject decision (accept if ``u < exp(-dH)``; NaN rejected).
* **Random numbers (decomposition independent).** Counter-based Threefry-2x32 (``jax.extend.random``): the
  stream of (trajectory ``k``, purpose ``q``) has the key ``threefry(seed_key, (k, q))``, ``seed_key =
  (seed mod 2^32, seed div 2^32)``, and the number at global site ``i = y Lx + x`` is the standard normal
  ``sqrt(2) erfinv(2 u - 1)`` of the 53-bit uniform ``u = (b + 1/2) 2^-53``, ``b`` the top 53 of the 64 bits
  of ``threefry(key, (i, 0))``. Momenta: purpose 1;
  the Metropolis uniform: purpose 2, site 0; a hot start ``init_scale * N(0, 1)``: purpose 0, trajectory 0.
  Every rank draws only its own sites, so 1, 2, 4 ranks produce the same chain (to the rounding of the
  global sums, ~1e-13 relative; the field of the once-per-trajectory halo to a few ulps).
* **Checkpoint / restart.** Rank 0 gathers the global field and writes an HDF5 checkpoint atomically
  (:func:`olrg_hpc.store.write_shard`: temporary sibling + fsync + ``os.replace``) with the field
  (float64, bit-exact), the number of completed trajectories (together with the seed the whole RNG
  state: the generator is a pure function of ``(seed, trajectory, site)``), the physics identity, the
  run's spec, the process grid, provenance attributes (host, time, package version, git commit, library
  versions) and all histories (:func:`write_checkpoint`). ``n_traj`` is the *total* target; a restarted
  run (any number of ranks) continues from the checkpoint to ``n_traj``, bit-identically to a straight
  run: 3 + 3 trajectories equal 6 straight ones (``restart``, the default, resumes from an existing checkpoint;
  ``--no-restart`` starts afresh and overwrites it). A checkpoint that is not a complete MPI HMC checkpoint,
  or one written for other parameters (random-number layout included), stops every rank with one
  :class:`~olrg_hpc.errors.UserError` naming the file (:func:`read_checkpoint`).
* **Bad input and lost ranks.** The spec refuses non-finite couplings, non-positive extents, step counts or
  process-grid entries (one line naming the key, before MPI starts); a grid that does not fit the ranks stops
  every rank with one :class:`~olrg_hpc.errors.UserError` before anything runs. A rank that
  stops, hangs or dies leaves the others waiting inside MPI: a :class:`olrg_hpc.mpi.Watchdog` on every
  rank ends the whole run (one line, exit code 3) when no progress was made for ``watchdog_s`` seconds
  beyond the expected duration of the current segment.
* **Results** (``out``, rank 0, atomic): HDF5 with provenance, holding the arrays ``dH``, ``accepted``,
  ``action``, ``magnetization``, ``phi2``, ``phi``, ``acceptance``, ``field_scale``, ``dims``; attribute
  ``halo_depth`` (0: exchanges at every force evaluation).

Timings returned (each the maximum over ranks): ``compile_s`` (compiling the segment program), ``run_s``
(running the trajectories, exchanges and sums included; also as ``md_s``), ``checkpoint_s``, ``total_s``; and
``n_force``, the force evaluations per rank. With ``profile`` the parts are timed afterwards, each in its own
jitted loop on the block (:func:`_profile`), and scaled to the run: ``halo_s`` (one exchange of depth ``w`` per
trajectory, or ``n_force + 2`` one-site exchanges), ``force_s``, ``rng_s`` (momenta), ``reduce_s`` (global sums).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend.random import threefry_2x32

from olrg_hpc.errors import UserError
from olrg_hpc.jaxsetup import enable_x64
from olrg_hpc.lattice import hmc
from olrg_hpc.lattice.halo import Decomposition, rank_device
from olrg_hpc.lattice.hmc import OMELYAN_LAMBDA
from olrg_hpc.lattice.mpi_hmc_spec import MPIHMCSpec, error_line, parse_argv
from olrg_hpc.lattice.phi4 import Phi4Action

enable_x64()

__all__ = [
    "OMELYAN_LAMBDA",
    "SEGMENT",
    "tutorial_parameters",
    "site_normals",
    "momentum_field",
    "accept_uniform",
    "initial_field",
    "CHECKPOINT_FORMAT",
    "write_checkpoint",
    "read_checkpoint",
    "MPIHMCSpec",
    "halo_depth",
    "molecular_dynamics",
    "run_mpi_hmc",
    "main",
]

_PURPOSE_INIT = 0
_PURPOSE_MOMENTA = 1
_PURPOSE_ACCEPT = 2

#: Trajectories per compiled run segment at most (the history buffers of one call).
SEGMENT = 256
#: A segment is sized to take about this many seconds (bounded by :data:`SEGMENT` and the checkpoints).
_SEGMENT_TARGET_S = 5.0


# ---------------------------------------------------------------------------------------- parameters
def tutorial_parameters(params: dict[str, Any]) -> tuple[float, float, float, str]:
    """``(m2, lam, field_scale, convention)`` in the tutorial convention from ``params`` (2D).

    ``m2``+``lam`` -> tutorial (scale 1); ``beta``+``lam`` -> ``m2 = 2 (1 - 2 lam)/beta - 4``,
    ``lam_tut = 4 lam / beta^2``, scale ``sqrt(2/beta)``; ``kappa``+``lam`` -> as beta = 2 kappa.
    ``ValueError`` for anything else, including non-finite couplings.
    """
    given = [k for k in ("m2", "beta", "kappa") if params.get(k) is not None]
    if len(given) != 1 or params.get("lam") is None:
        raise ValueError("give exactly one of m2 / beta / kappa, plus lam")
    for k in (*given, "lam"):
        if not math.isfinite(float(params[k])):
            raise ValueError(f"{k} = {params[k]}: couplings must be finite")
    lam = float(params["lam"])
    if given[0] == "m2":
        return float(params["m2"]), lam, 1.0, "tutorial"
    beta = float(params["beta"]) if given[0] == "beta" else 2.0 * float(params["kappa"])
    if beta <= 0:
        raise ValueError("beta / kappa must be positive")
    c2 = 2.0 / beta
    conv = "beta_lambda" if given[0] == "beta" else "hopping"
    return (1.0 - 2.0 * lam) * c2 - 4.0, lam * c2 * c2, math.sqrt(c2), conv


# ---------------------------------------------------------------------------------------- random numbers
def _stream_key(seed: int, trajectory: Any, purpose: int) -> Any:
    """Threefry key (2 x uint32) of the stream (``trajectory``, ``purpose``); ``trajectory`` may be traced."""
    key = jnp.asarray([seed & 0xFFFFFFFF, seed >> 32], dtype=jnp.uint32)
    count = jnp.stack([jnp.asarray(trajectory).astype(jnp.uint32), jnp.asarray(purpose, dtype=jnp.uint32)])
    return threefry_2x32(key, count)


def _site_uniforms(seed: int, trajectory: Any, purpose: int, sites: Any) -> Any:
    """Uniforms in (0, 1) at global sites ``sites`` (uint32 array) of a stream (module docstring)."""
    flat = jnp.ravel(sites).astype(jnp.uint32)
    words = threefry_2x32(_stream_key(seed, trajectory, purpose), jnp.concatenate([flat, jnp.zeros_like(flat)]))
    n = flat.shape[0]
    bits = (words[:n].astype(jnp.uint64) << 32) | words[n:].astype(jnp.uint64)
    u = ((bits >> 11).astype(jnp.float64) + 0.5) * 2.0**-53
    return u.reshape(jnp.shape(sites))


def site_normals(seed: int, trajectory: Any, purpose: int, sites: Any) -> Any:
    """Standard normals at global sites ``sites`` of the stream (``trajectory``, ``purpose``), as JAX array;
    traceable (the kernel draws its block's momenta with it)."""
    u = _site_uniforms(seed, trajectory, purpose, sites)
    return math.sqrt(2.0) * jax.scipy.special.erfinv(2.0 * u - 1.0)  # = ndtri(u), half the cost in XLA


def _global_sites(shape: tuple[int, int]) -> np.ndarray:
    return np.arange(shape[0] * shape[1], dtype=np.uint32).reshape(shape)


def momentum_field(seed: int, trajectory: int, shape: tuple[int, int]) -> np.ndarray:
    """Global momentum field of ``trajectory`` (what every decomposition draws), shape ``(Ly, Lx)``."""
    return np.asarray(site_normals(seed, trajectory, _PURPOSE_MOMENTA, _global_sites(shape)))


def accept_uniform(seed: int, trajectory: int) -> float:
    """Metropolis uniform ``u in (0, 1)`` of ``trajectory``."""
    return float(_site_uniforms(seed, trajectory, _PURPOSE_ACCEPT, np.zeros(1, dtype=np.uint32))[0])


def initial_field(seed: int, shape: tuple[int, int], kind: str = "hot", scale: float = 0.5) -> np.ndarray:
    """Global start field: ``"hot"`` = ``scale * N(0, 1)`` per site (purpose 0, trajectory 0; the default
    ``scale = 0.5`` keeps the quartic force moderate at ``lam ~ 8``), ``"cold"`` = 0."""
    if kind == "cold":
        return np.zeros(shape)
    if kind != "hot":
        raise ValueError(f"init must be 'hot' or 'cold', got {kind!r}")
    return scale * np.asarray(site_normals(seed, 0, _PURPOSE_INIT, _global_sites(shape)))


# ---------------------------------------------------------------------------------------- the kernel
class _Block:
    """The action as one rank's block sees it: :func:`hmc.force` with the halos fetched from the neighbours
    (``hmc.leapfrog``/``omelyan`` call ``force(action, phi)``, which defers to this object's ``force``)."""

    def __init__(self, action: Any, dec: Any):
        self.action, self.dec = action, dec

    def force(self, phi: Any) -> Any:
        return hmc.force(self.action, phi, self.dec.halos(phi))

    def local_action(self, phi: Any) -> Any:
        """The block's share of ``S``: ``sum_{x in block} [-2 sum_mu phi_x phi_{x+mu} + (4 + m2) phi_x^2 +
        lam phi_x^4]`` (the forward neighbours of the last row/column are halos)."""
        (y_fwd, _), (x_fwd, _) = self.dec.halos(phi)
        return jnp.sum(_density(self.action, phi, hmc._shift(phi, 0, True, y_fwd), hmc._shift(phi, 1, True, x_fwd)))


def _density(action: Any, phi: Any, y_fwd: Any, x_fwd: Any) -> Any:
    """Action density with each bond on its backward site: ``-2 phi_x (phi_{x+y} + phi_{x+x}) + (4 + m2) phi_x^2
    + lam phi_x^4``, given the forward neighbours ``y_fwd``, ``x_fwd`` of every site."""
    hop = phi * y_fwd + phi * x_fwd
    return -action.hopping_coefficient * hop + action.mass_coefficient * phi**2 + action.lam * phi**4


def halo_depth(dec: Any, n_force: int) -> int:
    """Depth of the once-per-trajectory halo: ``n_force + 1`` (each force evaluation needs valid neighbours one
    site further in, the final action one more), or 0 (exchange at every force evaluation) when a split axis's
    block is shallower than that or nothing is split."""
    w = n_force + 1
    split = [ext for ext, d in zip((dec.ly, dec.lx), dec.dims, strict=True) if d > 1]
    return w if split and all(w <= ext for ext in split) else 0


def _md_per_force(dec: Any, action: Any, tau: float, n_steps: int, integrator: str) -> Any:
    """``md(phi, p) -> (S_old, S_new, phi', p')`` of the block (actions: the block's shares), the halos fetched
    at every force evaluation."""
    block = _Block(action, dec)

    def md(phi: Any, p: Any) -> tuple[Any, Any, Any, Any]:
        phi1, p1 = hmc.integrate(block, phi, p, tau, n_steps, integrator)
        return block.local_action(phi), block.local_action(phi1), phi1, p1

    return md


def _md_per_trajectory(dec: Any, action: Any, tau: float, n_steps: int, integrator: str, w: int) -> Any:
    """``md`` as :func:`_md_per_force`, with one exchange per trajectory: ``phi`` and ``p`` extended by ``w``
    sites of the neighbours (:meth:`~olrg_hpc.lattice.halo.Decomposition.extend`), the trajectory integrated
    on the extended block as if it were periodic, and the block cut out. The wrapped edges are wrong, and each
    force evaluation carries the error one site further in; after ``n_force < w`` of them the block and its
    forward neighbours are still exact, with the same operations per site as on the whole lattice."""
    (wy, wx), (ly, lx) = dec.depth(w), (dec.ly, dec.lx)
    block = (slice(wy, wy + ly), slice(wx, wx + lx))

    def share(ext: Any) -> Any:  # the block's share of S; forward neighbours inside the extension
        return jnp.sum(_density(action, ext, jnp.roll(ext, -1, axis=0), jnp.roll(ext, -1, axis=1))[block])

    def md(phi: Any, p: Any) -> tuple[Any, Any, Any, Any]:
        phi_e, p_e = dec.extend(jnp.stack([phi, p]), w)
        phi1_e, p1_e = hmc.integrate(action, phi_e, p_e, tau, n_steps, integrator)
        return share(phi_e), share(phi1_e), phi1_e[block], p1_e[block]

    return md


def molecular_dynamics(dec: Any, action: Any, tau: float, n_steps: int, integrator: str, depth: int) -> Any:
    """``md(phi, p) -> (S_old, S_new, phi', p')`` of one trajectory on this rank's block (the actions: the
    block's shares of ``S``), with one halo exchange of ``depth`` sites per trajectory or, for ``depth`` 0, an
    exchange at every force evaluation."""
    if depth:
        return _md_per_trajectory(dec, action, tau, n_steps, integrator, depth)
    return _md_per_force(dec, action, tau, n_steps, integrator)


def _segment_program(dec: Any, action: Any, seed: int, tau: float, n_steps: int, integrator: str,
                     depth: int = 0) -> Any:
    """``segment(phi, k0, n) -> (phi, (dH, accepted, action, magnetization, phi2))``, jitted: trajectories
    ``k0 .. k0 + n - 1`` (``n <= SEGMENT``) on this rank's block; histories padded to :data:`SEGMENT`.
    ``depth``: halo depth of one exchange per trajectory (:func:`halo_depth`); 0: exchange per force evaluation."""
    md = molecular_dynamics(dec, action, tau, n_steps, integrator, depth)
    sites = dec.global_sites()
    volume = float(dec.shape[0] * dec.shape[1])

    def trajectory(k: Any, phi: Any) -> tuple[Any, tuple[Any, ...]]:
        p = site_normals(seed, k, _PURPOSE_MOMENTA, sites)
        u = _site_uniforms(seed, k, _PURPOSE_ACCEPT, np.zeros(1, dtype=np.uint32))[0]
        s_old, s_new, phi1, p1 = md(phi, p)
        k_old, k_new = 0.5 * jnp.sum(p * p), 0.5 * jnp.sum(p1 * p1)
        local = jnp.stack([(k_new - k_old) + (s_new - s_old), s_new, s_old, jnp.sum(phi1), jnp.sum(phi),
                           jnp.sum(phi1 * phi1), jnp.sum(phi * phi)])
        tot = dec.allsum(local)
        dh = tot[0]
        accepted = u < jnp.exp(-dh)  # NaN (a diverged trajectory) compares false: rejected
        pick = lambda new, old: jnp.where(accepted, new, old)  # noqa: E731
        return pick(phi1, phi), (dh, accepted, pick(tot[1], tot[2]), pick(tot[3], tot[4]) / volume,
                                 pick(tot[5], tot[6]) / volume)

    def segment(phi: Any, k0: Any, n: Any) -> tuple[Any, tuple[Any, ...]]:
        hist0 = (jnp.zeros(SEGMENT), jnp.zeros(SEGMENT, dtype=bool), jnp.zeros(SEGMENT), jnp.zeros(SEGMENT),
                 jnp.zeros(SEGMENT))

        def body(i: Any, carry: tuple[Any, tuple[Any, ...]]) -> tuple[Any, tuple[Any, ...]]:
            phi, hist = carry
            phi, vals = trajectory(k0 + i, phi)
            return phi, tuple(h.at[i].set(v) for h, v in zip(hist, vals, strict=True))

        return jax.lax.fori_loop(0, n, body, (phi, hist0))

    return jax.jit(segment)


def _profile(dec: Any, action: Any, seed: int, phi: Any, depth: int = 0, reps: int = 20) -> dict[str, float]:
    """Seconds per call of the kernel's parts, each in its own jitted loop of ``reps`` calls on this block (the
    segment program is one compiled unit and cannot be timed in parts): ``halo`` (one exchange, waiting for
    neighbours included: of ``phi`` and ``p`` to ``depth`` sites, or of ``phi`` one site deep when ``depth`` is
    0), ``force`` (one force evaluation, on the extended block when ``depth``), ``momenta`` (one trajectory's
    draw), ``sum`` (one global sum)."""
    halos0 = dec.halos(phi)
    ext0 = dec.extend(jnp.stack([phi, phi]), depth)[0] if depth else None

    def consume(phi: Any, x: Any) -> Any:  # a data dependence XLA cannot drop
        return phi.at[0, 0].add(0.0 * x)

    def halo_loop(phi: Any) -> Any:
        def body(_: Any, ph: Any) -> Any:
            if depth:
                return consume(ph, jnp.sum(dec.extend(jnp.stack([ph, ph]), depth)[:, 0, 0]))
            edges = [e for pair in dec.halos(ph) for e in pair if e is not None]
            return consume(ph, sum((jnp.sum(e) for e in edges), jnp.zeros(())))
        return jax.lax.fori_loop(0, reps, body, phi)

    def force_loop(phi: Any) -> Any:
        if depth:
            return consume(phi, jnp.sum(jax.lax.fori_loop(0, reps, lambda _, e: e + 1e-9 * hmc.force(action, e),
                                                           ext0)[0]))
        return jax.lax.fori_loop(0, reps, lambda _, ph: ph + 1e-9 * hmc.force(action, ph, halos0), phi)

    def momenta_loop(phi: Any) -> Any:
        sites = dec.global_sites()
        return jax.lax.fori_loop(0, reps, lambda k, ph: consume(ph, jnp.sum(site_normals(seed, k, 1, sites))), phi)

    def sum_loop(phi: Any) -> Any:
        return jax.lax.fori_loop(0, reps, lambda _, ph: consume(ph, dec.allsum(jnp.sum(ph)[None])[0]), phi)

    out = {}
    for name, fn in (("halo", halo_loop), ("force", force_loop), ("momenta", momenta_loop), ("sum", sum_loop)):
        f = jax.jit(fn)
        jax.block_until_ready(f(phi))  # compile
        dec.cart.Barrier()
        t0 = time.perf_counter()
        jax.block_until_ready(f(phi))
        out[name] = (time.perf_counter() - t0) / reps
    return out


def _single_thread_xla() -> None:
    """One XLA CPU thread per rank (ranks are placed one per core), unless the user set ``XLA_FLAGS``."""
    if "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


# ---------------------------------------------------------------------------------------- checkpoint I/O
#: ``format`` attribute of a checkpoint file; a file without it is not an MPI HMC checkpoint.
CHECKPOINT_FORMAT = "olrg-hpc mpi_hmc checkpoint 1"
_HISTORY = ("dH", "accepted", "action", "magnetization", "phi2")
_PHYSICS_KEYS = ("m2", "lam", "Ly", "Lx", "seed", "tau", "n_steps", "integrator", "rng")
_RNG = ("jax threefry-2x32 counter-based: key threefry((seed mod 2^32, seed div 2^32), (trajectory, purpose)), "
        "site i = y Lx + x -> sqrt(2) erfinv(2u - 1), u the 53-bit uniform of threefry(key, (i, 0)); momenta purpose "
        "1, accept 2 (site 0), "
        "init 0")


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
    ``seed`` and ``rng_key`` (the generator's key), ``rng`` (the stream layout), ``identity`` (JSON of the
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
def run_mpi_hmc(spec: MPIHMCSpec | Mapping[str, Any], comm: Any) -> dict[str, Any]:
    """Run (or resume) a domain-decomposed HMC chain; collective over ``comm``.

    ``spec``: every setting (:class:`~olrg_hpc.lattice.mpi_hmc_spec.MPIHMCSpec`; a mapping is validated into one
    first). A mapping the spec refuses, a grid that does not fit the ranks, or a damaged or mismatched
    checkpoint raise :class:`~olrg_hpc.errors.UserError` on every rank.

    Returns on every rank: ``dH``, ``accepted``, ``action``, ``magnetization``, ``phi2`` (one entry per
    trajectory, after the accept/reject step, including trajectories done before a restart),
    ``acceptance``, ``trajectory`` (completed), ``m2``, ``lam``, ``field_scale``, ``dims``, ``transport``,
    ``device``, ``timings``; ``phi`` (final global field, tutorial normalisation) on rank 0, ``None`` elsewhere.
    """
    from pydantic import ValidationError

    from olrg_hpc.mpi import Watchdog

    t_start = time.perf_counter()
    try:
        spec = MPIHMCSpec.model_validate(spec)
    except ValidationError as exc:
        raise UserError(error_line(exc)) from None
    # watched from here: setting up the grid, reading the checkpoint and compiling get at least 600 s
    with Watchdog(comm.Get_rank(), max(600.0, spec.watchdog_s), prefix="mpi_hmc") as watchdog:
        return _run(spec, comm, watchdog, t_start)


def _run(spec: MPIHMCSpec, comm: Any, watchdog: Any, t_start: float) -> dict[str, Any]:
    """:func:`run_mpi_hmc` after validation, under ``watchdog``."""
    m2, lam, scale, convention = tutorial_parameters(spec.model_dump())
    shape, seed, n_traj, n_steps, tau = spec.shape, spec.seed, spec.n_traj, spec.n_steps, spec.tau
    integrator = spec.integrator
    _single_thread_xla()
    try:
        dec = Decomposition(comm, shape, spec.dims, spec.transport)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    cart = dec.cart
    ident = {"m2": m2, "lam": lam, "Ly": shape[0], "Lx": shape[1], "seed": seed, "tau": tau,
             "n_steps": n_steps, "integrator": integrator, "rng": _RNG}

    def fail(msg: str) -> UserError:
        dec.free()
        return UserError(msg)

    hist: dict[str, list[Any]] = {k: [] for k in _HISTORY}
    start_traj = 0
    global_phi: np.ndarray | None = None
    ckpt = spec.checkpoint
    if spec.restart and ckpt:
        state = None
        if dec.rank == 0 and os.path.exists(ckpt):
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
                raise fail(state["error"])
            global_phi = state["phi"]
            start_traj = int(state["trajectory"])
            for k in hist:
                hist[k] = list(state[k])
    if global_phi is None:
        global_phi = initial_field(seed, shape, spec.init, spec.init_scale)

    device = rank_device(cart)
    phi = jax.device_put(dec.block(global_phi), device)
    del global_phi
    n_force = hmc.force_evaluations(n_steps, integrator)
    depth = halo_depth(dec, n_force) if spec.halo == "trajectory" else 0
    ckpt_attrs = {"config": spec.model_dump(), "dims": list(dec.dims), "n_ranks": dec.size, "field_scale": scale,
                  "convention": convention, "transport": dec.transport, "halo_depth": depth}
    every = spec.checkpoint_every
    compile_s = run_s = ckpt_s = 0.0

    def checkpoint(done: int) -> None:
        g = dec.gather(np.asarray(phi))
        err: str | None = None
        failure: BaseException | None = None
        if dec.rank == 0:
            try:
                write_checkpoint(ckpt, g, done, ident, hist, ckpt_attrs)
            except Exception as exc:  # noqa: BLE001 - reported on every rank below, so none waits forever
                failure = exc
                err = f"checkpoint {ckpt}: cannot write ({' '.join(str(exc).split()) or type(exc).__name__})"
        err = cart.bcast(err, root=0)
        if err:
            if failure is not None and not isinstance(failure, OSError):
                dec.free()
                raise failure  # a bug, not the user's disk: keep the traceback (rank 0)
            raise fail(err)  # unwritable directory, full disk, ...

    # compile (a call with 0 trajectories: no messages), allowed its own long time before the first collective
    watchdog.expect(max(600.0, spec.watchdog_s))
    t0 = time.perf_counter()
    segment = _segment_program(dec, Phi4Action(m2, lam), seed, tau, n_steps, integrator, depth)
    jax.block_until_ready(segment(phi, np.int64(start_traj), np.int64(0)))  # compiles; 0 trajectories
    cart.Barrier()
    compile_s = time.perf_counter() - t0

    k = start_traj
    per_traj = None  # seconds per trajectory, from the last segment
    while k < n_traj:
        stop = n_traj if not (ckpt and every) else min(n_traj, (k // every + 1) * every)
        n = min(stop - k, SEGMENT, 1 if per_traj is None else max(1, int(_SEGMENT_TARGET_S / per_traj)))
        watchdog.expect(spec.watchdog_s + (per_traj or 0.0) * n)
        t0 = time.perf_counter()
        phi, out = segment(phi, np.int64(k), np.int64(n))
        out = jax.device_get(out)
        dt = time.perf_counter() - t0
        run_s += dt
        per_traj = dt / n
        for name, h in zip(_HISTORY, out, strict=True):
            hist[name].extend(np.asarray(h[:n]).tolist())
        k += n
        if ckpt and every and k % every == 0 and k < n_traj:
            t0 = time.perf_counter()
            checkpoint(k)
            ckpt_s += time.perf_counter() - t0

    watchdog.expect(spec.watchdog_s)
    if ckpt:
        t0 = time.perf_counter()
        checkpoint(n_traj)
        ckpt_s += time.perf_counter() - t0
    phi_final = dec.gather(np.asarray(phi))
    timings: dict[str, Any] = {"total_s": time.perf_counter() - t_start, "compile_s": compile_s, "run_s": run_s,
                               "md_s": run_s, "checkpoint_s": ckpt_s}
    if spec.profile:
        watchdog.expect(max(600.0, spec.watchdog_s))
        per = _profile(dec, Phi4Action(m2, lam), seed, phi, depth)
        n_run = max(n_traj - start_traj, 0)
        exchanges = 1 if depth else n_force + 2
        timings.update({"halo_s": per["halo"] * exchanges * n_run, "force_s": per["force"] * n_force * n_run,
                        "rng_s": per["momenta"] * n_run, "reduce_s": per["sum"] * n_run})
    # the slowest rank defines the wall time
    timings = {key: cart.allreduce(val, op=dec.MPI.MAX) for key, val in timings.items()}
    timings.update({"n_force": n_force * max(n_traj - start_traj, 0), "n_traj_run": max(n_traj - start_traj, 0)})
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
        "dims": dec.dims,
        "size": dec.size,
        "transport": dec.transport,
        "halo_depth": depth,
        "device": str(device),
        "timings": timings,
        "phi": phi_final,
    }
    result["acceptance"] = float(np.mean(result["accepted"])) if len(result["accepted"]) else float("nan")
    if spec.out and dec.rank == 0:
        _write_results(spec.out, result, ident, {**ckpt_attrs, "timings": timings})
    dec.free()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry (``python -m olrg_hpc.lattice.mpi_hmc``, one option per field of the spec); prints a
    JSON summary on rank 0. Bad input: one line ``mpi_hmc: error: ...`` from rank 0, exit code 2."""
    from mpi4py import MPI

    try:
        res = run_mpi_hmc(parse_argv(argv), MPI.COMM_WORLD)
    except UserError as exc:  # every rank fails alike: say it once
        if MPI.COMM_WORLD.Get_rank() == 0:
            print(f"mpi_hmc: error: {exc}", file=sys.stderr)
        return 2
    if MPI.COMM_WORLD.Get_rank() == 0:
        summary = {
            "size": res["size"],
            "dims": list(res["dims"]),
            "transport": res["transport"],
            "device": res["device"],
            "trajectory": res["trajectory"],
            "acceptance": res["acceptance"],
            "mean_dH": float(np.mean(res["dH"])) if len(res["dH"]) else None,
            "timings": res["timings"],
        }
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
