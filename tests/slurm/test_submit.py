"""Submit and walk away: `olrg-hpc submit` renders a job script, sbatch runs it, results appear.

Also the bad-input lines of the SLURM path: a partition that does not exist, no sbatch on PATH.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from chain_study import EXE, chain_study

pytestmark = pytest.mark.slurm



PROFILE = ("kind: slurm\nqueue: debug\ncores: 1\nmemory: 1GB\nwalltime: '00:10:00'\njobs: 1\ninterface: lo\n"
           "job_name: {name}\ndashboard_address: ':0'\n")


def _wait_job(job: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job], capture_output=True, text=True, timeout=30)
        if not out.stdout.strip():
            return
        time.sleep(1)
    subprocess.run(["scancel", job], timeout=30)
    raise AssertionError(f"job {job} still running after {timeout} s")


def _submit(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, "submit", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_submit_study_runs_driver_in_allocation(tmp_path):
    (tmp_path / "s.yaml").write_text(
        chain_study("submitted", h=(1.0,), t_max=1.0, n_times=11, seed=5, output=tmp_path / "study"))
    (tmp_path / "p.yaml").write_text(PROFILE.format(name="olrg-submit-test"))
    dry = _submit(["s.yaml", "--cluster", "p.yaml", "--dry-run"], tmp_path)
    assert dry.returncode == 0 and "#SBATCH --partition=debug" in dry.stdout and "olrg_hpc.cli run" in dry.stdout
    out = _submit(["s.yaml", "--cluster", "p.yaml"], tmp_path)
    assert out.returncode == 0, out.stderr
    job = out.stdout.split("submitted job ")[1].split()[0]
    _wait_job(job)
    log = (tmp_path / "study" / f"driver-{job}.out").read_text()
    assert "SLURMCluster: 1 worker jobs submitted" in log and "dashboard from your laptop: ssh -N " in log, log
    with h5py.File(tmp_path / "study" / "study.h5") as f:
        assert np.max(f["tasks/collect-tfim/ed_vs_ff_max_diff"][()]) < 1e-10


@pytest.mark.mpi
def test_submit_mpi_hmc_with_srun(tmp_path):
    (tmp_path / "h.yaml").write_text(f"program: mpi_hmc\nL: 8\nm2: -4.0\nlam: 8.0\nn_traj: 5\nseed: 2\nntasks: 4\n"
                                     f"out: {tmp_path}/hmc/chain.h5\n")
    (tmp_path / "p.yaml").write_text(PROFILE.format(name="olrg-submit-hmc"))
    out = _submit(["h.yaml", "--cluster", "p.yaml"], tmp_path)
    assert out.returncode == 0, out.stderr
    job = out.stdout.split("submitted job ")[1].split()[0]
    _wait_job(job)
    log = (tmp_path / "hmc" / f"mpi_hmc-{job}.out").read_text()
    assert "4 ranks as [2, 2], 5 trajectories" in log, log
    with h5py.File(tmp_path / "hmc" / "chain.h5") as f:
        assert f["dH"].shape == (5,) and f.attrs["complete"]


def test_missing_partition_is_one_line_and_submits_nothing(tmp_path):
    (tmp_path / "s.yaml").write_text(
        chain_study("submitted", h=(1.0,), t_max=1.0, n_times=11, seed=5, output=tmp_path / "study"))
    (tmp_path / "p.yaml").write_text(PROFILE.format(name="olrg-nopart").replace("queue: debug", "queue: nosuch"))
    for cmd in (["submit", "s.yaml", "--cluster", "p.yaml"], ["run", "s.yaml", "--cluster", "p.yaml"]):
        out = subprocess.run([*EXE, *cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2
        assert "olrg-hpc: error: queue: partition 'nosuch' does not exist (sinfo lists: debug, cpu, gpu)" in out.stderr
        assert "Traceback" not in out.stderr
    q = subprocess.run(["squeue", "-h", "-n", "olrg-nopart"], capture_output=True, text=True, timeout=30)
    assert q.stdout.strip() == ""
