"""The MPI HMC config: ``init_scale`` is settable from the YAML, validated, and reaches the program."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from olrg_hpc.config import load_hmc_config
from olrg_hpc.errors import UserError
from olrg_hpc.lattice.mpi_hmc import initial_field
from olrg_hpc.store import read_shard

CONFIG = "program: mpi_hmc\nL: 4\nm2: -4.0\nlam: 8.0\nn_traj: 1\nseed: 3\nout: {out}\n"


def test_init_scale_validates(tmp_path):
    cfg = tmp_path / "hmc.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path / "o.h5"))
    assert load_hmc_config(cfg).init_scale == 0.5  # the program's default
    cfg.write_text(CONFIG.format(out=tmp_path / "o.h5") + "init_scale: 0.1\n")
    assert load_hmc_config(cfg).init_scale == 0.1


@pytest.mark.parametrize("value", ["0", "-0.5"])
def test_non_positive_init_scale_is_one_line(tmp_path, value):
    cfg = tmp_path / "hmc.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path / "o.h5") + f"init_scale: {value}\n")
    with pytest.raises(UserError) as exc:
        load_hmc_config(cfg)
    line = str(exc.value)
    assert "\n" not in line
    assert line.startswith(f"{cfg}: init_scale: ") and "greater than 0" in line, line


@pytest.mark.mpi
def test_init_scale_reaches_the_program(tmp_path):
    """A one-rank run with a vanishing trajectory length ends where it started: at the configured hot field."""
    out = tmp_path / "o.h5"
    cfg = tmp_path / "hmc.yaml"
    cfg.write_text(CONFIG.format(out=out) + "init_scale: 0.05\ntau: 1.0e-9\nn_steps: 1\n")
    run = subprocess.run([sys.executable, "-m", "olrg_hpc.cli", "hmc", str(cfg)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    # tau = 1e-9 moves the field by ~1e-9 if accepted (not at all if rejected); the two scales differ by 0.45 sigma
    np.testing.assert_allclose(read_shard(out)["phi"], initial_field(3, (4, 4), "hot", 0.05), atol=1e-6)
