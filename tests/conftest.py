"""Shared pytest set-up.

Eight emulated CPU devices for JAX (set before jax is first imported), and skip logic for the
`slurm` and `mpi` markers so that a machine without those components skips with a reason instead of failing.
Under pytest-xdist (``-n auto --dist loadgroup``, the default in pyproject.toml) each test file runs on one worker
(its module fixtures are built once), and every `slurm` test shares one group: they run one after another, so
one test's jobs never wait behind another's on the single dev node.

XLA compile time dominates the default suite (hundreds of small programs, each run for a few steps): there XLA's
CPU backend compiles at ``--xla_backend_optimization_level=0`` (the suite takes ~460 s instead of ~580 s on two
cores; the numerics are IEEE either way, and the tests' tolerances do not change). A run that selects the slow
tests keeps full optimisation, since they run long programs (the OLRG training test takes 124 s instead of 93 s
at level 0). XLA_FLAGS set by the caller are left alone. JAX's persistent compilation cache is on, in one folder
per user shared by the xdist workers and every process a test starts (CLI runs, Dask and SLURM workers inherit
the environment), so a rerun loads its kernels from disk (~320 s); the cache is keyed on the program, XLA flags,
devices and jax version, and cannot change a result.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"olrg-hpc-jax-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest  # noqa: E402


def pytest_configure(config: pytest.Config) -> None:
    # before any test module imports jax; xdist workers inherit the controller's environment
    if "XLA_FLAGS" not in os.environ:
        fast = config.getoption("markexpr") == "not slow"  # the default suite (addopts), not `-m slow`
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8" + (
            " --xla_backend_optimization_level=0" if fast else "")


def _slurm_reason() -> str | None:
    if shutil.which("sinfo") is None:
        return "no SLURM client on PATH (start one with: bash slurm/dev-cluster/start.sh)"
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=12)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"sinfo failed: {exc}"
    if out.returncode != 0:
        return f"no SLURM controller reachable (sinfo: {out.stderr.strip()[:120]})"
    if not any(s.startswith(("idle", "mix", "alloc")) for s in out.stdout.split()):
        return f"SLURM node not usable (state: {out.stdout.strip()})"
    return None


def _mpi_reason() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py not installed (pip install '.[mpi]')"
    from olrg_hpc.mpi import find_mpiexec

    if find_mpiexec() is None:
        return "no mpiexec beside the interpreter or on PATH (pip install '.[mpi]' provides one via the mpich wheel)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reasons: dict[str, str | None] = {}
    for item in items:
        group = "slurm" if "slurm" in item.keywords else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
        for marker, probe in (("slurm", _slurm_reason), ("mpi", _mpi_reason)):
            if marker in item.keywords:
                if marker not in reasons:
                    reasons[marker] = probe()
                if reasons[marker]:
                    item.add_marker(pytest.mark.skip(reason=reasons[marker]))
