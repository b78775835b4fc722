"""End-to-end checks against a running SLURM (normally the dev cluster from slurm/dev-cluster/start.sh).

Skipped with a reason by tests/conftest.py when `sinfo` cannot reach a controller. Each test is bounded;
together they take ~15-30 s on a 2-core machine.

Start the cluster first::

    bash slurm/dev-cluster/start.sh
    pytest tests/slurm -v
    bash slurm/dev-cluster/stop.sh
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slurm

# Partition used by the tests: the dev cluster's `debug`, unless overridden (e.g. on a real cluster).
PARTITION_ENV = "OLRG_TEST_SLURM_PARTITION"


def _run(cmd: list[str], timeout: float = 30, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _partition() -> str | None:
    """`debug` when the cluster has it (the dev cluster does), else None = the cluster's default."""
    if os.environ.get(PARTITION_ENV):
        return os.environ[PARTITION_ENV]
    out = _run(["sinfo", "-h", "-o", "%R"])
    return "debug" if "debug" in out.stdout.split() else None


def _partition_args() -> list[str]:
    p = _partition()
    return ["-p", p] if p else []


def _jobs_named(name: str) -> list[str]:
    out = _run(["squeue", "-h", "-n", name, "-o", "%i"])
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def _wait_until(pred, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def _cancel_named(name: str) -> None:
    if shutil.which("scancel"):
        subprocess.run(["scancel", "-n", name], capture_output=True, timeout=30)


@pytest.fixture
def job_name() -> Iterator[str]:
    name = f"olrg-test-{uuid.uuid4().hex[:8]}"
    yield name
    _cancel_named(name)  # never leave jobs behind, whatever happened in the test


@pytest.mark.timeout(60)
def test_sbatch_job_writes_output(tmp_path: Path, job_name: str) -> None:
    out_file = tmp_path / "job-%j.out"
    cmd = ["sbatch", "--parsable", "-J", job_name, *_partition_args(), "-n", "1", "-t", "00:02:00"]
    cmd += [
        "-o",
        str(out_file),
        "-D",
        str(tmp_path),
        "--wrap",
        "echo olrg-sbatch-ok; echo ntasks=$SLURM_NTASKS",
    ]
    res = _run(cmd)
    assert res.returncode == 0, f"sbatch failed: {res.stderr}"
    job_id = res.stdout.strip().split(";")[0]
    assert job_id.isdigit(), res.stdout

    path = tmp_path / f"job-{job_id}.out"
    finished = _wait_until(lambda: not _jobs_named(job_name) and path.exists(), timeout=45)
    assert finished, f"job {job_id} did not finish within 45 s: {_run(['squeue', '-j', job_id]).stdout}"
    # The output file can lag the end of the job by a moment.
    assert _wait_until(lambda: "ntasks=1" in path.read_text(), timeout=5), path.read_text()
    assert "olrg-sbatch-ok" in path.read_text()


@pytest.mark.mpi
@pytest.mark.timeout(90)
def test_srun_mpi4py_four_ranks(job_name: str) -> None:
    pytest.importorskip("mpi4py")
    listing = _run(["srun", "--mpi=list"])
    mpi_types = listing.stdout + listing.stderr
    if "pmi2" not in mpi_types:
        pytest.skip(f"this SLURM has no pmi2 plugin (srun --mpi=list: {mpi_types.strip()[:200]})")
    code = "from mpi4py import MPI; c = MPI.COMM_WORLD; print('RANK', c.Get_rank(), c.Get_size(), flush=True)"
    cmd = ["srun", "--mpi=pmi2", "-n", "4", "-J", job_name, *_partition_args(), "-t", "00:02:00"]
    res = _run([*cmd, sys.executable, "-c", code], timeout=80)
    assert res.returncode == 0, f"srun failed ({res.returncode}): {res.stderr[-2000:]}"
    rank_lines = [ln.split() for ln in res.stdout.splitlines() if ln.startswith("RANK")]
    pairs = sorted((int(rank), int(size)) for _, rank, size in rank_lines)
    # Without a PMI (e.g. --mpi=none) every process would be a singleton: four lines of "0 1".
    assert pairs == [(0, 4), (1, 4), (2, 4), (3, 4)], res.stdout


@pytest.mark.timeout(120)
def test_dask_jobqueue_two_jobs(tmp_path: Path, job_name: str) -> None:
    pytest.importorskip("dask_jobqueue")
    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory="1GB",
        walltime="00:10:00",
        queue=_partition(),
        interface="lo",  # scheduler and workers on this host: bind loopback, not whatever eth0 is
        python=sys.executable,  # workers run in the test's own environment
        job_name=job_name,
        log_directory=str(tmp_path / "logs"),
        local_directory=str(tmp_path / "dask-scratch"),
        scheduler_options={"dashboard_address": ":0"},
        death_timeout=30,  # orphaned workers (scheduler gone) exit and free their job quickly
    )
    try:
        script = cluster.job_script()
        assert f"#SBATCH -J {job_name}" in script and "--mem=" in script, script
        cluster.scale(jobs=2)
        with Client(cluster) as client:
            t0 = time.monotonic()
            client.wait_for_workers(2, timeout=60)
            connect_s = time.monotonic() - t0
            assert len(_jobs_named(job_name)) == 2, _run(["squeue"]).stdout

            futures = client.map(lambda x: x * x, range(20), pure=False)
            assert sorted(client.gather(futures)) == [x * x for x in range(20)]
            print(f"2 SLURM workers connected in {connect_s:.1f} s")
    finally:
        cluster.close()

    released = _wait_until(lambda: not _jobs_named(job_name), timeout=30)
    assert released, f"jobs still queued after cluster.close(): {_run(['squeue', '-n', job_name]).stdout}"
