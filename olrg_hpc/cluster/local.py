"""``kind: local``: a ``distributed.LocalCluster`` on this machine, one pool named ``local``.

With ``security: true`` (the default) scheduler, workers and client talk TLS with credentials made for this run,
kept in memory (worker processes receive them through the pipe that starts them). Worker processes are started
with their standard error in ``STUDY_DIR/run.log``, so their messages (a traceback when Ctrl-C reaches them while
they start) never reach the terminal. A task that asks for processes runs them on this machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from olrg_hpc.cluster.base import Echo, Kind, Pool, Session, entered
from olrg_hpc.config import LocalProfile
from olrg_hpc.tasks import POOL_ENV

POOL = "local"


def local_cluster_kwargs(p: LocalProfile) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    n_workers = p.n_workers or max(1, cores // p.threads_per_worker)
    kw: dict[str, Any] = dict(n_workers=n_workers, threads_per_worker=p.threads_per_worker, processes=p.processes,
                              memory_limit=p.memory_limit, dashboard_address=p.dashboard_address,
                              silence_logs=logging.ERROR)
    if p.processes:
        kw["env"] = {POOL_ENV: POOL}
    return kw


@contextlib.contextmanager
def stderr_into(path: Path | None) -> Iterator[None]:
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


class LocalKind(Kind):
    def start(self, stack: contextlib.ExitStack, profile: LocalProfile, *, study_dir: Path | None, echo: Echo,
              log_file: Path | None) -> Session:
        from distributed import Client, LocalCluster
        from distributed.security import Security

        kwargs = local_cluster_kwargs(profile)
        security = Security.temporary() if profile.security else None
        if security is not None:
            kwargs.update(security=security, protocol="tls://")
        with stderr_into(log_file):
            cluster = entered(stack, LocalCluster(**kwargs))
        client = entered(stack, Client(cluster, security=security))
        echo(f"LocalCluster: {len(cluster.workers)} workers x {profile.threads_per_worker} threads; scheduler "
             f"{cluster.scheduler_address}" + (" (TLS, credentials of this run)" if security else ""))
        return Session(client, [Pool(POOL, threads=profile.threads_per_worker)])


KIND = LocalKind()
