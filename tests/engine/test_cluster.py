"""Cluster profiles to clients: address profiles, SLURM job scripts from profiles (one pool or several), where a
task goes among pools, one-line failures, and who can connect to a LocalCluster: only this run (TLS with
credentials of the run), the dashboard on localhost."""

from __future__ import annotations

import pytest

from olrg_hpc.cluster import Pool, open_client, placement, slurm_cluster_kwargs, tunnel_hint, worker_job_script
from olrg_hpc.config import PROFILE_KINDS, AddressProfile, LocalProfile, SlurmProfile, load_profile
from olrg_hpc.errors import UserError
from olrg_hpc.tasks import Resources


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


TWO_POOLS = dict(kind="slurm", account="proj", memory="2GB", interface="lo", job_script_prologue=["source venv"],
                 pools={"cpu": {"queue": "cpu", "processes": 4, "cores": 4, "adapt": {"maximum_jobs": 8}},
                        "gpu": {"queue": "gpu", "gpus_per_job": 4, "nodes": 2, "ntasks": 8, "cores": 8,
                                "job_script_prologue": ["module load cuda"]}})


def test_every_pool_gets_its_own_job_script():
    prof = SlurmProfile(**TWO_POOLS)
    pools = prof.worker_pools()
    assert list(pools) == ["cpu", "gpu"]
    assert pools["cpu"].adapt is not None and pools["cpu"].adapt.maximum_jobs == 8 and pools["gpu"].jobs is None
    assert not pools["cpu"].is_accelerator and pools["gpu"].is_accelerator  # gpus_per_job > 0
    cpu, gpu = worker_job_script(prof, pool="cpu"), worker_job_script(prof, pool="gpu")
    for line in ("#SBATCH -J olrg-worker-cpu", "#SBATCH -p cpu", "#SBATCH -A proj", "#SBATCH -n 1",
                 "export OLRG_HPC_POOL=cpu", "export OLRG_HPC_LAUNCH=srun", "source venv", "--resources pool-cpu=1",
                 "--nworkers 4"):
        assert line in cpu, line
    for line in ("#SBATCH -J olrg-worker-gpu", "#SBATCH -p gpu", "#SBATCH -A proj", "#SBATCH --gres=gpu:4",
                 "#SBATCH --ntasks=8", "#SBATCH --nodes=2", "#SBATCH --cpus-per-task=8", "export OLRG_HPC_POOL=gpu",
                 "export OLRG_HPC_GPUS=4", "module load cuda", "--resources pool-gpu=8"):
        assert line in gpu, line
    assert "#SBATCH -n 1" not in gpu and "source venv" not in gpu  # the pool's own prologue replaces the profile's
    # a profile without pools is one pool, as before: no resources asked or advertised
    one = worker_job_script(SlurmProfile(kind="slurm", queue="debug"))
    assert "--resources" not in one and "export OLRG_HPC_POOL=default" in one


@pytest.mark.parametrize("pools, message", [
    ({"gpu": {"memroy": "2GB"}}, r"pools\.gpu\.memroy: unknown key \(did you mean memory\?"),
    ({"gpu": {"memory": "lots"}}, r"pools\.gpu\.memory: a memory size"),
    ({"gpu": {"queue": "gpu; rm -rf ~"}}, r"pools\.gpu\.queue: a name"),
    ({"gpu": {"ntasks": 4, "processes": 2, "cores": 2}}, r"pools\.gpu: ntasks \(4\) > 1 needs processes: 1"),
    ({"gpu": {"nodes": 3, "ntasks": 2}}, r"pools\.gpu: nodes \(3\) exceeds ntasks"),
    ({"gpu": {"interface": "lo", "jobs": 1, "adapt": {"maximum_jobs": 2}}}, r"pools\.gpu: set either jobs"),
    ({"g-p-u": {}}, r"pools: .*a pool name of letters"),
    ({"gpu": {"kind": "local"}}, r"pools\.gpu\.kind: unknown key"),
])
def test_bad_pools_are_one_line(tmp_path, pools, message):
    import yaml

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"kind": "slurm", "jobs": 1, "pools": pools}))
    with pytest.raises(UserError, match=message) as exc:
        load_profile(str(path))
    assert "\n" not in str(exc.value) and str(exc.value).startswith(f"{path}: ")


def test_placement_sends_training_to_the_accelerator_pool_and_the_rest_to_cpu():
    cpu, gpu = Pool("cpu", False, 1, 1, "pool-cpu"), Pool("gpu", True, 8, 4, "pool-gpu")
    assert placement(Resources(), [cpu, gpu]) == (cpu, {"pool-cpu": 1.0})
    assert placement(Resources(accelerator=True), [cpu, gpu]) == (gpu, {"pool-gpu": 1.0})
    # a multi-process task holds its worker's every thread (the job's tasks are its processes)
    assert placement(Resources(accelerator=True, processes=8), [cpu, gpu]) == (gpu, {"pool-gpu": 4.0})
    with pytest.raises(ValueError, match="asks for 16 processes; pool 'gpu' runs at most 8"):
        placement(Resources(accelerator=True, processes=16), [cpu, gpu])
    # a profile without an accelerator pool trains on the CPU pool; one pool: no restriction at all
    assert placement(Resources(accelerator=True), [cpu]) == (cpu, {"pool-cpu": 1.0})
    local = Pool("local")
    assert placement(Resources(accelerator=True, processes=4), [local]) == (local, None)
    assert placement(Resources(), []) == (None, None)


def test_every_kind_is_a_module_of_the_cluster_package():
    from olrg_hpc.cluster import Kind, kind_of

    for kind, model in PROFILE_KINDS.items():
        assert model.model_fields["kind"].annotation.__args__ == (kind,)
        assert isinstance(kind_of(model.model_construct(kind=kind)), Kind)


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
