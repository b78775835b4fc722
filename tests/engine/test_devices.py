"""JAX devices in provenance, and the warning for a GPU profile whose workers see only CPUs (olrg_hpc.devices):
a real LocalCluster whose workers run JAX on CPUs stands in for GPU nodes with the CPU build of jaxlib."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest
from distributed import Client, LocalCluster

from olrg_hpc.config import LocalProfile, SlurmProfile
from olrg_hpc.devices import gpu_request, gpu_requests, gpu_warning, watch_worker_devices
from olrg_hpc.provenance import jax_devices


@pytest.mark.parametrize(("profile", "request_"), [
    (SlurmProfile(kind="slurm", gpus_per_job=2), "gpus_per_job: 2"),
    (SlurmProfile(kind="slurm", job_extra_directives=["--qos=long", "--gres=gpu:a100:4"]), "--gres=gpu:a100:4"),
    (SlurmProfile(kind="slurm", job_extra_directives=["--gpus-per-node=8"]), "--gpus-per-node=8"),
    (SlurmProfile(kind="slurm", job_extra_directives=["--gres=tmpdisk:100", "-C cpu"]), None),
    (SlurmProfile(kind="slurm"), None),
    (LocalProfile(kind="local"), None),
])
def test_what_asks_for_gpus(profile, request_):
    assert gpu_request(profile) == request_


def test_only_the_pools_that_ask_for_gpus_are_checked():
    two = SlurmProfile(kind="slurm", pools={"cpu": {"queue": "cpu"}, "gpu": {"queue": "gpu", "gpus_per_job": 4}})
    assert gpu_requests(two) == {"gpu": "gpus_per_job: 4"}
    assert gpu_requests(SlurmProfile(kind="slurm", gpus_per_job=1)) == {None: "gpus_per_job: 1"}
    assert gpu_requests(SlurmProfile(kind="slurm", pools={"cpu": {"queue": "cpu"}})) == {}


def test_the_warning_names_the_request_the_worker_and_what_it_sees():
    cpu = {"jax_backend": "cpu", "jax_devices": "16 x cpu"}
    line = gpu_warning("gpus_per_job: 1", "tls://10.0.0.7:4242", cpu)
    assert line is not None and "\n" not in line
    assert "gpus_per_job: 1" in line and "tls://10.0.0.7:4242" in line and "cpu (16 x cpu)" in line
    assert "'.[cuda12]'" in line
    assert gpu_warning("gpus_per_job: 1", "w", {"jax_backend": "gpu", "jax_devices": "4 x gpu (NVIDIA H100)"}) is None


def test_jax_devices_only_where_jax_was_imported():
    import jax

    info = jax_devices()
    assert info["jax_backend"] == jax.default_backend() == "cpu"  # the test session runs JAX on CPUs
    assert info["jax_devices"] == f"{len(jax.devices())} x cpu"
    # a process that never imported JAX records nothing (and starts no backend to find out)
    out = subprocess.run([sys.executable, "-c", "import json; from olrg_hpc.provenance import jax_devices; "
                          "import sys; print(json.dumps([jax_devices(), 'jax' in sys.modules]))"],
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [{}, False]


def test_a_gpu_profile_whose_workers_see_only_cpus_warns_once_and_logs_every_worker(caplog):
    """Two worker processes start JAX on CPUs: each reports its devices into the log, the terminal gets one line."""
    said: list[str] = []
    with caplog.at_level(logging.INFO, logger="olrg_hpc.devices"), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        assert watch_worker_devices(client, SlurmProfile(kind="slurm", gpus_per_job=1), said.append)
        deadline = time.monotonic() + 120  # the reports travel worker -> scheduler -> client asynchronously
        while time.monotonic() < deadline and sum("JAX backend" in r.message for r in caplog.records) < 2:
            time.sleep(0.2)
        assert not watch_worker_devices(client, LocalProfile(kind="local"), said.append)  # nothing to check
    reports = [r.message for r in caplog.records if "JAX backend" in r.message]
    assert len(reports) == 2 and all("JAX backend cpu" in m for m in reports), reports
    assert len(said) == 1 and said[0].startswith("warning: the cluster profile asks for GPUs (gpus_per_job: 1)")
    assert [r.message for r in caplog.records if r.levelno == logging.WARNING] == said
