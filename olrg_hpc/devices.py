"""Do the workers see the GPUs that the cluster profile asks for?

A profile that asks for GPUs (``gpus_per_job``, or a ``--gres=gpu...`` / ``--gpus...`` directive) but whose
workers run the CPU build of jaxlib, or whose jobs see no GPU, would run every task on CPUs without a word from
JAX. :func:`watch_worker_devices`, called by the command line as soon as the client is up, installs a worker
plugin (:class:`DeviceProbe`) that reports each worker's JAX backend and devices
(:func:`olrg_hpc.provenance.jax_devices`) when it starts, replacements and late joiners included. Every report
goes into the run log; the first worker of a GPU profile that sees no GPU also gives one warning line on the
terminal. In a profile with worker pools, only the pools that ask for GPUs are checked (each worker reports its
pool). Each task records the same facts in its shard (``jax_backend``, ``jax_devices``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from olrg_hpc.provenance import jax_devices
from olrg_hpc.tasks import POOL_ENV

#: the topic of the workers' device reports (``Worker.log_event`` -> ``Client.subscribe_topic``)
DEVICE_TOPIC = "olrg-hpc-devices"
#: sbatch options that ask for GPUs by count (``--gres`` asks for them when it names ``gpu``)
GPU_OPTIONS = ("--gpus", "--gpus-per-node", "--gpus-per-task", "--gpus-per-socket", "-G")
#: JAX backends that run on a GPU
GPU_BACKENDS = ("gpu", "cuda", "rocm")

_log = logging.getLogger(__name__)


def gpu_request(profile: Any) -> str | None:
    """What in the cluster ``profile`` asks for GPUs (``gpus_per_job: 2``, ``--gres=gpu:a100:4``), or None."""
    n = int(getattr(profile, "gpus_per_job", 0) or 0)
    if n > 0:
        return f"gpus_per_job: {n}"
    for d in getattr(profile, "job_extra_directives", None) or []:
        option = d.split("=", 1)[0].split(" ", 1)[0]
        if option in GPU_OPTIONS or (option == "--gres" and "gpu" in d):
            return d
    return None


def gpu_requests(profile: Any) -> dict[str | None, str]:
    """What asks for GPUs (:func:`gpu_request`) in each worker pool of ``profile`` that asks for them; the key
    ``None`` stands for every worker, in a profile without pools."""
    if getattr(profile, "pools", None):
        return {name: r for name, p in profile.worker_pools().items() if (r := gpu_request(p)) is not None}
    request = gpu_request(profile)
    return {} if request is None else {None: request}


def gpu_warning(request: str, worker: str, info: Mapping[str, str]) -> str | None:
    """The warning line for a worker whose JAX (``info``: :func:`~olrg_hpc.provenance.jax_devices`) has no GPU
    although the profile asks for GPUs (``request``: :func:`gpu_request`); None when it has one."""
    if info.get("jax_backend") in GPU_BACKENDS:
        return None
    seen = f"{info.get('jax_backend', 'no backend')} ({info.get('jax_devices', '?')})"
    return (f"warning: the cluster profile asks for GPUs ({request}) but JAX on worker {worker} runs on {seen}: "
            "install JAX's CUDA build where the workers run (pip install -e '.[cuda12]') and check that the job sees "
            "its GPUs (nvidia-smi inside the job); the study goes on, on CPUs")


class DeviceProbe(WorkerPlugin):
    """On every worker, when it starts: import JAX and report its backend and devices on :data:`DEVICE_TOPIC`."""

    name = "olrg-hpc-device-probe"

    def setup(self, worker: Any) -> None:
        import jax  # noqa: F401 - the point of the probe: the backend a task on this worker gets

        worker.log_event(DEVICE_TOPIC, {"worker": str(worker.address), "pool": os.environ.get(POOL_ENV, ""),
                                        **jax_devices()})


def watch_worker_devices(client: Any, profile: Any, warn: Callable[[str], None]) -> bool:
    """For a profile that asks for GPUs: log every worker's JAX devices as it starts, and ``warn`` (one line, once
    per run) when a worker of a pool that asks for GPUs sees none. Returns whether the profile asks for GPUs
    (nothing is installed if not)."""
    requests = gpu_requests(profile)
    if not requests:
        return False
    warned: list[str] = []

    def on_report(event: tuple[float, Mapping[str, str]]) -> None:
        info = event[1]
        worker = info.get("worker", "?")
        _log.info("worker %s: JAX backend %s, devices %s", worker, info.get("jax_backend", "none"),
                  info.get("jax_devices", "none"))
        request = requests.get(None, requests.get(info.get("pool", "")))
        line = None if request is None else gpu_warning(request, worker, info)
        if line is not None and not warned:
            warned.append(line)
            _log.warning(line)
            warn(line)

    client.subscribe_topic(DEVICE_TOPIC, on_report)
    client.register_plugin(DeviceProbe())
    return True
