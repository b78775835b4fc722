"""Wall time of JAX work with compilation separated out.

JAX compiles on first call, so a timed block mixes compilation with the run. :func:`compile_seconds` counts the
seconds JAX reports for tracing, lowering and compiling (``jax.monitoring`` duration events) and
:func:`compile_clock` subtracts them from a block's wall time: ``run_s = wall_s - compile_s``. Samplers and
trainings report ``run_s`` as their cost, so that a cost does not depend on whether the process had compiled the
same function before.

JAX reports a compilation in the thread that compiles, and the counter is kept per thread: a Dask worker with
several threads runs several tasks at once, and one task's clock must not subtract another's compilation (with a
shared counter a task's ``run_s`` could read 0).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jax

__all__ = ["compile_seconds", "compile_clock"]

_COMPILE_EVENTS = frozenset({"/jax/core/compile/jaxpr_trace_duration",
                             "/jax/core/compile/jaxpr_to_mlir_module_duration",
                             "/jax/core/compile/backend_compile_duration"})
_compile_total: defaultdict[int, float] = defaultdict(float)  # by thread ident
_listening = [False]
_register = threading.Lock()


def _on_duration(event: str, duration: float, **_: Any) -> None:
    if event in _COMPILE_EVENTS:
        _compile_total[threading.get_ident()] += duration


def compile_seconds() -> float:
    """Seconds JAX has spent compiling in the calling thread since the first call (monotone counter)."""
    with _register:
        if not _listening[0]:
            jax.monitoring.register_event_duration_secs_listener(_on_duration)
            _listening[0] = True
    return _compile_total[threading.get_ident()]


@contextmanager
def compile_clock() -> Iterator[dict[str, float]]:
    """``with compile_clock() as t: ...`` fills ``t`` with ``wall_s``, ``compile_s``, ``run_s`` of the block
    (the block must wait for its results, e.g. ``jax.block_until_ready``)."""
    out: dict[str, float] = {}
    c0 = compile_seconds()
    t0 = time.perf_counter()
    try:
        yield out
    finally:
        wall = time.perf_counter() - t0
        comp = compile_seconds() - c0
        out.update(wall_s=wall, compile_s=comp, run_s=max(wall - comp, 0.0))
