"""Per-task overhead of the workflow runner against bare ``client.map`` in the same process.

For 1,000 and 10,000 no-op tasks on one LocalCluster: (a) bare Dask, ``client.map(noop, ...)`` and
wait; (b) the runner, which adds hashing, a shard check, an atomic HDF5 shard write per task, the
manifest and the progress accounting; (c) a rerun of (b) that finds every shard valid (resume cost);
(d) gathering the shards into the study file. Reports seconds, per-task milliseconds, the ratio (b)/(a)
(target <= 1.5) and the shard write time per task.

    python benchmarks/bench_runner.py [--sizes 1000 10000] [--workers 2] [--out benchmarks/results/runner.json]
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
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs for each measurement")
    ap.add_argument("--out", default="benchmarks/results/runner.json")
    args = ap.parse_args()

    from distributed import Client, LocalCluster, wait

    from olrg_hpc import store
    from olrg_hpc.runner import run_tasks
    from olrg_hpc.tasks import Task, noop

    rows = []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as client:
        client.wait_for_workers(args.workers)
        client.gather(client.map(noop, range(100), pure=False))  # warm up imports on the workers
        for n in args.sizes:
            bare, runner, resume, gather_s, write_ms = [], [], [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                futs = client.map(noop, range(n), pure=False)
                wait(futs)
                bare.append(time.perf_counter() - t0)
                del futs

                tmp = Path(tempfile.mkdtemp(prefix="olrg-bench-"))
                tasks = [Task(f"noop-{i}", noop, {"i": i}) for i in range(n)]
                s = run_tasks(tasks, tmp, client, progress=False, gather_results=False)
                assert s.ok and s.computed == n
                runner.append(s.seconds)
                write_ms.append(s.write_seconds / n * 1e3)
                s2 = run_tasks(tasks, tmp, client, progress=False, gather_results=False)
                assert s2.skipped == n
                resume.append(s2.seconds)
                entries = json.loads((tmp / store.MANIFEST).read_text())["tasks"]
                t0 = time.perf_counter()
                store.gather(tmp, entries, {"study": "bench"})
                gather_s.append(time.perf_counter() - t0)
                shutil.rmtree(tmp)
            row = {"tasks": n, "bare_dask_s": min(bare), "runner_s": min(runner), "ratio": min(runner) / min(bare),
                   "bare_ms_per_task": min(bare) / n * 1e3, "runner_ms_per_task": min(runner) / n * 1e3,
                   "shard_write_ms_per_task": min(write_ms), "resume_all_valid_s": min(resume),
                   "gather_s": min(gather_s)}
            rows.append(row)
            print(f"{n:6d} tasks: bare {row['bare_dask_s']:.2f} s ({row['bare_ms_per_task']:.2f} ms/task), runner "
                  f"{row['runner_s']:.2f} s ({row['runner_ms_per_task']:.2f} ms/task), ratio {row['ratio']:.2f} "
                  f"(target <= 1.5); shard write {row['shard_write_ms_per_task']:.2f} ms/task on the workers; "
                  f"resume {row['resume_all_valid_s']:.2f} s; gather {row['gather_s']:.2f} s", flush=True)
    out = {"benchmark": "runner_overhead", "workers": args.workers, "host": platform.node(),
           "cpus": os.cpu_count(), "target_ratio": 1.5, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
