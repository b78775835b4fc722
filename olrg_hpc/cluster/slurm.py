"""``kind: slurm``: worker jobs submitted by dask-jobqueue, in one pool or several (:mod:`olrg_hpc.cluster.pools`).

**Pools.** A profile without ``pools`` is one pool, ``default``. With ``pools``, every pool's workers advertise the
Dask resource ``pool-NAME`` and every task asks for its pool's (:func:`olrg_hpc.cluster.base.placement`: training on
an accelerator pool, the rest on a CPU pool); each pool adapts on its own. Worker jobs export ``OLRG_HPC_POOL``
(recorded in every shard) and ``OLRG_HPC_LAUNCH=srun``: a task that asks for P processes runs as an ``srun`` step
of P tasks inside its worker's job (:mod:`olrg_hpc.launch`), so a pool whose jobs span ``nodes`` and ``ntasks``
trains across nodes.

**Who can connect.** With ``security: true`` (the default) scheduler, workers and client talk TLS and each side
presents a certificate signed by a certificate authority made for this run (``Security.temporary``); the
scheduler refuses any connection without one. The workers' copy is written into ``STUDY_DIR/.credentials`` (0700
folder, 0600 files), removed when the run ends and, should the driver be killed, at the start of the next run,
which makes new ones. A leftover key is useless anyway: the authority that signed it lived only in the dead run's
scheduler.

**Worker jobs that cannot start.** A worker job whose worker never connects (a wrong ``python``, an unwritable
``local_directory``, a prologue that fails) ends without dask-jobqueue noticing. Before any job is submitted,
``sbatch --test-only`` checks every pool's rendered worker job script (partition, account, gres, limits); while
the study runs, :class:`SlurmWatch` compares the jobs in ``squeue`` with the workers that connected: a job gone
before its worker connected is a failed start (replaced, up to ``max_failed_starts``), and then the study stops
with one line quoting the last lines of the job's log.

**Ctrl-C.** dask-jobqueue replaces Python's SIGINT handler at import (Ctrl-C would exit 0 silently); it is
restored, so Ctrl-C raises ``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from olrg_hpc.cluster.base import RESOURCE_PREFIX, Echo, Kind, Pool, Session, entered
from olrg_hpc.cluster.pools import PoolJobs, PoolScaler
from olrg_hpc.config import SAFE_PATH, SlurmProfile, check_job_path
from olrg_hpc.errors import UserError
from olrg_hpc.launch import GPUS_ENV, LAUNCH_ENV
from olrg_hpc.tasks import POOL_ENV

CREDENTIALS = ".credentials"
#: a worker job that sbatch has not accepted after this long (dask-jobqueue retries silently) stops the study
SUBMIT_TIMEOUT_S = 120.0
#: how often the health check asks squeue (a SLURM controller serves many users: not more often than this)
CHECK_INTERVAL_S = 5.0


def threads_per_worker(p: SlurmProfile) -> int:
    return max(1, p.cores // p.processes)


def slurm_cluster_kwargs(p: SlurmProfile, study_dir: Path | None = None, pool: str | None = None,
                         resource: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``dask_jobqueue.SLURMCluster`` (and its job class) of one pool's profile ``p``
    (:meth:`~olrg_hpc.config.SlurmProfile.worker_pools`). ``pool``: its name, exported to the workers;
    ``resource``: the Dask resource its workers advertise (several pools)."""
    extra = list(p.job_extra_directives)
    skip = list(p.job_directives_skip)
    if p.gpus_per_job:
        extra.append(f"--gres=gpu:{p.gpus_per_job}")
    if p.ntasks > 1:  # dask-jobqueue writes '#SBATCH -n 1'
        skip.append("-n 1")
        extra.append(f"--ntasks={p.ntasks}")
    if p.nodes:
        extra.append(f"--nodes={p.nodes}")
    worker_extra: list[str] = []
    if p.worker_lifetime:
        # the worker retires (its tasks move elsewhere), its job ends, and a fresh job with a full walltime is
        # submitted; --lifetime-restart would restart the worker inside the old, expiring job
        worker_extra += ["--lifetime", p.worker_lifetime, "--lifetime-stagger", p.lifetime_stagger]
    resources = dict(p.resources)
    if resource:
        resources[resource] = threads_per_worker(p)
    if resources:  # the job script joins arguments with spaces, unquoted: one word, comma-separated
        worker_extra += ["--resources", ",".join(f"{k}={v:g}" for k, v in resources.items())]
    prologue = [f"export {POOL_ENV}={pool}"] if pool else []
    prologue += [f"export {LAUNCH_ENV}=srun"] + ([f"export {GPUS_ENV}={p.gpus_per_job}"] if p.gpus_per_job else [])
    log_dir = p.log_directory or (str(study_dir / "logs") if study_dir else None)
    kw: dict[str, Any] = dict(
        queue=p.queue, account=p.account, cores=p.cores, processes=p.processes, memory=p.memory,
        walltime=p.walltime, job_extra_directives=extra, job_directives_skip=skip,
        job_script_prologue=prologue + list(p.job_script_prologue), interface=p.interface,
        local_directory=p.local_directory, log_directory=log_dir, python=p.python or sys.executable,
        worker_extra_args=worker_extra, job_name=p.job_name,
        scheduler_options={"dashboard_address": p.dashboard_address},
    )
    return {k: v for k, v in kw.items() if v is not None}


def slurm_classes() -> tuple[Any, Any]:
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


def worker_job_script(profile: SlurmProfile, study_dir: Path | None = None, pool: str | None = None) -> str:
    """The worker job script dask-jobqueue submits for pool ``pool`` of ``profile`` (default: its first pool),
    scheduler address and TLS files aside."""
    _, job_cls = slurm_classes()
    pools = profile.worker_pools()
    name = pool or next(iter(pools))
    resource = f"{RESOURCE_PREFIX}{name}" if len(pools) > 1 else None
    kw = slurm_cluster_kwargs(pools[name], study_dir, name, resource)
    kw.pop("scheduler_options", None)
    kw.pop("log_directory", None)  # dask-jobqueue would create it; the test submission needs no log
    return job_cls(scheduler="tcp://127.0.0.1:8786", name="olrg-check", **kw).job_script()


def slurm_cmd(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise UserError(f"{cmd[0]}: no answer from the SLURM controller within 30 s") from None
    if out.returncode != 0:
        raise UserError(f"{cmd[0]}: {' '.join(out.stderr.split())[:300] or 'failed'} (is slurmctld running?)")
    return out.stdout


def _accounts() -> set[str] | None:
    """The user's SLURM accounts, or None when they cannot be known (no sacctmgr, no accounting daemon)."""
    if not shutil.which("sacctmgr"):
        return None
    try:
        res = subprocess.run(["sacctmgr", "-n", "-P", "show", "assoc", f"where user={getpass.getuser()}",
                              "format=account"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # without slurmdbd sacctmgr says so (with exit code 0): then there is nothing to check against
    if res.returncode != 0 or "not running a supported" in res.stdout + res.stderr:
        return None
    return set(res.stdout.split()) or None


def check_slurm(profile: SlurmProfile, study_dir: Path | None = None) -> None:
    """Fail in one line, before any job is submitted, when SLURM, a pool's partition or account is missing, or
    when ``sbatch --test-only`` refuses a pool's worker job script."""
    for cmd in ("sbatch", "squeue", "scancel", "sinfo", "srun"):
        if shutil.which(cmd) is None:
            raise UserError(f"{cmd}: not found on PATH; the slurm profile needs a SLURM client "
                            "(for a local test cluster: bash slurm/dev-cluster/start.sh)")
    pools = profile.worker_pools()
    partitions = slurm_cmd(["sinfo", "-h", "-o", "%R"]).split()
    accounts = _accounts() if any(p.account for p in pools.values()) else None
    for name, p in pools.items():
        at = f"pools.{name}." if profile.pools else ""
        if p.python is None and not SAFE_PATH.fullmatch(sys.executable):
            raise UserError(f"{at}python: this interpreter's path {sys.executable!r} cannot go into a job script; "
                            "set python in the profile")
        missing = [q for q in (p.queue or "").split(",") if q and q not in partitions]
        if missing:
            raise UserError(f"{at}queue: partition {missing[0]!r} does not exist (sinfo lists: "
                            f"{', '.join(partitions)})")
        if p.account and accounts and p.account not in accounts:
            raise UserError(f"{at}account: {p.account!r} is not one of your SLURM accounts "
                            f"(sacctmgr lists: {', '.join(sorted(accounts))})")
        with tempfile.NamedTemporaryFile("w", suffix=".sh", prefix="olrg-check-") as f:
            f.write(worker_job_script(profile, study_dir, name))
            f.flush()
            try:
                res = subprocess.run(["sbatch", "--test-only", f.name], capture_output=True, text=True, timeout=60)
            except subprocess.TimeoutExpired:
                raise UserError("sbatch --test-only: no answer from the SLURM controller within 60 s") from None
        if res.returncode != 0:
            msg = " ".join(res.stderr.replace("sbatch: error:", "").split())
            where = f"pool {name}'s" if profile.pools else "the profile's"
            raise UserError(f"sbatch refuses {where} worker job: {msg[:300] or f'exit code {res.returncode}'}")


class SlurmWatch:
    """Failed starts of worker jobs (module docstring); :meth:`check` is cheap between its squeue calls."""

    def __init__(self, cluster: Any, profile: SlurmProfile, log_dir: str | None) -> None:
        self.cluster, self.profile, self.log_dir = cluster, profile, log_dir
        self.connected: set[str] = set()  # job ids whose worker was seen connected
        self.failed: dict[str, str] = {}  # job id -> job name in the cluster
        self.job_names: dict[str, str] = {}  # job id -> SLURM job name (its log file's name)
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
            self.job_names[jid] = getattr(job, "job_name", None) or self.profile.job_name
            if any(n == name or n.startswith(f"{name}-") for n in names):
                self.connected.add(jid)
        if not jobs:
            return
        active = set(slurm_cmd(["squeue", "-h", "-u", str(os.getuid()), "-o", "%i"]).split())
        gone = [jid for jid in jobs if jid not in active and jid not in self.connected and jid not in self.failed]
        for jid in gone:
            self.failed[jid] = jobs[jid]
        if len(self.failed) >= self.profile.max_failed_starts:
            last = gone[-1] if gone else next(reversed(self.failed))
            raise UserError(f"worker jobs cannot start: {len(self.failed)} ended before their worker connected "
                            f"(max_failed_starts: {self.profile.max_failed_starts}); {self._log_tail(last)}")
        if gone:  # dask-jobqueue believes them alive: drop them, and the scaler submits replacements
            self.cluster.sync(self.cluster.scale_down, [jobs[j] for j in gone])

    def _log_tail(self, jid: str, n: int = 3) -> str:
        if self.log_dir is None:
            return f"job {jid}: no log directory"
        lines: list[str] = []
        job_name = self.job_names.get(jid, self.profile.job_name)
        paths = [Path(self.log_dir) / f"{job_name}-{jid}.{ext}" for ext in ("err", "out")]
        for p in paths:
            with contextlib.suppress(OSError):
                lines += [ln.strip() for ln in p.read_text(errors="replace").splitlines() if ln.strip()]
        tail = " | ".join(lines[-n:]) or "(empty)"
        return f"job {jid}, log {paths[0]}: {tail[-400:]}"


def temporary_security(study_dir: Path | None) -> tuple[Any, str]:
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


def drop_credentials(cluster: Any, cred_dir: str) -> None:
    """Delete the workers' credential files dask-jobqueue wrote (it keeps them as temporary-file objects on the
    cluster, ``_job_<name>``: closing them deletes them), then their folder."""
    for name in [n for n in vars(cluster) if n.startswith("_job_")]:
        f = getattr(cluster, name)
        if hasattr(f, "close") and hasattr(f, "name"):  # dask-jobqueue's _job_kwargs is a dict
            with contextlib.suppress(OSError):
                f.close()
    shutil.rmtree(cred_dir, ignore_errors=True)


def _bounds(p: SlurmProfile) -> tuple[int, int]:
    # a fixed job count is adapt(min = max): a job that died is resubmitted
    return (p.adapt.minimum_jobs, p.adapt.maximum_jobs) if p.adapt else ((p.jobs or 1),) * 2


def _describe(name: str, p: SlurmProfile) -> str:
    lo, hi = _bounds(p)
    jobs = f"adapting {lo}-{hi} jobs" if p.adapt else f"{hi} jobs"
    extra = [f"partition {p.queue}" if p.queue else "default partition"]
    if p.gpus_per_job:
        extra.append(f"gres gpu:{p.gpus_per_job}")
    if p.ntasks > 1:
        extra.append(f"{p.ntasks} tasks" + (f" on {p.nodes} nodes" if p.nodes else ""))
    return f"{name} ({', '.join(extra)}, {jobs})"


class SlurmKind(Kind):
    def check(self, profile: SlurmProfile, study_dir: Path | None = None) -> str:
        check_slurm(profile, study_dir)
        pools = f" of {len(profile.pools)} pools" if profile.pools else ""
        return f"partitions, accounts and worker jobs{pools} checked with sinfo, sacctmgr and sbatch --test-only"

    def check_output(self, profile: SlurmProfile, study_dir: Path, label: str) -> None:
        check_job_path(label, Path(study_dir).resolve())

    def start(self, stack: contextlib.ExitStack, profile: SlurmProfile, *, study_dir: Path | None, echo: Echo,
              log_file: Path | None) -> Session:
        import dask
        from distributed import Client

        slurm_cluster, job_cls = slurm_classes()
        check_slurm(profile, study_dir)
        pools = profile.worker_pools()
        several = len(pools) > 1
        kws = {name: slurm_cluster_kwargs(p, study_dir, name, f"{RESOURCE_PREFIX}{name}" if several else None)
               for name, p in pools.items()}
        # notice a lost worker job after 5 s instead of 15 s, so that it is replaced sooner
        stack.enter_context(dask.config.set({"distributed.deploy.lost-worker-timeout": "5s"}))
        kwargs = dict(next(iter(kws.values())))  # the scheduler's side; every pool's jobs come from the scaler
        if profile.security:
            kwargs["security"], kwargs["shared_temp_directory"] = temporary_security(study_dir)
        cluster = slurm_cluster(**kwargs)
        if profile.security:
            stack.callback(drop_credentials, cluster, kwargs["shared_temp_directory"])
        cluster = entered(stack, cluster)
        client = entered(stack, Client(cluster))
        shared = {k: cluster._job_kwargs[k] for k in ("config_name", "protocol", "security", "interface")
                  if k in cluster._job_kwargs}
        jobs, infos = [], []
        for name, p in pools.items():
            spec: dict[str, Any] = {"cls": job_cls, "options": {**shared, **{k: v for k, v in kws[name].items()
                                                                            if k != "scheduler_options"}}}
            if p.processes > 1:
                spec["group"] = [f"-{i}" for i in range(p.processes)]
            lo, hi = _bounds(p)
            resource = f"{RESOURCE_PREFIX}{name}" if several else None
            jobs.append(PoolJobs(name, spec, lo, hi, p.processes * threads_per_worker(p), resource))
            infos.append(Pool(name, p.is_accelerator, p.ntasks, threads_per_worker(p), resource))
        scaler = PoolScaler(cluster, jobs)
        scaler.start()
        stack.callback(scaler.stop)  # first thing on the way out: no job submitted while the cluster closes
        watch = SlurmWatch(cluster, profile, kwargs.get("log_directory"))
        if several:
            echo(f"SLURMCluster: {len(pools)} pools: {'; '.join(_describe(n, p) for n, p in pools.items())}; "
                 "lost jobs are replaced")
        elif profile.adapt:
            echo(f"SLURMCluster: adapting between {_bounds(profile)[0]} and {_bounds(profile)[1]} worker jobs")
        else:
            echo(f"SLURMCluster: {_bounds(profile)[1]} worker jobs submitted (squeue shows them; lost ones are "
                 "replaced)")
        return Session(client, infos, watch.check)


KIND = SlurmKind()
