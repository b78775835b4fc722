"""What every cluster kind shares: the :class:`Kind` interface, worker pools and where a task goes, the client's
lifetime (:func:`open_client`), the dashboard's tunnel hint.

A kind is one module of this package named like its ``kind:`` value, holding ``KIND``, an instance of a
:class:`Kind` subclass; its profile model is the entry of :data:`olrg_hpc.config.PROFILE_KINDS`.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import socket
import sys
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from olrg_hpc.errors import UserError
from olrg_hpc.tasks import Resources

log = logging.getLogger("olrg_hpc.cluster")

Echo = Callable[[str], None]
#: the Dask resource a worker of pool NAME advertises in a cluster of several pools
RESOURCE_PREFIX = "pool-"


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Pool:
    """A worker pool as the runner sees it.

    ``slots``: processes one task may span in one of its worker jobs (``None``: started on the worker's machine,
    no bound); ``threads``: task threads of one of its workers (a multi-process task holds them all);
    ``resource``: the Dask resource its workers advertise, ``None`` in a cluster of one pool (no restriction).
    """

    name: str
    accelerator: bool = False
    slots: int | None = None
    threads: int = 1
    resource: str | None = None


def placement(res: Resources, pools: Sequence[Pool]) -> tuple[Pool | None, dict[str, float] | None]:
    """The pool a task with resources ``res`` runs on and the Dask resources to ask for (None: no restriction).

    A task that wants an accelerator goes to the first pool with accelerators, any other task to the first pool
    without (either falls back to the first pool when there is none of its kind); a multi-process task to the
    first such pool whose jobs hold its processes. ValueError when none can.
    """
    if not pools:
        return None, None
    kind = [p for p in pools if p.accelerator == res.accelerator] or list(pools)
    if res.processes is not None:
        fits = [p for p in kind if p.slots is None or p.slots >= res.processes]
        if not fits:
            best = max(kind, key=lambda p: p.slots or 0)
            raise ValueError(f"asks for {res.processes} processes; pool {best.name!r} runs at most {best.slots} per "
                             "worker job (its ntasks)")
        kind = fits
    pool = kind[0]
    if pool.resource is None:
        return pool, None
    return pool, {pool.resource: float(pool.threads if res.processes is not None else 1)}


@dataclass
class Session:
    """A running cluster as the runner uses it: the client, its pools, and the health check to call while tasks
    run (it raises a one-line UserError when worker jobs cannot start), if any."""

    client: Any
    pools: list[Pool] = field(default_factory=list)
    check: Callable[[], None] | None = None


class Kind:
    """A cluster kind: how a validated profile becomes a connected Dask client. Subclasses override :meth:`start`
    and, where the kind has something to check before a run, :meth:`check` and :meth:`check_output`."""

    #: whether the scheduler runs where olrg-hpc runs (the tunnel hint)
    scheduler_here = True

    def check(self, profile: Any, study_dir: Path | None = None) -> str:
        """Checks of the profile against the system, before anything starts (``validate``); one-line UserError,
        else what was checked (for the validate line; "" for nothing)."""
        return ""

    def check_output(self, profile: Any, study_dir: Path, label: str) -> None:
        """UserError when ``study_dir`` cannot serve this kind (e.g. a path a job script cannot name)."""

    def start(self, stack: contextlib.ExitStack, profile: Any, *, study_dir: Path | None, echo: Echo,
              log_file: Path | None) -> Session:
        """Start (or connect to) the cluster; everything started is closed by ``stack``."""
        raise NotImplementedError


def kind_of(profile: Any) -> Kind:
    """The :class:`Kind` of a validated profile (the module ``olrg_hpc.cluster.<kind>``)."""
    return importlib.import_module(f"olrg_hpc.cluster.{profile.kind}").KIND


_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def health_check(client: Any) -> Callable[[], None] | None:
    """The check :func:`olrg_hpc.runner.run_tasks` should call while the study runs on ``client``, or None."""
    s = _SESSIONS.get(client)
    return s.check if s else None


def pools_of(client: Any) -> list[Pool]:
    """The worker pools of the cluster behind ``client`` (empty when unknown: a scheduler started elsewhere)."""
    s = _SESSIONS.get(client)
    return list(s.pools) if s else []


@contextlib.contextmanager
def open_client(profile: Any, *, study_dir: Path | None = None, echo: Echo = _stderr,
                log_file: Path | None = None) -> Iterator[Any]:
    """A connected ``distributed.Client`` for the profile; everything it started is stopped on exit.

    ``log_file``: where LocalCluster worker processes write their standard error (default: the terminal's).
    """
    kind = kind_of(profile)
    with contextlib.ExitStack() as stack:
        session = kind.start(stack, profile, study_dir=study_dir, echo=echo, log_file=log_file)
        _SESSIONS[session.client] = session
        link = session.client.dashboard_link
        echo(f"dashboard: {link}")
        hint = tunnel_hint(link, scheduler_here=kind.scheduler_here)
        if hint:
            echo(f"dashboard from your laptop: {hint}")
        yield session.client


def entered(stack: contextlib.ExitStack, cm: Any) -> Any:
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


def unreachable(address: str, exc: BaseException) -> UserError:
    return UserError(f"scheduler {address}: unreachable ({type(exc).__name__})")
