"""Cost of the store's checksums: checksummed shard writes, verified status checks and verified reads, against
the same files written and read with plain h5py in the same process (no digests, no verification).

Two shards: "small" (one number and the 12 provenance attributes a task shard carries: the runner's per-task
overhead) and "medium" (10 arrays of 10^4 doubles, two of them 2-D and gzip-compressed, plus the attributes).
Baselines: plain write = the same datasets and attributes with ``create_dataset``; plain status = open and read
``complete`` and ``task_key`` (what a validity check read before checksums); plain read = every dataset read.
Reports milliseconds per shard (best of ``--repeats``) and the ratios.

    python benchmarks/bench_checksums.py [--shards 200] [--repeats 3] [--out benchmarks/results/checksums.json]
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


def _results(kind: str):
    import numpy as np

    rng = np.random.default_rng(0)
    if kind == "small":
        return {"i": 3}
    out = {f"v{i}": rng.normal(size=10_000) for i in range(8)}
    out.update(m0=rng.normal(size=(100, 100)), m1=rng.normal(size=(100, 100)))
    return out


def _attrs(key: str) -> dict:
    prov = {"olrg_hpc_version": "0.1.0", "git_commit": "0" * 40, "code_hash": "0" * 64, "study_config": "x: 1\n" * 40}
    return dict(task_name="t", task_key=key, function="m:f", params={"i": 3}, seed=123456789, host="h",
                started="2026-01-01T00:00:00+00:00", finished="2026-01-01T00:00:01+00:00", compute_seconds=1.0,
                provenance=prov)


def _plain_write(path: Path, results: dict, attrs: dict) -> None:
    import h5py
    import numpy as np

    from olrg_hpc.store import _attr

    with h5py.File(path, "w") as f:
        for name, value in results.items():
            arr = np.asarray(value)
            if arr.ndim >= 2 and arr.size >= 4096:
                f.create_dataset(name, data=arr, chunks=True, compression="gzip", compression_opts=4, shuffle=True)
            else:
                f.create_dataset(name, data=arr)
        for k, v in attrs.items():
            f.attrs[k] = _attr(v)
        f.attrs["complete"] = True


def _plain_status(path: Path, key: str) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        return bool(f.attrs.get("complete", False)) and f.attrs.get("task_key") == key


def _plain_read(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


def _best(fn, n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / n * 1e3)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/checksums.json")
    args = ap.parse_args()

    from olrg_hpc import store

    tmp = Path(tempfile.mkdtemp(prefix="olrg-bench-ck-"))
    rows = []
    try:
        for kind in ("small", "medium"):
            res, n = _results(kind), args.shards if kind == "small" else max(10, args.shards // 10)
            ck = [tmp / f"{kind}-ck-{i}.h5" for i in range(n)]
            pl = [tmp / f"{kind}-pl-{i}.h5" for i in range(n)]
            row = {"shard": kind, "shards": n,
                   "write_ms": _best(lambda i, c=ck, r=res: store.write_shard(c[i], r, _attrs("k")), n, args.repeats),
                   "plain_write_ms": _best(lambda i, p=pl, r=res: _plain_write(p[i], r, _attrs("k")), n, args.repeats),
                   "status_ms": _best(lambda i, c=ck: store.shard_status(c[i], "k"), n, args.repeats),
                   "plain_status_ms": _best(lambda i, p=pl: _plain_status(p[i], "k"), n, args.repeats),
                   "read_ms": _best(lambda i, c=ck: store.read_shard(c[i], key="k"), n, args.repeats),
                   "plain_read_ms": _best(lambda i, p=pl: _plain_read(p[i]), n, args.repeats)}
            for what in ("write", "status", "read"):
                row[f"{what}_ratio"] = row[f"{what}_ms"] / row[f"plain_{what}_ms"]
            rows.append(row)
            print(f"{kind:6s}: write {row['write_ms']:.2f} ms vs plain {row['plain_write_ms']:.2f} "
                  f"(x{row['write_ratio']:.2f}); status {row['status_ms']:.2f} vs {row['plain_status_ms']:.2f} "
                  f"(x{row['status_ratio']:.2f}); read {row['read_ms']:.2f} vs {row['plain_read_ms']:.2f} "
                  f"(x{row['read_ratio']:.2f}) per shard", flush=True)
    finally:
        shutil.rmtree(tmp)
    out = {"benchmark": "checksums", "host": platform.node(), "cpus": os.cpu_count(),
           "load_avg_1min": os.getloadavg()[0], "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
