"""Faults on a real SLURM: a worker job cancelled mid-study does not fail the study; its tasks are
rescheduled, a replacement job is submitted, and the study file equals an undisturbed LocalCluster run."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
from chain_study import chain_study

from olrg_hpc import store

pytestmark = pytest.mark.slurm



def _jobs(name: str, states: str = "RUNNING") -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-t", states, "-o", "%i"], capture_output=True, text=True,
                         timeout=30)
    return out.stdout.split()



def test_cancelled_worker_job_is_replaced_and_study_completes(tmp_path):
    name = f"olrg-fault-{uuid.uuid4().hex[:6]}"
    (tmp_path / "s.yaml").write_text(
        chain_study("faults", sizes=(10, 11, 12), h=(0.5, 1.0, 1.5, 2.0, 2.5, 3.0), methods=("ed",), n_times=401,
                    seed=9))
    (tmp_path / "slurm.yaml").write_text(
        f"kind: slurm\nqueue: debug\ncores: 1\nmemory: 1GB\nwalltime: '00:20:00'\njobs: 2\ninterface: lo\n"
        f"job_name: {name}\ndashboard_address: ':0'\n")
    exe = [sys.executable, "-m", "olrg_hpc.cli", "run", "s.yaml", "--no-report", "--no-progress"]
    proc = subprocess.Popen([*exe, "--cluster", "slurm.yaml", "--output", "slurm"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shards = tmp_path / "slurm" / "shards"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (len(_jobs(name)) == 2 and len(store.Shards(shards.parent).keys()) >= 2):
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.3)
    before = set(_jobs(name))
    victim = sorted(before)[0]
    subprocess.run(["scancel", victim], check=True, timeout=30)
    replaced = False
    while proc.poll() is None and not replaced:
        # a replacement is a job id not seen before, pending or running (a busy cluster may queue it)
        replaced = bool(set(_jobs(name, "PENDING,CONFIGURING,RUNNING")) - before)
        time.sleep(0.5)
    _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert "19 computed, 0 failed" in err, err
    assert replaced, "the cancelled worker job was not replaced"

    (tmp_path / "local.yaml").write_text("kind: local\nn_workers: 2\ndashboard_address: ':0'\n")
    local = subprocess.run([*exe, "--cluster", "local.yaml", "--output", "local"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    a, b = store.datasets(tmp_path / "slurm/study.h5"), store.datasets(tmp_path / "local/study.h5")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
