"""Cluster profiles to Dask clients: LocalCluster, SLURMCluster (dask-jobqueue), or a running scheduler.

``open_client(profile)`` is a context manager: it starts (or connects to) the cluster, prints the
dashboard link (with an ssh tunnel hint when the scheduler is not on the machine the user sits at), and
on exit, normal or not (Ctrl-C, errors), closes the client and releases every SLURM job it submitted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from olrg_hpc.config import AddressProfile, LocalProfile, SlurmProfile
from olrg_hpc.errors import UserError

Echo = Callable[[str], None]


def _stderr(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr, flush=True)


def tunnel_hint(dashboard_link: str, scheduler_here: bool = True) -> str | None:
    """The ssh command that forwards the dashboard to the user's laptop, or None when no tunnel is needed.

    A tunnel is needed when the user reached this machine over ssh, when this runs inside a SLURM job
    (the submitted driver), or when the scheduler runs elsewhere. The dashboard port is never opened to
    the network: the user forwards it through ssh.
    """
    url = urlparse(dashboard_link)
    host, port = url.hostname or "", url.port or 8787
    away = bool(os.environ.get("SSH_CONNECTION") or os.environ.get("SLURM_JOB_ID"))
    loopback = host in ("127.0.0.1", "localhost", "::1", "", "0.0.0.0")
    if not away and (scheduler_here or loopback):
        return None
    if loopback:
        host = socket.gethostname()
    return (f"ssh -N -L {port}:{host}:{port} <user>@<login-node>   "
            f"then open http://localhost:{port}{url.path or '/status'}")


def local_cluster_kwargs(p: LocalProfile) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    n_workers = p.n_workers or max(1, cores // p.threads_per_worker)
    return dict(n_workers=n_workers, threads_per_worker=p.threads_per_worker, processes=p.processes,
                memory_limit=p.memory_limit, dashboard_address=p.dashboard_address, silence_logs=logging.ERROR)


def slurm_cluster_kwargs(p: SlurmProfile, study_dir: Path | None = None) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` from a validated profile."""
    import sys

    extra = list(p.job_extra_directives)
    if p.gpus_per_job:
        extra.append(f"--gres=gpu:{p.gpus_per_job}")
    worker_extra: list[str] = []
    if p.worker_lifetime:
        # the worker retires (its tasks move elsewhere), its job ends, and Adaptive submits a fresh job with
        # a full walltime; --lifetime-restart would restart the worker inside the old, expiring job
        worker_extra += ["--lifetime", p.worker_lifetime, "--lifetime-stagger", p.lifetime_stagger]
    log_dir = p.log_directory or (str(study_dir / "logs") if study_dir else None)
    kw: dict[str, Any] = dict(
        queue=p.queue, account=p.account, cores=p.cores, processes=p.processes, memory=p.memory,
        walltime=p.walltime, job_extra_directives=extra, job_directives_skip=list(p.job_directives_skip),
        job_script_prologue=list(p.job_script_prologue), interface=p.interface,
        local_directory=p.local_directory, log_directory=log_dir, python=p.python or sys.executable,
        worker_extra_args=worker_extra, job_name=p.job_name,
        scheduler_options={"dashboard_address": p.dashboard_address},
    )
    return {k: v for k, v in kw.items() if v is not None}


def check_slurm(profile: SlurmProfile) -> None:
    """Fail in one line, before any job is submitted, when SLURM or the profile's partition is missing."""
    import subprocess

    for cmd in ("sbatch", "squeue", "scancel", "sinfo"):
        if shutil.which(cmd) is None:
            raise UserError(f"{cmd}: not found on PATH; the slurm profile needs a SLURM client "
                            "(for a local test cluster: bash slurm/dev-cluster/start.sh)")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%R"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise UserError("sinfo: no answer from the SLURM controller within 30 s") from None
    if out.returncode != 0:
        raise UserError(f"sinfo: {' '.join(out.stderr.split()) or 'failed'} (is slurmctld running?)")
    partitions = out.stdout.split()
    if profile.queue and profile.queue not in partitions:
        raise UserError(f"queue: partition {profile.queue!r} does not exist (sinfo lists: {', '.join(partitions)})")


@contextlib.contextmanager
def open_client(profile: LocalProfile | SlurmProfile | AddressProfile, *, study_dir: Path | None = None,
                echo: Echo = _stderr) -> Iterator[Any]:
    """A connected ``distributed.Client`` for the profile; everything it started is stopped on exit."""
    import dask
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if isinstance(profile, LocalProfile):
            from distributed import LocalCluster

            cluster = stack.enter_context(LocalCluster(**local_cluster_kwargs(profile)))
            client = stack.enter_context(Client(cluster))
            echo(f"LocalCluster: {len(cluster.workers)} workers x {profile.threads_per_worker} threads")
        elif isinstance(profile, SlurmProfile):
            check_slurm(profile)
            from dask_jobqueue import SLURMCluster

            kwargs = slurm_cluster_kwargs(profile, study_dir)
            # notice a lost worker job after 5 s instead of 15 s, so that Adaptive replaces it sooner
            stack.enter_context(dask.config.set({"distributed.deploy.lost-worker-timeout": "5s"}))
            if profile.security:
                kwargs["security"], kwargs["shared_temp_directory"] = _temporary_security(study_dir)
            cluster = stack.enter_context(SLURMCluster(**kwargs))
            client = stack.enter_context(Client(cluster))
            # Fixed job counts also go through adapt(min = max): Adaptive re-checks the cluster every few
            # seconds and resubmits a job that died (scancel, node failure, walltime); scale() would not.
            lo, hi = (profile.adapt.minimum_jobs, profile.adapt.maximum_jobs) if profile.adapt else (
                (profile.jobs or 1,) * 2)
            cluster.adapt(minimum_jobs=lo, maximum_jobs=hi, interval="2s", wait_count=3)
            if profile.adapt:
                echo(f"SLURMCluster: adapting between {lo} and {hi} worker jobs")
            else:
                echo(f"SLURMCluster: {hi} worker jobs submitted (squeue shows them; lost ones are replaced)")
        else:
            try:
                client = stack.enter_context(Client(profile.address, timeout=profile.timeout))
            except (OSError, TimeoutError) as exc:
                raise UserError(f"scheduler {profile.address}: unreachable ({type(exc).__name__})") from None
            echo(f"connected to {profile.address}: {len(client.scheduler_info()['workers'])} workers")
        link = client.dashboard_link
        echo(f"dashboard: {link}")
        hint = tunnel_hint(link, scheduler_here=not isinstance(profile, AddressProfile))
        if hint:
            echo(f"dashboard from your laptop: {hint}")
        yield client


def _temporary_security(study_dir: Path | None) -> tuple[Any, str]:
    """Per-study TLS credentials and the user-only folder where dask-jobqueue writes the workers' copy.

    Scheduler, workers and client all present certificates signed by a CA made for this study, so a
    process without them cannot connect. The files are created 0600 inside a 0700 folder.
    """
    import tempfile

    from distributed.security import Security

    base = Path(study_dir) if study_dir is not None else Path(tempfile.gettempdir())
    cred_dir = base / ".credentials"
    cred_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(cred_dir, 0o700)
    return Security.temporary(), str(cred_dir)
