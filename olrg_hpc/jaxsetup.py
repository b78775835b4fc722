"""One place that configures JAX for the physics code.

Physics routines are checked against exact answers to 1e-10, so they run in float64. Every module that
uses JAX numerics calls :func:`enable_x64` at import; nothing else in the package touches jax.config.
"""

from __future__ import annotations


def enable_x64() -> None:
    """Switch JAX to double precision (idempotent)."""
    import jax

    jax.config.update("jax_enable_x64", True)
