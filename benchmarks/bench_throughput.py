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

    from olrg_hpc.scaling import measure_throughput, quench_params
    from olrg_hpc.spins.quench import quench_task

    n_serial = max(20, args.tasks // 20)
    t0 = time.perf_counter()
    for i in range(n_serial):
        quench_task(**quench_params(i, args.tasks, "tfim", args.n_sites, 2.0, 21))
    serial_rate = n_serial / (time.perf_counter() - t0)
    print(f"serial, no Dask, no store: {serial_rate:.1f} tasks/s ({n_serial} tasks)", flush=True)

    rows = []
    for w in args.workers:
        r = measure_throughput(w, args.tasks, "tfim", args.n_sites, 2.0, 21)
        r["efficiency_vs_serial"] = r["tasks_per_s"] / (w * serial_rate)
        rows.append(r)
        print(f"{w} worker(s): {r['tasks_per_s']:.1f} tasks/s in {r['seconds']:.1f} s, parallel efficiency vs "
              f"serial {r['efficiency_vs_serial']:.2f}, shard write {r['write_ms_per_task']:.2f} ms/task", flush=True)
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
