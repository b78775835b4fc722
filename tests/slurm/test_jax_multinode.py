"""Multi-process JAX under the dev SLURM: 2 processes x 2 emulated CPU devices see 4 global devices and
agree on a global reduction (sum 0..255 = 32640)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from olrg_hpc.config import SlurmProfile
from olrg_hpc.submit import jax_job

pytestmark = pytest.mark.slurm


def test_two_processes_two_devices_each(tmp_path):
    prof = SlurmProfile(kind="slurm", queue="debug", cores=1, memory="2GB", walltime="00:10:00")
    log = tmp_path / "jax-%j.out"
    script = jax_job(prof, f"{sys.executable} -c 'import jax; print(\"ok\")'", ntasks=2, log=log,
                     cpu_devices_per_task=2)
    (tmp_path / "job.sbatch").write_text(script)
    out = subprocess.run(["sbatch", "--parsable", str(tmp_path / "job.sbatch")], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    job = out.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if not subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True).stdout.strip():
            break
        time.sleep(1)
    text = (tmp_path / f"jax-{job}.out").read_text()
    for p in (0, 1):
        assert f"process {p}/2: 2 local of 4 global cpu devices; global sum 32640 (ok)" in text, text
