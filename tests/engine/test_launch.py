"""Tasks that span processes (olrg_hpc.launch) on this machine, through the runner: P processes x d emulated CPU
devices joined by jax.distributed (gloo), process 0 storing the shard, a failure in one process reported in one
line, and a flow training of 2 processes x 2 devices that follows the loss trajectory of 1 process x 4 devices.

The launched processes import this module by name (they get the worker's sys.path), so its task functions are
plain module-level functions. An in-process LocalCluster runs the runner's side.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from olrg_hpc import store
from olrg_hpc.launch import xla_flags
from olrg_hpc.runner import run_tasks
from olrg_hpc.tasks import Resources, Task


def global_sum(n_per_device: int, seed: int) -> dict:
    """Sum of 0..n-1 over an array sharded across every device of every process: n(n-1)/2 exactly."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec

    from olrg_hpc.sharding import data_mesh

    mesh = data_mesh()
    n = n_per_device * len(jax.devices())
    full = np.arange(n, dtype=np.float64)
    arr = jax.make_array_from_callback((n,), NamedSharding(mesh, PartitionSpec("data")), lambda idx: full[idx])
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(arr)
    return {"total": float(total), "processes": jax.process_count(), "devices": len(jax.devices()),
            "local_devices": jax.local_device_count(), "seed_used": seed}


def fail_on_process(which: int) -> dict:
    import jax

    if jax.process_index() == which:
        raise ValueError(f"process {which} cannot go on")
    return {"ok": 1}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0") as c, \
            Client(c) as cl:
        yield cl


def _keys(study_dir: Path) -> dict[str, str]:
    return {t["name"]: t["key"] for t in json.loads((study_dir / store.MANIFEST).read_text())["tasks"]}


def test_xla_flags_set_the_device_count_and_keep_the_rest():
    assert xla_flags("--a=1 --xla_force_host_platform_device_count=8 --b", 2) == \
        "--a=1 --b --xla_force_host_platform_device_count=2"
    assert xla_flags("--a=1", None) == "--a=1"


def test_a_task_of_two_processes_reduces_over_all_their_devices(tmp_path, client):
    tasks = [Task("sum", global_sum, {"n_per_device": 16}, resources=Resources(processes=2, devices=2)),
             Task("sum-1x3", global_sum, {"n_per_device": 15}, resources=Resources(processes=1, devices=3))]
    s = run_tasks(tasks, tmp_path, client, progress=False)
    assert s.ok, s.failed
    res = store.datasets(s.study_file)
    n = 16 * 4
    assert res["tasks/sum/total"] == n * (n - 1) / 2  # exact in float64
    assert (res["tasks/sum/processes"], res["tasks/sum/devices"], res["tasks/sum/local_devices"]) == (2, 4, 2)
    assert (res["tasks/sum-1x3/processes"], res["tasks/sum-1x3/devices"]) == (1, 3)
    shards = store.Shards(tmp_path)
    _, _, attrs, _ = shards.info(_keys(tmp_path)["sum"])
    assert attrs["launch"] == "2 processes x 2 cpu devices"
    assert not list((tmp_path / ".launch").iterdir())  # the working folders of finished launches are gone


def test_a_failing_process_fails_the_task_in_one_line_with_its_traceback(tmp_path, client, caplog):
    tasks = [Task("bad", fail_on_process, {"which": 1}, resources=Resources(processes=2, devices=1))]
    with caplog.at_level("ERROR", logger="olrg_hpc.runner"):
        s = run_tasks(tasks, tmp_path, client, retries=0, progress=False)
    assert dict(s.failed)["bad"] == "LaunchedTaskError: process 1/2: ValueError: process 1 cannot go on"
    assert "traceback of process 1/2" in caplog.text and "in fail_on_process" in caplog.text


def test_two_processes_of_two_devices_train_as_one_process_of_four(tmp_path, client):
    """A flow training task (the flow study's, at toy size) as 2 processes x 2 devices and as 1 process x 4
    devices: the same seed, batch and steps, so the same loss trajectory up to the order of the gradient and loss
    reductions (within a process, then across processes by gloo, against all four in one process)."""
    from olrg_hpc.flows import pipeline

    params = {"point": {"L": 4, "beta": 0.5, "lam": 0.5}, "variant": "gaussian", "steps": 20, "batch_size": 16,
              "lr": 5e-3, "cosine": True, "metrics_every": 10, "metrics_batch": 16,
              "flow": {"kind": "z2", "n_layers": 2, "hidden": [4], "kernel_size": 3}}
    losses = {}
    for p, d in ((2, 2), (1, 4)):
        task = Task("train", pipeline.train_flow_task, params, resources=Resources(accelerator=True, processes=p,
                                                                                   devices=d))
        s = run_tasks([task], tmp_path / f"{p}x{d}", client, study_seed=7, progress=False)
        assert s.ok, s.failed
        res = store.datasets(s.study_file)
        assert res["tasks/train/devices"] == 4
        losses[p, d] = res["tasks/train/loss"]
    a, b = losses[2, 2], losses[1, 4]
    assert a.shape == b.shape == (20,) and b[-1] < b[0]
    print("max relative difference", np.max(np.abs(a - b) / np.abs(b)))
    np.testing.assert_allclose(a, b, rtol=1e-6)


CTRL_C_STUDY = """\
study: launch-ctrl-c
workflow: flow_study
seed: 1
params:
  points: [{L: 4, beta: 0.5}]
  variants: [gaussian]
  flow: {kind: z2, n_layers: 2, hidden: [4]}
  training: {steps: 100000, batch_size: 16, metrics_every: 50000, metrics_batch: 16, processes: 2,
             devices_per_process: 2}
  flow_hmc: {variants: []}
"""


def test_ctrl_c_ends_the_processes_of_a_running_training(tmp_path):
    """Ctrl-C to the driver while a training of 2 processes runs: exit 130, and the processes end with their worker
    (the cluster closes; the kernel kills them with the worker process that started them)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    (tmp_path / "s.yaml").write_text(CTRL_C_STUDY)
    (tmp_path / "local.yaml").write_text("kind: local\nn_workers: 1\ndashboard_address: ':0'\n")
    proc = subprocess.Popen([sys.executable, "-m", "olrg_hpc.cli", "run", "s.yaml", "--cluster", "local.yaml",
                             "--output", "st", "--no-progress", "--no-report"], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    def launched() -> list[psutil.Process]:
        """The training's processes: `python -m olrg_hpc.launch FOLDER` started in this study's folder."""
        out = []
        for p in psutil.process_iter(["cmdline", "cwd"]):
            cmd = p.info["cmdline"] or []
            if "olrg_hpc.launch" in cmd and p.info["cwd"] and Path(p.info["cwd"]) == tmp_path:
                out.append(p)
        return out

    deadline = time.monotonic() + 300
    procs: list[psutil.Process] = []
    while time.monotonic() < deadline and len(procs) < 2:
        assert proc.poll() is None, proc.communicate()[1]
        procs = launched()
        time.sleep(0.2)
    assert len(procs) == 2, "the training's processes never started"
    time.sleep(2)  # well into the training
    assert all(p.is_running() for p in procs)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    gone, alive = psutil.wait_procs(procs, timeout=30)
    assert not alive, f"processes of the interrupted training still run: {[p.pid for p in alive]}"
