"""Multi-process JAX under the dev SLURM: 2 srun tasks x 2 emulated CPU devices (jax.distributed, gloo) agree on
a global reduction, and their flow training follows the loss trajectory of one process with 4 devices, with
process 0 alone writing the result."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from olrg_hpc.config import SlurmProfile
from olrg_hpc.submit import jax_job

pytestmark = pytest.mark.slurm

TRAIN = ["-m", "olrg_hpc.flows.distributed", "--L", "4", "--m2", "-4", "--lam", "8", "--layers", "2",
         "--hidden", "4", "--batch", "16", "--steps", "20", "--sync-every", "10"]


def _losses(path: Path) -> np.ndarray:
    import h5py

    with h5py.File(path, "r") as f:
        assert int(f.attrs["step"]) == 20
        return np.asarray(f["losses"][()])


def test_two_processes_follow_the_single_process_trajectory(tmp_path: Path) -> None:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    single = subprocess.run([sys.executable, *TRAIN, "--out", str(tmp_path / "single.h5")], env=env,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    assert "process 0/1: 4 global devices" in single.stdout

    prof = SlurmProfile(kind="slurm", queue="debug", cores=1, memory="2GB", walltime="00:10:00")
    log = tmp_path / "flow-%j.out"
    cmd = " ".join([sys.executable, *TRAIN, "--out", str(tmp_path / "multi.h5")])
    (tmp_path / "job.sbatch").write_text(jax_job(prof, cmd, ntasks=2, log=log, cpu_devices_per_task=2))
    out = subprocess.run(["sbatch", "--parsable", str(tmp_path / "job.sbatch")], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
            break
        time.sleep(1)
    text = (tmp_path / f"flow-{job}.out").read_text()
    for p in (0, 1):  # the job script's first step: a global reduction over both processes' devices (0..255)
        assert f"process {p}/2: 2 local of 4 global cpu devices; global sum 32640 (ok)" in text, text
    assert "process 0/2: 4 global devices, 20 steps" in text, text
    assert text.count("wrote ") == 1, text  # process 1 writes nothing

    a, b = _losses(tmp_path / "single.h5"), _losses(tmp_path / "multi.h5")
    assert a.shape == b.shape == (20,)
    # float32 losses of O(100-1000); only the order of the gradient reduction differs (local vs gloo), so the
    # trajectories agree to a few float32 ulps per step, growing slowly through 20 Adam updates
    np.testing.assert_allclose(b, a, rtol=1e-4)
    assert a[-1] < a[0]  # it trains
