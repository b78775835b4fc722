"""Per-task overhead of the workflow runner against bare ``client.map`` in the same process.

For 1,000 and 10,000 no-op tasks on one LocalCluster, repeated and interleaved (bare, runner, bare, runner, ...,
so that a change of the machine's load hits both alike): (a) bare Dask, ``client.map(noop, ...)`` and wait;
(b) the runner, which adds hashing, a shard check, an atomic, checksummed shard per task (compact JSON for these
tiny results), the manifest and the progress accounting; (c) a rerun of (b) that finds every shard valid (resume
cost); (d) gathering the shards into the study file. Reports seconds, per-task milliseconds, the ratio (b)/(a) of
each pair and their median (target <= 1.5), and the shard write time per task.

Study folders go into ``--scratch`` (default: the current folder, where ``studies/`` would be): on some machines
``/tmp`` creates files several times slower than the rest of the same disk, which would be measured instead.

    python benchmarks/bench_runner.py [--sizes 1000 10000] [--workers 2] [--repeats 5]
                                      [--out benchmarks/results/runner.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="interleaved pairs (bare, runner) per size")
    ap.add_argument("--out", default="benchmarks/results/runner.json")
    ap.add_argument("--scratch", default=".", help="folder for the study folders (default: here)")
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
            tasks = [Task(f"noop-{i}", noop, {"i": i}) for i in range(n)]
            bare, runner, ratios, resume, gather_s, write_ms = [], [], [], [], [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                futs = client.map(noop, range(n), pure=False)
                wait(futs)
                bare.append(time.perf_counter() - t0)
                del futs

                tmp = Path(tempfile.mkdtemp(prefix="olrg-bench-", dir=args.scratch))
                s = run_tasks(tasks, tmp, client, progress=False, gather_results=False)
                assert s.ok and s.computed == n
                runner.append(s.seconds)
                ratios.append(runner[-1] / bare[-1])
                write_ms.append(s.write_seconds / n * 1e3)
                s2 = run_tasks(tasks, tmp, client, progress=False, gather_results=False)
                assert s2.skipped == n
                resume.append(s2.seconds)
                entries = json.loads((tmp / store.MANIFEST).read_text())["tasks"]
                t0 = time.perf_counter()
                store.gather(tmp, entries, {"study": "bench"})
                gather_s.append(time.perf_counter() - t0)
                shutil.rmtree(tmp)
            med = statistics.median
            row = {"tasks": n, "repeats": args.repeats, "bare_dask_s": bare, "runner_s": runner, "ratios": ratios,
                   "ratio_median": med(ratios), "ratio_of_best": min(runner) / min(bare),
                   "bare_ms_per_task": med(bare) / n * 1e3, "runner_ms_per_task": med(runner) / n * 1e3,
                   "shard_write_ms_per_task": med(write_ms), "resume_all_valid_s": med(resume),
                   "gather_s": med(gather_s)}
            rows.append(row)
            print(f"{n:6d} tasks, {args.repeats} interleaved pairs: bare {row['bare_ms_per_task']:.2f} ms/task, runner "
                  f"{row['runner_ms_per_task']:.2f} ms/task (medians); ratio median {row['ratio_median']:.2f}, "
                  f"range {min(ratios):.2f}-{max(ratios):.2f}, of the best runs {row['ratio_of_best']:.2f} (target "
                  f"<= 1.5); shard write {row['shard_write_ms_per_task']:.2f} ms/task on the workers; resume "
                  f"{row['resume_all_valid_s']:.2f} s; gather {row['gather_s']:.2f} s", flush=True)
    out = {"benchmark": "runner_overhead", "workers": args.workers, "host": platform.node(),
           "cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "target_ratio": 1.5, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
