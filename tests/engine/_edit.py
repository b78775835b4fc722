"""Edit a finished task's shard in place, as a user or a tool could: the file stays valid (HDF5 through h5py, a
compact record through json), the old checksums stay, only a number changes. Tests use it to check that such a
shard is corrupt for status, resume and the tasks that read it."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import h5py
import numpy as np

from olrg_hpc import store


def _first_float(data: dict, prefix: str = "") -> str | None:
    for k, v in data.items():
        if "group" in v:
            found = _first_float(v["group"], f"{prefix}{k}/")
            if found:
                return found
        elif np.dtype(v.get("dtype", "O")).kind == "f" and int(np.prod(v["shape"])) > 1:
            return prefix + k
    return None


def edit_number(study_dir: Path, key: str | None = None, name: str | None = None, value: float = np.inf) -> str:
    """Set the first element of dataset ``name`` of task ``key``'s shard to ``value`` (default: the first float array
    of more than one element, of the first shard); returns the key."""
    shards = store.Shards(study_dir)
    key = key or sorted(shards.keys())[0]
    loc = shards.candidates(key)[0]
    if not loc.batched:
        with h5py.File(loc.path, "a") as f:
            if name is None:
                name = next(k for k in f if isinstance(f[k], h5py.Dataset) and f[k].dtype.kind == "f" and f[k].size > 1)
            ds = f[name]
            if ds.ndim:
                ds[(0,) * ds.ndim] = value
            else:
                ds[()] = value
        return key
    raw = loc.path.read_bytes()
    rec = json.loads(raw[loc.offset: loc.offset + loc.length])
    name = name or _first_float(rec["data"])
    entry = rec["data"]
    for part in name.split("/")[:-1]:
        entry = entry[part]["group"]
    e = entry[name.split("/")[-1]]
    arr = np.frombuffer(base64.b64decode(e["b64"]), dtype=e["dtype"]).copy()
    arr.reshape(-1)[0] = value
    e["b64"] = base64.b64encode(arr.tobytes()).decode()
    loc.path.write_bytes(raw[: loc.offset] + json.dumps(rec).encode() + raw[loc.offset + loc.length:])
    return key
