"""Cluster profiles to Dask clients: one module per kind, a common interface in :mod:`~olrg_hpc.cluster.base`.

``open_client(profile)`` is a context manager: it starts (or connects to) the cluster of the profile's kind,
prints the dashboard link (with an ssh tunnel hint when the scheduler is not on the machine the user sits at), and
on exit, normal or not (Ctrl-C, errors), closes the client and releases every SLURM job it submitted. The
runner asks :func:`pools_of` where tasks may go (:func:`placement`) and calls :func:`health_check` while tasks run.

Kinds (``kind:`` of a profile): :mod:`~olrg_hpc.cluster.local` (LocalCluster), :mod:`~olrg_hpc.cluster.slurm`
(dask-jobqueue, one or several worker pools, each adapting on its own: :mod:`~olrg_hpc.cluster.pools`),
:mod:`~olrg_hpc.cluster.address` (a running scheduler). A new kind is a module here named like its ``kind:`` value
with ``KIND = MyKind()`` (a :class:`~olrg_hpc.cluster.base.Kind`), and its profile model in
:data:`olrg_hpc.config.PROFILE_KINDS`.

The dashboard listens on ``127.0.0.1`` unless the profile's ``dashboard_address`` says otherwise; other users of
the same machine can still open it (it has no login), and it shows task names, progress, worker logs and call
stacks, but cannot run code.
"""

from olrg_hpc.cluster.base import (
                                   Kind,
                                   Pool,
                                   Session,
                                   health_check,
                                   kind_of,
                                   open_client,
                                   placement,
                                   pools_of,
                                   tunnel_hint,
)
from olrg_hpc.cluster.local import local_cluster_kwargs
from olrg_hpc.cluster.slurm import check_slurm, slurm_cluster_kwargs, worker_job_script

__all__ = ["Kind", "Pool", "Session", "check_slurm", "health_check", "kind_of", "local_cluster_kwargs",
           "open_client", "placement", "pools_of", "slurm_cluster_kwargs", "tunnel_hint", "worker_job_script"]
