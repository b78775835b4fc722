"""`mpiexec -n N olrg-hpc hmc CONFIG`: the CLI path of the MPI HMC, its resume, and its one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from olrg_hpc.mpi import mpi_launcher

pytestmark = pytest.mark.mpi

CONFIG = """\
program: mpi_hmc
L: 8
m2: -4.0
lam: 8.0
n_traj: {n}
seed: 4
n_steps: 8
checkpoint: {d}/ckpt.h5
out: {d}/chain.h5
"""


def _hmc(ranks: int, cfg: Path) -> subprocess.CompletedProcess:
    cmd = [*mpi_launcher(ranks, use_srun=False), sys.executable, "-m", "olrg_hpc.cli", "hmc", str(cfg)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_resumed_run_on_other_ranks_equals_straight_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    (tmp_path / "a.yaml").write_text(CONFIG.format(n=4, d=a))
    out = _hmc(2, tmp_path / "a.yaml")
    assert out.returncode == 0, out.stderr
    assert "2 ranks as [2, 1], 4 trajectories" in out.stdout
    (tmp_path / "a.yaml").write_text(CONFIG.format(n=8, d=a))
    assert _hmc(4, tmp_path / "a.yaml").returncode == 0  # resumes from the checkpoint: 4 more
    (tmp_path / "b.yaml").write_text(CONFIG.format(n=8, d=b))
    assert _hmc(1, tmp_path / "b.yaml").returncode == 0
    with h5py.File(a / "chain.h5") as ra, h5py.File(b / "chain.h5") as rb:
        assert ra["dH"].shape == (8,) and ra.attrs["trajectory"] == 8
        np.testing.assert_allclose(ra["phi"][()], rb["phi"][()], atol=1e-12)  # decomposition-independent chain
        np.testing.assert_allclose(ra["dH"][()], rb["dH"][()], atol=1e-12)
    with h5py.File(a / "ckpt.h5") as ck:
        assert ck.attrs["trajectory"] == 8 and ck.attrs["dims"] == "[2, 2]"


def test_corrupt_checkpoint_says_it_once_naming_the_file(tmp_path):
    (tmp_path / "c.yaml").write_text(CONFIG.format(n=4, d=tmp_path))
    (tmp_path / "ckpt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))  # an HDF5 signature, then nothing
    out = _hmc(2, tmp_path / "c.yaml")
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("olrg-hpc: error:") == 1 and "Traceback" not in out.stderr, out.stderr
    assert f"checkpoint {tmp_path / 'ckpt.h5'}:" in out.stderr and not (tmp_path / "chain.h5").exists()


def test_bad_config_says_it_once(tmp_path):
    (tmp_path / "bad.yaml").write_text(CONFIG.format(n=4, d=tmp_path).replace("m2: -4.0", "m2: -4.0\nbeta: 0.5"))
    out = _hmc(2, tmp_path / "bad.yaml")
    assert out.returncode != 0
    assert out.stderr.count("olrg-hpc: error:") == 1 and "give exactly one of m2, beta, kappa" in out.stderr


@pytest.mark.parametrize("edit, key", [
    (("m2: -4.0", "m2: .nan"), "m2: a finite number (got nan)"),
    (("lam: 8.0", "lam: .inf"), "lam: a finite number (got inf)"),
    (("n_steps: 8", "n_steps: 8\ndims: [0, 1]"), "dims.0: Input should be greater than or equal to 1"),
    (("n_steps: 8", "n_steps: 8\ndims: [-1, 2]"), "dims.0: Input should be greater than or equal to 1"),
], ids=["nan-m2", "inf-lam", "dims-0", "dims-negative"])
def test_non_finite_couplings_and_bad_dims_are_one_line_exit_2(tmp_path, edit, key):
    """Refused before anything runs: one line naming the file and the key, exit 2, no results file."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(CONFIG.format(n=4, d=tmp_path).replace(*edit))
    out = _hmc(2, cfg)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and f"olrg-hpc: error: {cfg}: {key}" in lines[0], out.stderr
    assert not (tmp_path / "chain.h5").exists()
