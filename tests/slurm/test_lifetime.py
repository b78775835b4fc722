"""Workers reaching their lifetime retire before walltime and are replaced by fresh jobs, staggered, and
the study still completes with every task valid.

Tasks must be shorter than the worker lifetime (here ~1 s against 20 s), as in production (minutes
against hours): a task that outlives every worker would be rescheduled forever.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

STUDY = """\
study: lifetime
workflow: chain_sweep
seed: 2
params:
  t_max: 3.0
  n_times: 201
  sweeps:
    - model: tfim
      n_sites: [11, 12]
      couplings: {J: [1.0], h: [0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0]}
      methods: [ed]
"""


def test_workers_retire_and_are_replaced(tmp_path):
    name = f"olrg-life-{uuid.uuid4().hex[:6]}"
    (tmp_path / "s.yaml").write_text(STUDY)
    (tmp_path / "p.yaml").write_text(
        f"kind: slurm\nqueue: debug\nmemory: 1GB\nwalltime: '00:05:00'\njobs: 2\ninterface: lo\njob_name: {name}\n"
        "worker_lifetime: 20s\nlifetime_stagger: 4s\ndashboard_address: ':0'\n")
    proc = subprocess.Popen([sys.executable, "-m", "olrg_hpc.cli", "run", "s.yaml", "--cluster", "p.yaml",
                             "--no-progress", "--no-report"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    deadline = time.monotonic() + 400
    while proc.poll() is None and time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, timeout=30)
        seen |= set(out.stdout.split())
        time.sleep(0.5)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "0 failed" in err
    assert len(seen) > 2, f"no worker job was replaced (jobs seen: {sorted(seen)})"
