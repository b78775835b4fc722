"""Cluster profiles to clients: address profiles, SLURM job scripts from profiles, one-line failures."""

from __future__ import annotations

import pytest

from olrg_hpc.cluster import open_client, slurm_cluster_kwargs, tunnel_hint
from olrg_hpc.config import AddressProfile, SlurmProfile, load_profile
from olrg_hpc.errors import UserError


def test_address_profile_connects_to_a_running_scheduler():
    from distributed import LocalCluster

    lines: list[str] = []
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        with open_client(AddressProfile(kind="address", address=cluster.scheduler_address), echo=lines.append) as c:
            assert c.submit(sum, [1, 2, 3]).result() == 6
    assert lines[0].startswith(f"connected to {cluster.scheduler_address}: 1 workers")
    assert lines[1].startswith("dashboard: http://")


def test_unreachable_scheduler_is_one_line():
    prof = AddressProfile(kind="address", address="tcp://127.0.0.1:9", timeout="1s")
    with pytest.raises(UserError, match=r"^scheduler tcp://127.0.0.1:9: unreachable"):
        with open_client(prof, echo=lambda _m: None):
            pass


def test_slurm_profile_without_sbatch(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    _, prof = load_profile("slurm-dev")
    with pytest.raises(UserError, match=r"^sbatch: not found on PATH"):
        with open_client(prof, echo=lambda _m: None):
            pass


def test_job_script_carries_every_profile_keyword(tmp_path):
    from dask_jobqueue import SLURMCluster

    prof = SlurmProfile(kind="slurm", queue="gpu", account="proj", cores=4, processes=2, memory="8GB",
                        walltime="02:00:00", gpus_per_job=1, jobs=1, job_extra_directives=["--qos=low"],
                        job_directives_skip=["--mem"], job_script_prologue=["module load cuda"],
                        worker_lifetime="100m", lifetime_stagger="5m", interface="lo")
    kwargs = slurm_cluster_kwargs(prof, tmp_path)
    with SLURMCluster(**kwargs) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p gpu", "#SBATCH -A proj", "#SBATCH -t 02:00:00", "#SBATCH --gres=gpu:1",
                 "#SBATCH --qos=low", "module load cuda", "--lifetime 100m", "--lifetime-stagger 5m",
                 "--nworkers 2"):
        assert line in script, line
    assert "--mem=" not in script  # skipped on request
    assert "--lifetime-restart" not in script  # retire the job, not just the process
    assert str(tmp_path / "logs") in str(kwargs["log_directory"])


def test_tunnel_hint(monkeypatch):
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert tunnel_hint("http://127.0.0.1:8787/status") is None
    assert tunnel_hint("http://10.1.2.3:8788/status", scheduler_here=True) is None  # LocalCluster on eth0
    hint = tunnel_hint("http://10.1.2.3:8788/status", scheduler_here=False)
    assert hint.startswith("ssh -N -L 8788:10.1.2.3:8788 ") and "http://localhost:8788/status" in hint
    monkeypatch.setenv("SSH_CONNECTION", "1.2.3.4 5 6.7.8.9 22")
    assert tunnel_hint("http://127.0.0.1:8787/status") is not None
