"""Halo exchange and global sums of a 2D block decomposition, inside jitted JAX programs (MPI).

The lattice ``phi[y, x]`` of extents ``(Ly, Lx)`` is split over a periodic Cartesian process grid
``dims = (Py, Px)`` (``MPI.Compute_dims``, ``Create_cart(reorder=False)``): the rank at grid coordinates
``(cy, cx)`` holds the block ``phi[cy ly : (cy + 1) ly, cx lx : (cx + 1) lx]``, ``ly = Ly / Py``,
``lx = Lx / Px``. A block's halos are the rows/columns one site beyond its faces
(:data:`olrg_hpc.lattice.hmc.Halos`): along ``y`` the first row of the ``+y`` neighbour (forward) and the
last row of the ``-y`` neighbour (backward), along ``x`` likewise with columns. Along an axis with one
process the halos are the block's own wrapped edges and no message is sent.

Two transports carry the messages, with identical results (they only move data):

* ``"mpi4jax"`` (``pip install mpi4jax``, see docs/phi4-hmc.md): ``mpi4jax.sendrecv`` / ``allreduce`` /
  ``bcast`` are XLA custom calls, so the exchange is part of the compiled program with no Python in the
  loop. On a GPU, mpi4jax hands device buffers to a CUDA-aware MPI (``MPI4JAX_USE_CUDA_MPI=1``) or stages
  them through host memory itself.
* ``"callback"``: the same messages through mpi4py inside ``jax.experimental.io_callback`` (host memory;
  each exchange is one host call, tens of microseconds). Needs nothing beyond the ``mpi`` extra; used when
  mpi4jax is not installed.

Global sums (:meth:`Decomposition.allsum`) are an ``Allreduce`` followed by a ``Bcast`` from rank 0, so
every rank holds bit-identical totals (and takes identical accept/reject decisions) whatever order the MPI
library sums in.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from olrg_hpc.jaxsetup import enable_x64
from olrg_hpc.lattice.hmc import Halos

enable_x64()

__all__ = ["TRANSPORTS", "default_transport", "Decomposition", "rank_device"]

TRANSPORTS = ("mpi4jax", "callback")

# message tags: (axis, forward) -> tag; "forward" halo = the neighbour's first slice, sent towards -axis
_TAGS = {(0, True): 100, (0, False): 101, (1, True): 102, (1, False): 103}


def default_transport() -> str:
    """``"mpi4jax"`` when it is importable, else ``"callback"``."""
    return "mpi4jax" if importlib.util.find_spec("mpi4jax") is not None else "callback"


def rank_device(comm: Any) -> jax.Device:
    """The JAX device of this rank: ranks on one node (``MPI.COMM_TYPE_SHARED``) take the node's local
    devices round-robin (one GPU per rank when there are as many GPUs as ranks; the CPU otherwise)."""
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    local_rank = node.Get_rank()
    node.Free()
    devices = jax.local_devices()
    return devices[local_rank % len(devices)]


class Decomposition:
    """One rank's block of a periodic ``(Ly, Lx)`` lattice on a Cartesian grid, with jit-traceable
    :meth:`halos` and :meth:`allsum` (module docstring).

    ``dims``: the process grid, or ``None`` / zeros to let ``MPI.Compute_dims`` choose; ``ValueError`` when
    it does not fit the communicator or does not divide the lattice.
    """

    def __init__(self, comm: Any, shape: tuple[int, int], dims: Sequence[int] | None = None,
                 transport: str | None = None):
        from mpi4py import MPI

        self.MPI = MPI
        self.shape = (int(shape[0]), int(shape[1]))
        size = comm.Get_size()
        req = [int(d) for d in dims] if dims else [0, 0]
        if len(req) != 2 or any(d < 0 for d in req):
            raise ValueError(f"dims must be two non-negative integers (0 = choose), got {list(dims or [])}")
        if all(req) and req[0] * req[1] != size:
            raise ValueError(f"dims {req} hold {req[0] * req[1]} ranks, but {size} are running")
        if any(req) and size % max(1, req[0] * req[1]):
            raise ValueError(f"dims {req} do not fit {size} ranks")
        self.dims = tuple(MPI.Compute_dims(size, req))
        if self.shape[0] % self.dims[0] or self.shape[1] % self.dims[1]:
            raise ValueError(f"lattice {list(self.shape)} is not divisible by the process grid {list(self.dims)}")
        self.transport = transport or default_transport()
        if self.transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, got {self.transport!r}")
        self.cart = comm.Create_cart(list(self.dims), periods=[True, True], reorder=False)
        self.rank = self.cart.Get_rank()
        self.size = size
        self.coords = tuple(self.cart.Get_coords(self.rank))
        self.ly, self.lx = self.shape[0] // self.dims[0], self.shape[1] // self.dims[1]
        self.y0, self.x0 = self.coords[0] * self.ly, self.coords[1] * self.lx
        # (source, dest) of a shift by +1: the -axis and +axis neighbours
        self.neighbours = (self.cart.Shift(0, 1), self.cart.Shift(1, 1))

    # ------------------------------------------------------------------ host side
    def block(self, global_field: np.ndarray) -> np.ndarray:
        """This rank's block of a global field."""
        return np.ascontiguousarray(global_field[self.y0 : self.y0 + self.ly, self.x0 : self.x0 + self.lx])

    def global_sites(self) -> np.ndarray:
        """Global flat site index ``y Lx + x`` of every site of the block, shape ``(ly, lx)``, uint32."""
        y = np.arange(self.y0, self.y0 + self.ly, dtype=np.uint64)[:, None]
        x = np.arange(self.x0, self.x0 + self.lx, dtype=np.uint64)[None, :]
        return (y * np.uint64(self.shape[1]) + x).astype(np.uint32)

    def gather(self, local: np.ndarray) -> np.ndarray | None:
        """The global field on rank 0 (``None`` elsewhere)."""
        blocks = self.cart.gather((self.coords, np.ascontiguousarray(local)), root=0)
        if self.rank != 0:
            return None
        out = np.empty(self.shape)
        for (cy, cx), blk in blocks:
            out[cy * self.ly : (cy + 1) * self.ly, cx * self.lx : (cx + 1) * self.lx] = blk
        return out

    def free(self) -> None:
        self.cart.Free()

    # ------------------------------------------------------------------ inside jit
    def halos(self, phi: jax.Array) -> Halos:
        """Halos of the block ``phi`` (shape ``(ly, lx)``): ``((y forward, y backward), (x forward,
        x backward))`` as :data:`~olrg_hpc.lattice.hmc.Halos`; ``None`` entries (one process along that
        axis) mean the periodic wrap of the block itself."""
        sends: list[tuple[int, bool, jax.Array, int, int]] = []  # (axis, forward, buffer, source, dest)
        for axis in (0, 1):
            if self.dims[axis] == 1:
                continue
            lo, hi = self.neighbours[axis]  # -axis and +axis neighbours
            first = jax.lax.index_in_dim(phi, 0, axis=axis, keepdims=False)
            last = jax.lax.index_in_dim(phi, phi.shape[axis] - 1, axis=axis, keepdims=False)
            sends.append((axis, True, first, hi, lo))  # my first slice -> -axis; receive +axis's first
            sends.append((axis, False, last, lo, hi))  # my last slice -> +axis; receive -axis's last
        received = self._sendrecv(sends) if sends else []
        got = {(a, f): r for (a, f, *_), r in zip(sends, received, strict=True)}
        out: list[tuple[Any, Any]] = []
        for axis in (0, 1):
            pair = []
            for forward in (True, False):
                r = got.get((axis, forward))
                pair.append(None if r is None else jnp.expand_dims(r, axis))
            out.append((pair[0], pair[1]))
        return tuple(out)

    def depth(self, w: int) -> tuple[int, int]:
        """Halo depth along each axis for an extension by ``w`` sites: ``w`` along a split axis, 0 along an axis
        with one process (the block is the whole periodic extent there)."""
        return tuple(w if self.dims[a] > 1 else 0 for a in (0, 1))

    def extend(self, x: jax.Array, w: int) -> jax.Array:
        """The block ``x`` (shape ``(..., ly, lx)``) with ``w`` rows/columns of its neighbours on each side of
        every split axis: shape ``(..., ly + 2 wy, lx + 2 wx)`` (:meth:`depth`), identical to the same window
        cut from the global field with periodic wrap. One exchange per split axis (two messages), ``y`` first,
        then ``x`` on the ``y``-extended block, so that the corners come from the diagonal neighbours.
        Needs ``w <= ly`` (``lx``) along a split axis: the halo comes from the adjacent rank only."""
        for axis, w_a in zip((-2, -1), self.depth(w), strict=True):
            if w_a == 0:
                continue
            if w_a > x.shape[axis]:
                raise ValueError(f"halo depth {w_a} exceeds the block extent {x.shape[axis]} along axis {axis + 2}")
            lo, hi = self.neighbours[axis + 2]
            first = jax.lax.slice_in_dim(x, 0, w_a, axis=axis)
            last = jax.lax.slice_in_dim(x, x.shape[axis] - w_a, x.shape[axis], axis=axis)
            fwd, bwd = self._sendrecv([(axis + 2, True, first, hi, lo), (axis + 2, False, last, lo, hi)])
            x = jnp.concatenate([bwd, x, fwd], axis=axis)
        return x

    def allsum(self, x: jax.Array) -> jax.Array:
        """Sum of ``x`` (float64 vector) over all ranks, bit-identical on every rank."""
        if self.size == 1:
            return x
        if self.transport == "mpi4jax":
            import mpi4jax

            tot = mpi4jax.allreduce(x, op=self.MPI.SUM, comm=self.cart)
            return mpi4jax.bcast(tot, root=0, comm=self.cart)
        return io_callback(self._host_allsum, jax.ShapeDtypeStruct(x.shape, x.dtype), x,
                                            ordered=True)

    # ------------------------------------------------------------------ transports
    def _sendrecv(self, sends: list[tuple[int, bool, jax.Array, int, int]]) -> list[jax.Array]:
        if self.transport == "mpi4jax":
            import mpi4jax

            return [mpi4jax.sendrecv(buf, buf, source=src, dest=dst, sendtag=_TAGS[(a, f)],
                                     recvtag=_TAGS[(a, f)], comm=self.cart)
                    for a, f, buf, src, dst in sends]
        shapes = [jax.ShapeDtypeStruct(buf.shape, buf.dtype) for _, _, buf, _, _ in sends]
        meta = [(_TAGS[(a, f)], src, dst) for a, f, _, src, dst in sends]
        host: Callable[..., list[np.ndarray]] = lambda *bufs: self._host_sendrecv(meta, bufs)  # noqa: E731
        return list(io_callback(host, shapes, *[s[2] for s in sends], ordered=True))

    def _host_sendrecv(self, meta: list[tuple[int, int, int]], bufs: Sequence[Any]) -> list[np.ndarray]:
        recv = [np.empty_like(np.asarray(b)) for b in bufs]
        reqs = [self.cart.Irecv(r, source=src, tag=tag) for r, (tag, src, _) in zip(recv, meta, strict=True)]
        reqs += [self.cart.Isend(np.ascontiguousarray(b), dest=dst, tag=tag)
                 for b, (tag, _, dst) in zip(bufs, meta, strict=True)]
        self.MPI.Request.Waitall(reqs)
        return recv

    def _host_allsum(self, x: Any) -> np.ndarray:
        x = np.ascontiguousarray(x)
        tot = np.empty_like(x)
        self.cart.Allreduce(x, tot, op=self.MPI.SUM)
        self.cart.Bcast(tot, root=0)
        return tot
