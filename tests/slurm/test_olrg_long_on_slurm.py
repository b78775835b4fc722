"""The long-window OLRG study (``configs/olrg_long.yaml``) end to end on the dev SLURM, in a reduced form: growth past
the exact blocks, trained on consistency in environments, beats the exact small block alone by a wide margin."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import h5py
import pytest
import yaml

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def _max_err(f: h5py.File, task: str, window: float) -> float:
    g = f["tasks"][task]
    t = g["times"][()]
    return float(g["abs_err"][()][t <= window + 1e-9].max())


def test_long_window_study_grows_past_the_exact_blocks_on_slurm(tmp_path: Path) -> None:
    """The shipped config with D = 8 (exact 3-site start), exact targets on the blocks up to 4 sites only, the
    window [0, 2] (light cone: 9 sites) and 600 steps, on two SLURM worker jobs, judged against N = 64 (free fermions).

    The exact 4-site chain alone is off by 5.9e-2 on [0, 2], the exact 9-site chain by 3e-9. The map grown from the
    4-site block to 9 sites on the consistency term in environments (exact chains of 1, 2, 3 sites) was off by
    about 1e-2 in runs of this case (docs/olrg.md; the same growth without environments: 0.29); the test asks
    for a factor 4 below the exact block.
    """
    cfg = yaml.safe_load((ROOT / "configs" / "olrg_long.yaml").read_text())
    p = cfg["params"]
    assert p["n_final"] == "light_cone" and p["N"] == 64 and p["training"]["environments"]
    p.update(couplings={"J": 1.0, "h": 1.0}, n0=[3], t_max=2.0, n_times=51, windows=[1, 2], tebd_chis=[],
             maps=["exact_block", "linear"], variants={})
    p["training"].update(steps=600, exact_max_n=4)
    cfg["study"] = "olrg-long-reduced"
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    name = f"olrg-test-{uuid.uuid4().hex[:6]}"
    (tmp_path / "slurm.yaml").write_text(
        f"kind: slurm\nqueue: debug\ncores: 1\nmemory: 3GB\nwalltime: '00:30:00'\njobs: 2\ninterface: lo\n"
        f"job_name: {name}\ndashboard_address: ':0'\n")
    run = subprocess.run([sys.executable, "-m", "olrg_hpc.cli", "run", "s.yaml", "--cluster", "slurm.yaml",
                          "--output", "st", "--no-progress"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "SLURMCluster" in run.stderr
    with h5py.File(tmp_path / "st" / "study.h5") as f:
        tasks = set(f["tasks"])
        assert {"eval-exact_block-n4", "eval-linear-D8", "train-linear-D8"} <= tasks
        assert {"targets-n4"} <= tasks and not any(t.startswith("targets-n5") for t in tasks)  # no exact past 4
        exact4 = _max_err(f, "eval-exact_block-n4", 2.0)
        grown = _max_err(f, "eval-linear-D8", 2.0)
    assert exact4 > 3e-2  # the small solver alone is far off on this window
    assert grown < exact4 / 4, (grown, exact4)
