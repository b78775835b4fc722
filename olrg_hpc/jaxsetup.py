"""One place that configures JAX for the physics code.

Physics routines are checked against exact answers to 1e-10, so they run in float64. Every module that
uses JAX numerics calls :func:`enable_x64` at import; nothing else in the package touches jax.config.
:func:`blas_single_thread` keeps LAPACK calls made from inside XLA single-threaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


def enable_x64() -> None:
    """Switch JAX to double precision (idempotent)."""
    import jax

    jax.config.update("jax_enable_x64", True)


@contextmanager
def blas_single_thread() -> Iterator[None]:
    """Run the enclosed JAX work with one OpenBLAS/MKL thread (restored on exit).

    XLA on CPU calls LAPACK (``eigh``, ``qr``, triangular solves) from its own thread pool, and on the small
    matrices of the OLRG loss (``D <= 64``) a multi-threaded BLAS only competes with XLA's threads for the same
    cores: with both cores of a 2-core machine busy, a jitted 32 x 32 complex ``eigh`` took 5 ms instead of
    0.16 ms, and even idle the N = 64 loss gradient takes 1.18 (D = 16) and 1.25 (D = 32) times as long with the
    default threads (``benchmarks/bench_olrg.py --formulations``). Dask workers already
    start with ``OPENBLAS_NUM_THREADS=1`` (distributed's ``pre-spawn-environ``); this covers direct use.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield
