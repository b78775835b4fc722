"""The MPI HMC run's one spec (olrg_hpc.lattice.mpi_hmc_spec): the config, the module's command line and the
scaling study's command share its defaults and checks; ``init_scale`` is settable from the YAML, validated, and
reaches the program."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from olrg_hpc.config import MPIHMCConfig, load_hmc_config
from olrg_hpc.errors import UserError
from olrg_hpc.lattice.mpi_hmc import initial_field
from olrg_hpc.lattice.mpi_hmc_spec import MPIHMCSpec, parse_argv, parser, to_argv
from olrg_hpc.store import read_shard

CONFIG = "program: mpi_hmc\nL: 4\nm2: -4.0\nlam: 8.0\nn_traj: 1\nseed: 3\nout: {out}\n"


def test_config_command_line_and_spec_share_their_defaults(tmp_path):
    """One set of defaults: a minimal config, a minimal command line and the spec itself agree on every key."""
    cfg = tmp_path / "hmc.yaml"
    cfg.write_text(CONFIG.format(out=tmp_path / "o.h5"))
    from_config = load_hmc_config(cfg).spec()
    from_argv = parse_argv(["--L", "4", "--m2", "-4.0", "--lam", "8.0", "--n-traj", "1", "--seed", "3", "--out",
                            str(tmp_path / "o.h5")])
    direct = MPIHMCSpec(L=4, m2=-4.0, lam=8.0, n_traj=1, seed=3, out=str(tmp_path / "o.h5"))
    assert from_config == from_argv == direct
    assert set(MPIHMCConfig.model_fields) - set(MPIHMCSpec.model_fields) == {"program", "ntasks"}
    options = {a.dest for a in parser()._actions if a.dest != "help"}
    assert options == set(MPIHMCSpec.model_fields)  # every key is an option, nothing else


@pytest.mark.parametrize("spec", [
    MPIHMCSpec(L=8, m2=-4.0, lam=8.0, n_traj=6),
    MPIHMCSpec(L=[8, 12], beta=0.576, lam=0.5, n_traj=3, seed=2**64 - 1, tau=0.1 + 0.2, integrator="omelyan",
               dims=[2, 3], checkpoint="a b/c.h5", checkpoint_every=2, restart=False, profile=True, init="cold",
               transport="callback", watchdog_s=5.0),
], ids=["minimal", "every-key"])
def test_to_argv_reads_back_as_the_same_spec(spec):
    """The command line a launcher writes (scaling.mpi_hmc_task) is the spec, floats to the last bit."""
    assert parse_argv(to_argv(spec)) == spec


@pytest.mark.parametrize("argv, says", [
    (["--L", "8", "--m2", "-4", "--lam", "8"], "n_traj: required, not given"),
    (["--L", "8", "--lam", "8", "--n-traj", "2"], "give exactly one of m2, beta, kappa (got none)"),
    (["--L", "8", "--beta", "0", "--lam", "8", "--n-traj", "2"], "beta: Input should be greater than 0 (got 0)"),
    (["--L", "1", "--m2", "1", "--lam", "8", "--n-traj", "2"], "L: an extent >= 2 or [Ly, Lx], the volume below"),
    (["--L", "8", "--m2", "x", "--lam", "8", "--n-traj", "2"], "m2: Input should be a valid number"),
    (["--L", "8", "--m2", "1", "--lam", "-1", "--n-traj", "2"], "lam: Input should be greater than or equal to 0"),
    (["--L", "8", "--m2", "1", "--lam", "1", "--n-traj", "2", "--seed", "-1"], "seed: Input should be greater"),
])
def test_bad_command_lines_are_one_line_naming_the_key(argv, says):
    with pytest.raises(UserError) as exc:
        parse_argv(argv)
    assert "\n" not in str(exc.value) and str(exc.value).startswith(says), str(exc.value)


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
