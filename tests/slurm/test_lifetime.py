"""Workers reaching their lifetime retire before walltime and are replaced by fresh jobs, staggered, and
work keeps completing across the retirements.

The test keeps the workers busy with short tasks (0.5 s against a 20 s lifetime, as in production: minutes
against hours) until a replacement job appears, so that it does not depend on how fast this machine runs
a study; then a real study runs to completion on the replaced workers. A task that outlived every worker
would be rescheduled forever, hence the short tasks.
"""

from __future__ import annotations

import subprocess
import time
import uuid

import pytest
from distributed import as_completed

from olrg_hpc.cluster import open_client
from olrg_hpc.config import load_profile
from olrg_hpc.runner import run_tasks
from olrg_hpc.spins.quench import quench_task
from olrg_hpc.tasks import Task

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _jobs(name: str) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, timeout=30)
    return set(out.stdout.split())


def test_workers_retire_and_are_replaced(tmp_path):
    name = f"olrg-life-{uuid.uuid4().hex[:6]}"
    (tmp_path / "p.yaml").write_text(
        f"kind: slurm\nqueue: debug\nmemory: 1GB\nwalltime: '00:05:00'\njobs: 2\ninterface: lo\njob_name: {name}\n"
        "worker_lifetime: 20s\nlifetime_stagger: 4s\ndashboard_address: ':0'\n")
    _, profile = load_profile(str(tmp_path / "p.yaml"))
    with open_client(profile, study_dir=tmp_path, echo=lambda _: None) as client:
        client.wait_for_workers(2, timeout=180)
        first = _jobs(name)
        # results are taken as they finish, as the study runner stores them: a worker that retires last has
        # nowhere to hand its memory, so results kept on the workers are lost with it and recomputed, and a
        # backlog recomputed across every later retirement ends in KilledWorker (seen once in CI)
        pending = as_completed()
        submitted = finished = 0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (_jobs(name) - first):
            pending.add(client.submit(time.sleep, 0.5, pure=False))
            submitted += 1
            for f in pending.next_batch(block=False):
                f.result()  # raises if a task submitted across the retirement failed
                finished += 1
            time.sleep(0.25)
        new = _jobs(name) - first
        assert new, f"no worker job was replaced within 300 s (jobs: {sorted(first)})"
        for f in pending:
            f.result()
            finished += 1
        assert finished == submitted > 0

        tasks = [Task(f"tfim-N{n}", quench_task, {"model": "tfim", "n_sites": n, "couplings": {"J": 1.0, "h": 1.0},
                                                  "initial": "up", "t_max": 2.0, "n_times": 41, "method": "ed"})
                 for n in (6, 7, 8, 9)]
        summary = run_tasks(tasks, tmp_path / "study", client, progress=False)
    assert summary.ok and summary.computed == 4, summary.lines()
