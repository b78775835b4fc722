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
    PATH), which places ranks on the allocated nodes through PMI-2 (and binds them as the cluster's task
    affinity says); otherwise mpiexec, which binds each rank to a core of its own when there are enough
    (``-bind-to core``: a rank that migrates between cores, or shares one with a rank spinning in MPI, runs at
    a fraction of its speed; the MPI HMC benchmark measured 1.6x on two ranks).
    """
    if n_ranks < 1:
        raise UserError(f"MPI ranks: need at least 1 (got {n_ranks})")
    if use_srun is None:
        use_srun = bool(os.environ.get("SLURM_JOB_ID")) and shutil.which("srun") is not None
    if use_srun:  # --kill-on-bad-exit: a rank that fails (or a Watchdog that fires) ends the whole step
        return ["srun", "--mpi=pmi2", "--kill-on-bad-exit=1", "-n", str(n_ranks)]
    exe = find_mpiexec()
    if exe is None:
        raise UserError("mpiexec: not found beside the Python interpreter or on PATH (pip install '.[mpi]')")
    bind = ["-bind-to", "core"] if n_ranks <= len(os.sched_getaffinity(0)) else []
    return [exe, "-n", str(n_ranks), *bind]


class Watchdog:
    """Ends this MPI process when the run makes no progress: a rank that is stopped (SIGSTOP), hung or lost
    leaves the others waiting inside MPI calls forever, since MPI has no timeouts of its own.

    Used as a context manager around the run; :meth:`expect` announces how long the next step may take
    (``seconds``); when that deadline, plus ``stagger`` seconds per rank (at most 5 ranks' worth, so rank 0
    fires first and speaks for all), passes without the next :meth:`expect`, a thread prints one line
    ``<prefix>: error: rank R: no progress for S s ...`` and ends the process with exit code 3 (``os._exit``:
    the main thread may be blocked inside MPI). The launcher then ends the other ranks: ``mpiexec`` (hydra)
    cleans up after any rank that exits without finalising; ``srun`` needs ``--kill-on-bad-exit=1``
    (:func:`mpi_launcher` and ``slurm/mpi_hmc.sbatch`` pass it). A run therefore ends within
    ``seconds + 5 stagger`` (+ the launcher's cleanup) of the last progress.
    """

    EXIT_CODE = 3

    def __init__(self, rank: int, seconds: float, prefix: str = "olrg-hpc", stagger: float = 2.0,
                 poll: float = 0.2):
        import threading
        import time

        self._time = time.monotonic
        self._sleep = time.sleep
        self.rank, self.prefix, self.poll = rank, prefix, poll
        self.delay = stagger * min(rank, 5)
        self._allowed = float(seconds)
        self._deadline = self._time() + self._allowed + self.delay
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mpi-watchdog", daemon=True)

    def expect(self, seconds: float) -> None:
        """Progress was made; the next may take up to ``seconds``."""
        self._allowed = float(seconds)
        self._deadline = self._time() + self._allowed + self.delay

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            if self._time() > self._deadline:
                print(f"{self.prefix}: error: rank {self.rank}: no progress for {self._allowed + self.delay:.0f} s "
                      "(another rank stopped, hung or was lost); ending the run", file=sys.stderr, flush=True)
                os._exit(self.EXIT_CODE)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
