"""A study on the dev SLURM through dask-jobqueue: workers are SLURM jobs, results equal the local run,
every job is released at the end, and the TLS-secured scheduler refuses a client without credentials.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import h5py
import numpy as np
import pytest
from chain_study import chain_study

from olrg_hpc import store
from olrg_hpc.cluster import open_client
from olrg_hpc.config import SlurmProfile

pytestmark = pytest.mark.slurm



def _squeue(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, timeout=30)
    return out.stdout.split()



def test_study_on_slurm_matches_local_and_releases_jobs(tmp_path):
    name = f"olrg-test-{uuid.uuid4().hex[:6]}"
    (tmp_path / "s.yaml").write_text(
        chain_study("slurm-test", sizes=(8, 10), h=(0.5, 1.0), t_max=2.0, n_times=41, seed=3))
    (tmp_path / "slurm.yaml").write_text(
        f"kind: slurm\nqueue: debug\ncores: 1\nmemory: 1GB\nwalltime: '00:20:00'\njobs: 2\ninterface: lo\n"
        f"job_name: {name}\ndashboard_address: ':0'\n")
    (tmp_path / "local.yaml").write_text("kind: local\nn_workers: 2\ndashboard_address: ':0'\n")
    exe = [sys.executable, "-m", "olrg_hpc.cli", "run", "s.yaml", "--no-report", "--no-progress"]
    proc = subprocess.Popen([*exe, "--cluster", "slurm.yaml", "--output", "on-slurm"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline and not seen:
        seen = _squeue(name)
        time.sleep(0.3)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert seen, "the worker jobs never showed in squeue"
    assert "SLURMCluster: 2 worker jobs submitted" in err
    assert _released(name), "worker jobs left behind"

    local = subprocess.run([*exe, "--cluster", "local.yaml", "--output", "local"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=240)
    assert local.returncode == 0, local.stderr
    a, b = store.datasets(tmp_path / "on-slurm/study.h5"), store.datasets(tmp_path / "local/study.h5")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with h5py.File(tmp_path / "on-slurm/study.h5") as f:
        assert all(f["tasks"][t].attrs["host"] for t in f["tasks"])


def test_tls_scheduler_refuses_client_without_credentials(tmp_path):
    from distributed import Client

    name = f"olrg-test-{uuid.uuid4().hex[:6]}"
    prof = SlurmProfile(kind="slurm", queue="debug", memory="1GB", walltime="00:10:00", jobs=1, interface="lo",
                        job_name=name, dashboard_address=":0")
    with open_client(prof, study_dir=tmp_path, echo=lambda _m: None) as client:
        client.wait_for_workers(1, timeout=120)
        assert client.submit(lambda x: x + 1, 1).result() == 2
        addr = client.scheduler.address
        assert addr.startswith("tls://")
        cred = tmp_path / ".credentials"
        assert oct(cred.stat().st_mode & 0o777) == "0o700"
        assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in cred.iterdir())
        with pytest.raises((OSError, TimeoutError)):
            Client(addr.replace("tls://", "tcp://"), timeout="3s")
        with pytest.raises((OSError, TimeoutError, TypeError, ValueError)):
            Client(addr, timeout="3s")  # tls:// without certificates
    assert _released(name)


def _released(name: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while _squeue(name) and time.monotonic() < deadline:
        time.sleep(0.5)
    return _squeue(name) == []
