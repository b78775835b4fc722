"""Cluster profiles to Dask clients: LocalCluster, SLURMCluster (dask-jobqueue), or a running scheduler.

``open_client(profile)`` is a context manager: it starts (or connects to) the cluster, prints the
dashboard link (with an ssh tunnel hint when the scheduler is not on the machine the user sits at), and
on exit, normal or not (Ctrl-C, errors), closes the client and releases every SLURM job it submitted.

**Who can connect.** With ``security: true`` (the default of local and SLURM profiles) scheduler, workers and
client talk TLS and each side presents a certificate signed by a certificate authority made for this run
(``distributed.security.Security.temporary``); the scheduler refuses any connection without one, from another
user of the machine or from the network. A LocalCluster keeps its credentials in memory (its worker processes
receive them through the pipe that starts them); a SLURM cluster writes the workers' copy into
``STUDY_DIR/.credentials`` (0700 folder, 0600 files), removed when the run ends and, should the driver be killed,
at the start of the next run, which makes new ones. A leftover key is useless anyway: the authority that signed
it lived only in the dead run's scheduler. The dashboard listens on ``127.0.0.1`` unless the profile's
``dashboard_address`` says otherwise; other users of the same machine can still open it (it has no login), and
it shows task names, progress, worker logs and call stacks, but cannot run code.

**Worker jobs that cannot start.** A SLURM worker job whose worker never connects (a wrong ``python``, an
unwritable ``local_directory``, a prologue that fails) ends without dask-jobqueue noticing. Before any job is
submitted, ``sbatch --test-only`` checks the rendered worker job script (partition, account, gres, limits); while
the study runs, :func:`health_check` compares the profile's jobs in ``squeue`` with the workers that connected:
a job gone before its worker connected is a failed start (replaced, up to ``max_failed_starts``), and then the
study stops with one line quoting the last lines of the job's log.

**Ctrl-C.** dask-jobqueue replaces Python's SIGINT handler at import (Ctrl-C would exit 0 silently); it is
restored, so Ctrl-C raises ``KeyboardInterrupt`` on every profile. LocalCluster worker processes are started
with their standard error in ``STUDY_DIR/run.log``, so their messages (a traceback when Ctrl-C reaches them
while they start) never reach the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from olrg_hpc.config import AddressProfile, LocalProfile, SlurmProfile
from olrg_hpc.errors import UserError

log = logging.getLogger(__name__)

Echo = Callable[[str], None]
CREDENTIALS = ".credentials"
#: a worker job that sbatch has not accepted after this long (dask-jobqueue retries silently) stops the study
SUBMIT_TIMEOUT_S = 120.0
#: how often the health check asks squeue (a SLURM controller serves many users: not more often than this)
CHECK_INTERVAL_S = 5.0

_CHECKS: weakref.WeakKeyDictionary[Any, Callable[[], None]] = weakref.WeakKeyDictionary()


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def tunnel_hint(dashboard_link: str, scheduler_here: bool = True) -> str | None:
    """The ssh command that forwards the dashboard to the user's laptop, or None when no tunnel is needed.

    A tunnel is needed when the user reached this machine over ssh, when this runs inside a SLURM job
    (the submitted driver), or when the scheduler runs elsewhere. A dashboard on the loopback interface is
    reached by forwarding to ``localhost`` on the machine that runs it (through the login node with ``-J``
    when that is a compute node); one on another interface by forwarding through the login node.
    """
    url = urlparse(dashboard_link)
    host, port = url.hostname or "", url.port or 8787
    in_job = bool(os.environ.get("SLURM_JOB_ID"))
    away = bool(os.environ.get("SSH_CONNECTION")) or in_job
    loopback = host in ("127.0.0.1", "localhost", "::1", "")
    if not away and (scheduler_here or loopback):
        return None
    page = f"then open http://localhost:{port}{url.path or '/status'}"
    if loopback:
        here = socket.gethostname()
        jump = "-J <user>@<login-node> " if in_job else ""
        return f"ssh -N {jump}-L {port}:localhost:{port} <user>@{here}   {page}"
    if host == "0.0.0.0":
        host = socket.gethostname()
    return f"ssh -N -L {port}:{host}:{port} <user>@<login-node>   {page}"


def local_cluster_kwargs(p: LocalProfile) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    n_workers = p.n_workers or max(1, cores // p.threads_per_worker)
    return dict(n_workers=n_workers, threads_per_worker=p.threads_per_worker, processes=p.processes,
                memory_limit=p.memory_limit, dashboard_address=p.dashboard_address, silence_logs=logging.ERROR)


def slurm_cluster_kwargs(p: SlurmProfile, study_dir: Path | None = None) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` from a validated profile."""
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


def _slurm_classes() -> tuple[Any, Any]:
    """``(SLURMCluster, SLURMJob)``, with Python's SIGINT handler back in place (dask-jobqueue's runner module
    installs ``sys.exit`` as the SIGINT handler when it is imported: Ctrl-C would exit 0)."""
    import signal
    import threading

    from dask_jobqueue import SLURMCluster
    from dask_jobqueue.slurm import SLURMJob

    handler = signal.getsignal(signal.SIGINT)
    if getattr(handler, "__module__", "") == "dask_jobqueue.runner" and threading.current_thread() is \
            threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return SLURMCluster, SLURMJob


def worker_job_script(profile: SlurmProfile, study_dir: Path | None = None) -> str:
    """The worker job script dask-jobqueue submits for ``profile`` (scheduler address and TLS files aside)."""
    _, job_cls = _slurm_classes()
    kw = slurm_cluster_kwargs(profile, study_dir)
    kw.pop("scheduler_options", None)
    kw.pop("log_directory", None)  # dask-jobqueue would create it; the test submission needs no log
    return job_cls(scheduler="tcp://127.0.0.1:8786", name="olrg-check", **kw).job_script()


def check_slurm(profile: SlurmProfile, study_dir: Path | None = None) -> None:
    """Fail in one line, before any job is submitted, when SLURM, the profile's partition or account is
    missing, or when ``sbatch --test-only`` refuses the worker job script."""
    import getpass

    from olrg_hpc.config import SAFE_PATH

    for cmd in ("sbatch", "squeue", "scancel", "sinfo"):
        if shutil.which(cmd) is None:
            raise UserError(f"{cmd}: not found on PATH; the slurm profile needs a SLURM client "
                            "(for a local test cluster: bash slurm/dev-cluster/start.sh)")
    if profile.python is None and not SAFE_PATH.fullmatch(sys.executable):
        raise UserError(f"python: this interpreter's path {sys.executable!r} cannot go into a job script; set "
                        "python in the profile")
    out = _slurm_cmd(["sinfo", "-h", "-o", "%R"])
    partitions = out.split()
    if profile.queue:
        missing = [q for q in profile.queue.split(",") if q not in partitions]
        if missing:
            raise UserError(f"queue: partition {missing[0]!r} does not exist (sinfo lists: {', '.join(partitions)})")
    if profile.account and shutil.which("sacctmgr"):
        try:
            res = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", f"where user={getpass.getuser()}",
                                  "format=account"], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            res = None
        accounts = set(res.stdout.split()) if res is not None and res.returncode == 0 else set()
        # without slurmdbd sacctmgr says so (with exit code 0): then there is nothing to check against
        known = res is not None and res.returncode == 0 and "not running a supported" not in res.stdout + res.stderr
        if known and accounts and profile.account not in accounts:
            raise UserError(f"account: {profile.account!r} is not one of your SLURM accounts "
                            f"(sacctmgr lists: {', '.join(sorted(accounts))})")
    with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="olrg-check-") as f:
        f.write(worker_job_script(profile, study_dir))
        f.flush()
        try:
            res = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise UserError("sbatch --test-only: no answer from the SLURM controller within 60 s") from None
    if res.returncode != 0:
        msg = " ".join(res.stderr.replace("sbatch: error:", "").split())
        raise UserError(f"sbatch refuses the profile's worker job: {msg[:300] or f'exit code {res.returncode}'}")


def _slurm_cmd(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise UserError(f"{cmd[0]}: no answer from the SLURM controller within 30 s") from None
    if out.returncode != 0:
        raise UserError(f"{cmd[0]}: {' '.join(out.stderr.split())[:300] or 'failed'} (is slurmctld running?)")
    return out.stdout


def health_check(client: Any) -> Callable[[], None] | None:
    """The check :func:`olrg_hpc.runner.run_tasks` should call while the study runs on ``client`` (it raises
    a one-line UserError when worker jobs cannot start), or None when the cluster needs none."""
    return _CHECKS.get(client)


class _SlurmWatch:
    """Failed starts of worker jobs (module docstring); :meth:`check` is cheap between its squeue calls."""

    def __init__(self, cluster: Any, profile: SlurmProfile, log_dir: str | None) -> None:
        self.cluster, self.profile, self.log_dir = cluster, profile, log_dir
        self.connected: set[str] = set()  # job ids whose worker was seen connected
        self.failed: dict[str, str] = {}  # job id -> job name in the cluster
        self.unsubmitted: dict[str, float] = {}  # job name -> first seen without a job id
        self.last = 0.0

    def check(self) -> None:
        now = time.monotonic()
        if now - self.last < CHECK_INTERVAL_S:
            return
        self.last = now
        names = [str(w.get("name")) for w in self.cluster.scheduler_info.get("workers", {}).values()]
        jobs = {}
        for name, job in list(self.cluster.workers.items()):
            jid = getattr(job, "job_id", None)
            if jid is None:
                first = self.unsubmitted.setdefault(name, now)
                if now - first > SUBMIT_TIMEOUT_S:
                    raise UserError(f"worker jobs: sbatch has not accepted job {name!r} in {SUBMIT_TIMEOUT_S:.0f} s "
                                    "(its error is in the study's run.log)")
                continue
            self.unsubmitted.pop(name, None)
            jobs[jid] = name
            if any(n == name or n.startswith(f"{name}-") for n in names):
                self.connected.add(jid)
        if not jobs:
            return
        active = set(_slurm_cmd(["squeue", "-h", "-u", str(os.getuid()), "-o", "%i"]).split())
        gone = [jid for jid in jobs if jid not in active and jid not in self.connected and jid not in self.failed]
        for jid in gone:
            self.failed[jid] = jobs[jid]
        if len(self.failed) >= self.profile.max_failed_starts:
            last = gone[-1] if gone else next(reversed(self.failed))
            raise UserError(f"worker jobs cannot start: {len(self.failed)} ended before their worker connected "
                            f"(max_failed_starts: {self.profile.max_failed_starts}); {self._log_tail(last)}")
        if gone:  # dask-jobqueue believes them alive: drop them, and Adaptive submits replacements
            self.cluster.sync(self.cluster.scale_down, [jobs[j] for j in gone])

    def _log_tail(self, jid: str, n: int = 3) -> str:
        if self.log_dir is None:
            return f"job {jid}: no log directory"
        lines: list[str] = []
        paths = [Path(self.log_dir) / f"{self.profile.job_name}-{jid}.{ext}" for ext in ("err", "out")]
        for p in paths:
            with contextlib.suppress(OSError):
                lines += [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
        tail = " | ".join(lines[-n:]) or "(empty)"
        return f"job {jid}, log {paths[0]}: {tail[-400:]}"


@contextlib.contextmanager
def _stderr_into(path: Path | None) -> Iterator[None]:
    """While active, file descriptor 2 writes to ``path`` (appended): processes started meanwhile keep it as
    their standard error. No-op for ``None``."""
    if path is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.dup2(fd, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)


def _entered(stack: contextlib.ExitStack, cm: Any) -> Any:
    """``stack.enter_context(cm)``, except that an error while closing ``cm`` is logged, not raised: it must not
    replace the error that ended the run (a cluster interrupted mid-start does not close cleanly)."""
    obj = cm.__enter__()

    def close() -> None:
        try:
            cm.__exit__(None, None, None)
        except Exception:  # noqa: BLE001 - logged in full (run.log); the run's own outcome stands
            log.warning("closing %s failed", type(cm).__name__, exc_info=True)

    stack.callback(close)
    return obj


def _drop_credentials(cluster: Any, cred_dir: str) -> None:
    """Delete the workers' credential files dask-jobqueue wrote (it keeps them as temporary-file objects on the
    cluster, ``_job_<name>``: closing them deletes them), then their folder."""
    for name in [n for n in vars(cluster) if n.startswith("_job_")]:
        f = getattr(cluster, name)
        if hasattr(f, "close") and hasattr(f, "name"):  # dask-jobqueue's _job_kwargs is a dict
            with contextlib.suppress(OSError):
                f.close()
    shutil.rmtree(cred_dir, ignore_errors=True)


@contextlib.contextmanager
def open_client(profile: LocalProfile | SlurmProfile | AddressProfile, *, study_dir: Path | None = None,
                echo: Echo = _stderr, log_file: Path | None = None) -> Iterator[Any]:
    """A connected ``distributed.Client`` for the profile; everything it started is stopped on exit.

    ``log_file``: where LocalCluster worker processes write their standard error (default: the terminal's).
    """
    import dask
    from distributed import Client

    with contextlib.ExitStack() as stack:
        if isinstance(profile, LocalProfile):
            from distributed import LocalCluster
            from distributed.security import Security

            kwargs = local_cluster_kwargs(profile)
            security = Security.temporary() if profile.security else None
            if security is not None:
                kwargs.update(security=security, protocol="tls://")
            with _stderr_into(log_file):
                cluster = _entered(stack, LocalCluster(**kwargs))
            client = _entered(stack, Client(cluster, security=security))
            echo(f"LocalCluster: {len(cluster.workers)} workers x {profile.threads_per_worker} threads; scheduler "
                 f"{cluster.scheduler_address}" + (" (TLS, credentials of this run)" if security else ""))
        elif isinstance(profile, SlurmProfile):
            slurm_cluster, _ = _slurm_classes()
            check_slurm(profile, study_dir)
            kwargs = slurm_cluster_kwargs(profile, study_dir)
            # notice a lost worker job after 5 s instead of 15 s, so that Adaptive replaces it sooner
            stack.enter_context(dask.config.set({"distributed.deploy.lost-worker-timeout": "5s"}))
            if profile.security:
                kwargs["security"], kwargs["shared_temp_directory"] = _temporary_security(study_dir)
            cluster = slurm_cluster(**kwargs)
            if profile.security:
                stack.callback(_drop_credentials, cluster, kwargs["shared_temp_directory"])
            cluster = _entered(stack, cluster)
            client = _entered(stack, Client(cluster))
            # Fixed job counts also go through adapt(min = max): Adaptive re-checks the cluster every few
            # seconds and resubmits a job that died (scancel, node failure, walltime); scale() would not.
            lo, hi = (profile.adapt.minimum_jobs, profile.adapt.maximum_jobs) if profile.adapt else (
                (profile.jobs or 1,) * 2)
            adaptive = cluster.adapt(minimum_jobs=lo, maximum_jobs=hi, interval="2s", wait_count=3)
            stack.callback(adaptive.stop)  # first thing on the way out: no job submitted while the cluster closes
            _CHECKS[client] = _SlurmWatch(cluster, profile, kwargs.get("log_directory")).check
            if profile.adapt:
                echo(f"SLURMCluster: adapting between {lo} and {hi} worker jobs")
            else:
                echo(f"SLURMCluster: {hi} worker jobs submitted (squeue shows them; lost ones are replaced)")
        else:
            try:
                client = _entered(stack, Client(profile.address, timeout=profile.timeout))
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
    """Per-run TLS credentials and the user-only folder where dask-jobqueue writes the workers' copy.

    Scheduler, workers and client all present certificates signed by a CA made for this run, so a
    process without them cannot connect. The files are created 0600 inside a 0700 folder; whatever an
    earlier, killed run left there is removed first (the caller holds the study folder's lock).
    """
    from distributed.security import Security

    if study_dir is None:
        return Security.temporary(), tempfile.mkdtemp(prefix="olrg-credentials-")  # 0700
    cred_dir = Path(study_dir) / CREDENTIALS
    shutil.rmtree(cred_dir, ignore_errors=True)
    cred_dir.mkdir(parents=True, mode=0o700)
    os.chmod(cred_dir, 0o700)
    return Security.temporary(), str(cred_dir)
