"""Dask on SLURM against a LocalCluster with the same number of workers, on the same machine.

(1) Seconds from opening a SLURM profile to all worker jobs connected (submission, scheduling, Python start-up, TLS
handshake). (2) Tasks per second through the runner, once workers are up, for the same graph of small-block solver
tasks on SLURM workers and on LocalCluster workers. (3) A study of ``--big`` (10,000) no-op tasks through the
runner on each: tasks per second and the scheduler's memory (the scheduler runs in this process for both kinds:
the growth of its resident set over the run, sampled every 0.1 s). Target: tasks per second on SLURM within 1.3x
of local. Needs a running SLURM (bash slurm/dev-cluster/start.sh).

    python benchmarks/bench_slurm.py [--workers 2] [--tasks 300] [--big 10000] [--out benchmarks/results/slurm.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import threading
import time
from pathlib import Path


class PeakRSS:
    """The peak resident set of this process while active, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.1) -> None:
        import psutil

        self.proc, self.interval = psutil.Process(), interval
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--big", type=int, default=10_000, help="no-op tasks of the large study")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--scratch", default=".", help="folder for the study folders (default: here)")
    ap.add_argument("--out", default="benchmarks/results/slurm.json")
    args = ap.parse_args()

    from olrg_hpc.cluster import open_client, pools_of
    from olrg_hpc.config import LocalProfile, SlurmProfile
    from olrg_hpc.runner import run_tasks
    from olrg_hpc.spins.quench import quench_task
    from olrg_hpc.tasks import Task, noop

    def tasks(tag: str) -> list[Task]:
        params = {"model": "tfim", "n_sites": 8, "method": "ed", "t_max": 1.0, "n_times": 11, "profile_sites": 2}
        return [Task(f"{tag}-{i}", quench_task, {**params, "couplings": {"J": 1.0, "h": 0.5 + i * 1e-3}})
                for i in range(args.tasks)]

    profiles = {
        "local": LocalProfile(kind="local", n_workers=args.workers, dashboard_address=":0"),
        "slurm": SlurmProfile(kind="slurm", queue="debug", cores=1, memory="1GB", walltime="00:30:00",
                              jobs=args.workers, interface="lo", dashboard_address=":0", job_name="olrg-bench"),
    }
    result: dict = {"benchmark": "slurm_vs_local", "workers": args.workers, "tasks": args.tasks, "big": args.big,
                    "host": platform.node(), "cpus": os.cpu_count()}
    for kind, prof in profiles.items():
        t0 = time.perf_counter()
        study = Path(tempfile.mkdtemp(prefix="olrg-bs-", dir=args.scratch))
        with open_client(prof, study_dir=study, echo=lambda _m: None) as client:
            client.wait_for_workers(args.workers, timeout=300)
            result[f"{kind}_startup_s"] = time.perf_counter() - t0
            rates = []
            for r in range(args.repeats):
                tmp = Path(tempfile.mkdtemp(prefix="olrg-bench-", dir=args.scratch))
                s = run_tasks(tasks(f"{kind}{r}"), tmp, client, progress=False, gather_results=False,
                              pools=pools_of(client))
                assert s.ok
                rates.append(args.tasks / s.seconds)
                shutil.rmtree(tmp)
            result[f"{kind}_tasks_per_s"] = max(rates)
            if args.big:
                big = [Task(f"noop-{i}", noop, {"i": i}) for i in range(args.big)]
                tmp = Path(tempfile.mkdtemp(prefix="olrg-big-", dir=args.scratch))
                with PeakRSS() as mem:
                    s = run_tasks(big, tmp, client, progress=False, pools=pools_of(client))
                assert s.ok and s.computed == args.big
                result[f"{kind}_big_tasks_per_s"] = args.big / s.seconds
                result[f"{kind}_big_seconds"] = s.seconds
                result[f"{kind}_big_scheduler_rss_growth_mb"] = (mem.peak - mem.start) / 2**20
                result[f"{kind}_big_scheduler_rss_peak_mb"] = mem.peak / 2**20
                result[f"{kind}_big_shard_files"] = len(list((tmp / "shards").iterdir()))
                shutil.rmtree(tmp)
        shutil.rmtree(study, ignore_errors=True)
        line = f"{kind}: workers up in {result[f'{kind}_startup_s']:.1f} s, {result[f'{kind}_tasks_per_s']:.1f} tasks/s"
        if args.big:
            line += (f"; {args.big} no-op tasks (study file included) in {result[f'{kind}_big_seconds']:.1f} s = "
                     f"{result[f'{kind}_big_tasks_per_s']:.0f} tasks/s, scheduler process peak "
                     f"{result[f'{kind}_big_scheduler_rss_peak_mb']:.0f} MB (+"
                     f"{result[f'{kind}_big_scheduler_rss_growth_mb']:.0f} MB), "
                     f"{result[f'{kind}_big_shard_files']} shard files")
        print(line, flush=True)
    result["slurm_over_local_time_ratio"] = result["local_tasks_per_s"] / result["slurm_tasks_per_s"]
    msg = f"time per task, SLURM / local: {result['slurm_over_local_time_ratio']:.2f} (solver tasks)"
    if args.big:
        result["slurm_over_local_big_time_ratio"] = result["local_big_tasks_per_s"] / result["slurm_big_tasks_per_s"]
        msg += f", {result['slurm_over_local_big_time_ratio']:.2f} ({args.big} no-op tasks)"
    print(f"{msg}; target <= 1.3")
    result["load_avg_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
