"""Launching MPI programs: ``srun --mpi=pmi2 -n N`` inside a SLURM allocation, ``mpiexec -n N`` elsewhere.

The ``mpich`` wheel (``pip install '.[mpi]'``) puts ``mpiexec`` next to the Python interpreter, which is
not on PATH when a virtual environment is used without activating it: we look there too.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from olrg_hpc.errors import UserError


def find_mpiexec() -> str | None:
    """Path of ``mpiexec`` beside this interpreter (the mpich wheel), else on PATH, else None."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.exists():
        return str(beside)
    return shutil.which("mpiexec")


def mpi_launcher(n_ranks: int, *, use_srun: bool | None = None) -> list[str]:
    """The command prefix that starts ``n_ranks`` MPI processes here.

    ``use_srun=None`` picks srun when running inside a SLURM allocation (``SLURM_JOB_ID`` set and srun on
    PATH), which places ranks on the allocated nodes through PMI-2; otherwise mpiexec.
    """
    if n_ranks < 1:
        raise UserError(f"MPI ranks: need at least 1 (got {n_ranks})")
    if use_srun is None:
        use_srun = bool(os.environ.get("SLURM_JOB_ID")) and shutil.which("srun") is not None
    if use_srun:
        return ["srun", "--mpi=pmi2", "-n", str(n_ranks)]
    exe = find_mpiexec()
    if exe is None:
        raise UserError("mpiexec: not found beside the Python interpreter or on PATH (pip install '.[mpi]')")
    return [exe, "-n", str(n_ranks)]
