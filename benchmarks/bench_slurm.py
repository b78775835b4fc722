"""Dask on SLURM against a LocalCluster with the same number of workers, on the same machine.

(1) Seconds from opening a SLURM profile to all worker jobs connected (submission, scheduling, Python
start-up, TLS handshake). (2) Tasks per second through the runner, once workers are up, for the same
graph of small-block solver tasks on SLURM workers and on LocalCluster workers (target: SLURM within
1.3x of local). Needs a running SLURM (bash slurm/dev-cluster/start.sh).

    python benchmarks/bench_slurm.py [--workers 2] [--tasks 300] [--out benchmarks/results/slurm.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/slurm.json")
    args = ap.parse_args()

    from olrg_hpc.cluster import open_client
    from olrg_hpc.config import LocalProfile, SlurmProfile
    from olrg_hpc.runner import run_tasks
    from olrg_hpc.spins.quench import quench_task
    from olrg_hpc.tasks import Task

    def tasks(tag: str) -> list[Task]:
        params = {"model": "tfim", "n_sites": 8, "method": "ed", "t_max": 1.0, "n_times": 11, "profile_sites": 2}
        return [Task(f"{tag}-{i}", quench_task, {**params, "couplings": {"J": 1.0, "h": 0.5 + i * 1e-3}})
                for i in range(args.tasks)]

    profiles = {
        "local": LocalProfile(kind="local", n_workers=args.workers, dashboard_address=":0"),
        "slurm": SlurmProfile(kind="slurm", queue="debug", cores=1, memory="1GB", walltime="00:30:00",
                              jobs=args.workers, interface="lo", dashboard_address=":0", job_name="olrg-bench"),
    }
    result: dict = {"benchmark": "slurm_vs_local", "workers": args.workers, "tasks": args.tasks,
                    "host": platform.node(), "cpus": os.cpu_count()}
    for kind, prof in profiles.items():
        t0 = time.perf_counter()
        with open_client(prof, study_dir=Path(tempfile.mkdtemp(prefix="olrg-bs-")), echo=lambda _m: None) as client:
            client.wait_for_workers(args.workers, timeout=300)
            result[f"{kind}_startup_s"] = time.perf_counter() - t0
            rates = []
            for r in range(args.repeats):
                tmp = Path(tempfile.mkdtemp(prefix="olrg-bench-"))
                s = run_tasks(tasks(f"{kind}{r}"), tmp, client, progress=False, gather_results=False)
                assert s.ok
                rates.append(args.tasks / s.seconds)
                shutil.rmtree(tmp)
            result[f"{kind}_tasks_per_s"] = max(rates)
        print(f"{kind}: workers up in {result[f'{kind}_startup_s']:.1f} s, {max(rates):.1f} tasks/s", flush=True)
    result["slurm_over_local_time_ratio"] = result["local_tasks_per_s"] / result["slurm_tasks_per_s"]
    print(f"time per task, SLURM / local: {result['slurm_over_local_time_ratio']:.2f} (target <= 1.3)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
