"""Throughput of many small-block solver tasks through the runner on a LocalCluster, 1 and 2 workers.

Each task is one exact quench of an N = 10 TFIM block (sparse ED, ``expm_multiply`` on 21 times, ground
state by Lanczos) with its own transverse field, written to its own HDF5 shard: the "many small-block
solvers" of the OLRG workflow. Baseline in the same process: the same tasks called serially with no
Dask and no store. Reports tasks/s and the speed-up from 1 to 2 workers (target: near-linear, i.e. close
to the number of cores when nothing else runs on the machine).

    python benchmarks/bench_throughput.py [--tasks 1000] [--n-sites 10] [--out benchmarks/results/throughput.json]
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
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--n-sites", type=int, default=10)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", default="benchmarks/results/throughput.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

    from distributed import Client, LocalCluster

    from olrg_hpc.runner import run_tasks
    from olrg_hpc.spins.quench import quench_task
    from olrg_hpc.tasks import Task

    def params(i: int) -> dict:
        return {"model": "tfim", "n_sites": args.n_sites, "couplings": {"J": 1.0, "h": 0.5 + i / args.tasks},
                "method": "ed", "t_max": 2.0, "n_times": 21, "initial": "up", "profile_sites": 2}

    n_serial = max(20, args.tasks // 20)
    t0 = time.perf_counter()
    for i in range(n_serial):
        quench_task(**params(i))
    serial_rate = n_serial / (time.perf_counter() - t0)
    print(f"serial, no Dask, no store: {serial_rate:.1f} tasks/s ({n_serial} tasks)", flush=True)

    rows = []
    for w in args.workers:
        with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=40) as cluster, Client(cluster) as client:
            client.wait_for_workers(w)
            tmp = Path(tempfile.mkdtemp(prefix="olrg-thr-"))
            tasks = [Task(f"block-{i}", quench_task, params(i)) for i in range(args.tasks)]
            s = run_tasks(tasks, tmp, client, progress=False, gather_results=False)
            assert s.ok and s.computed == args.tasks
            shutil.rmtree(tmp)
        rate = args.tasks / s.seconds
        rows.append({"workers": w, "seconds": s.seconds, "tasks_per_s": rate,
                     "shard_write_ms_per_task": s.write_seconds / args.tasks * 1e3,
                     "efficiency_vs_serial": rate / (w * serial_rate)})
        print(f"{w} worker(s): {rate:.1f} tasks/s in {s.seconds:.1f} s, parallel efficiency vs serial "
              f"{rows[-1]['efficiency_vs_serial']:.2f}, shard write {rows[-1]['shard_write_ms_per_task']:.2f} ms/task",
              flush=True)
    speedup = rows[-1]["tasks_per_s"] / rows[0]["tasks_per_s"] if len(rows) > 1 else 1.0
    print(f"speed-up {args.workers[0]} -> {args.workers[-1]} workers: {speedup:.2f}")
    out = {"benchmark": "small_block_throughput", "n_sites": args.n_sites, "tasks": args.tasks,
           "serial_tasks_per_s": serial_rate, "rows": rows, "speedup": speedup, "host": platform.node(),
           "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
