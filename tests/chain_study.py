"""The small chain_sweep study that the command-line, fault and SLURM tests run, and the command line itself.

ED (and free fermions) of open TFIM chains: every task takes well under a second, the answers are exact, and two
runs with the same seed give identical study files, which is what those tests compare.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

#: ``olrg-hpc`` as the test session's interpreter runs it
EXE = [sys.executable, "-m", "olrg_hpc.cli"]


def chain_study(name: str, *, sizes: Sequence[int] = (6, 8), h: Sequence[float] = (0.5, 1.0, 2.0),
                methods: Sequence[str] = ("ed", "free_fermion"), t_max: float = 3.0, n_times: int = 21,
                seed: int = 7, output: Path | None = None) -> str:
    """The YAML text of a chain_sweep study: one TFIM sweep (J = 1) over ``sizes`` x ``h``."""
    out = f"output: {output}\n" if output is not None else ""
    return (f"study: {name}\nworkflow: chain_sweep\nseed: {seed}\n{out}params:\n  t_max: {t_max}\n"
            f"  n_times: {n_times}\n  sweeps:\n    - model: tfim\n      n_sites: {list(sizes)}\n"
            f"      couplings: {{J: [1.0], h: {list(h)}}}\n      methods: [{', '.join(methods)}]\n")


def run_cli(args: Sequence[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``olrg-hpc ARGS`` in ``cwd``, its output captured."""
    return subprocess.run([*EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


class BackgroundRun:
    """``olrg-hpc run CONFIG --cluster PROFILE --output st --no-progress`` in ``cwd``, in a session of its own (as a
    terminal runs a foreground job), its standard error collected line by line while it runs (``err_lines``)."""

    def __init__(self, config: Path, profile: Path, cwd: Path) -> None:
        self.proc = subprocess.Popen([*EXE, "run", str(config), "--cluster", str(profile), "--output", "st",
                                      "--no-progress"], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
        self.err_lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.err_lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def interrupt(self, timeout: float = 120) -> tuple[str, str, float]:
        """Ctrl-C to the whole process group (driver and workers), as a terminal sends it; waits for the end and
        returns ``(stdout, stderr, seconds from the signal to the exit)``."""
        t0 = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGINT)
        out = self.proc.stdout.read()
        self.proc.wait(timeout=timeout)
        took = time.monotonic() - t0
        self._reader.join(timeout=10)
        return out, "".join(self.err_lines), took
