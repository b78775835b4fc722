"""Cluster profiles to clients: address profiles, SLURM job scripts from profiles, one-line failures, and who can
connect to a LocalCluster: only this run (TLS with credentials of the run), the dashboard on localhost."""

from __future__ import annotations

import pytest

from olrg_hpc.cluster import open_client, slurm_cluster_kwargs, tunnel_hint
from olrg_hpc.config import AddressProfile, LocalProfile, SlurmProfile, load_profile
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
    here = __import__("socket").gethostname()
    # a dashboard on the loopback interface is reached through localhost of its own machine ...
    assert tunnel_hint("http://127.0.0.1:8787/status").startswith(f"ssh -N -L 8787:localhost:8787 <user>@{here} ")
    # ... via the login node when the driver runs in a SLURM job on a compute node
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    assert tunnel_hint("http://127.0.0.1:8787/status").startswith(
        f"ssh -N -J <user>@<login-node> -L 8787:localhost:8787 <user>@{here} ")


def _foreign_client(address: str, python: str, as_nobody: bool) -> str:
    """Try to run code on the scheduler from a separate process (as user nobody when ``as_nobody``)."""
    import subprocess
    import sys

    site = next(p for p in sys.path if p.endswith("site-packages"))
    code = (f"import site; site.addsitedir({site!r})\n"
            "from distributed import Client\n"
            "from distributed.security import Security\n"
            f"for sec in (None, Security.temporary()):\n"
            f"    try:\n"
            f"        c = Client({address!r}.replace('tls://', 'tcp://') if sec is None else {address!r}, "
            "security=sec, timeout='5s')\n"
            "        print('RAN', c.run_on_scheduler(lambda: 42))\n"
            "    except Exception as e:\n"
            "        print('refused', type(e).__name__)\n")
    cmd = ["runuser", "-u", "nobody", "--", python, "-c", code] if as_nobody else [python, "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def test_local_scheduler_refuses_other_users_and_processes_without_the_run_credentials():
    """A LocalCluster profile is TLS with credentials made for the run and held in memory: a process without
    them (this user's, or another user's: 'nobody', where this test can switch users) cannot connect, neither
    in plain TCP nor with TLS credentials of its own. The dashboard listens on 127.0.0.1 only."""
    import os
    import shutil
    import sys

    import psutil

    prof = LocalProfile(kind="local", n_workers=1, dashboard_address="127.0.0.1:0")
    with open_client(prof, echo=lambda _m: None) as client:
        assert client.submit(lambda x: x + 1, 1).result() == 2  # the run itself can
        addr = client.scheduler.address
        assert addr.startswith("tls://127.0.0.1:")
        port = int(client.dashboard_link.split(":")[2].split("/")[0])
        listening = [c.laddr for c in psutil.Process().net_connections("inet") if c.status == "LISTEN"
                     and c.laddr.port == port]
        assert listening and all(la.ip == "127.0.0.1" for la in listening), listening
        out = _foreign_client(addr, sys.executable, as_nobody=False)
        assert "RAN" not in out and out.count("refused") == 2, out
        other = "/usr/bin/python3.11"
        if os.geteuid() == 0 and shutil.which("runuser") and os.path.exists(other) and sys.version_info[:2] == (3, 11):
            out = _foreign_client(addr, other, as_nobody=True)
            assert "RAN" not in out and out.count("refused") == 2, out


def test_local_profile_without_security_is_what_others_could_reach():
    """The control: with ``security: false`` the same foreign process runs code on the scheduler, which is why
    it is on by default."""
    import sys

    prof = LocalProfile(kind="local", n_workers=1, security=False, dashboard_address="127.0.0.1:0")
    with open_client(prof, echo=lambda _m: None) as client:
        out = _foreign_client(client.scheduler.address, sys.executable, as_nobody=False)
    assert "RAN 42" in out, out
