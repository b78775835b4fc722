"""Compact shards: a finished task's small results as one checksummed JSON document.

Writing an HDF5 shard costs ~3 ms (a file, its datasets, a dozen attributes and their checksums), more than Dask's
own cost per task, while most tasks of a large study return a few kilobytes (one exact solve, one ensemble
summary). Results of at most :data:`MAX_BYTES` bytes of numbers and strings are therefore encoded on the worker as
one JSON document (~0.1 ms), which goes back to the driver with the task's outcome and is written there with the
others of its batch into one batch file (:class:`olrg_hpc.store.Shards`); anything larger, or of a type this format
does not hold (bytes, objects), is an HDF5 shard written by the worker as before. Both hold the same thing and
verify the same way, per task, so resume stays per task; :func:`olrg_hpc.store.gather` writes both into the study
file as HDF5 groups with the same digests.

Format (UTF-8 JSON, readable with ``json`` and ``numpy`` alone)::

    {"format": "olrg-hpc compact shard 1",
     "attrs":   {...},                   the shard's attributes (task_name, task_key, params, provenance, ...)
     "data":    {NAME: ENTRY, ...},
     "sha256":  "...",                   the digest an HDF5 shard of the same content carries on its root
     "complete": true}

    ENTRY: {"dtype": "<f8", "shape": [2, 3], "b64": "...", "sha256": "..."}   numbers: base64 of the C-order bytes
           {"str": "text", "sha256": "..."}                                   a string
           {"strs": ["a", "b"], "shape": [2], "sha256": "..."}                an array of strings (flat, C order)
           {"group": {NAME: ENTRY, ...}}                                      a nested mapping

Every ``sha256`` is computed as :mod:`olrg_hpc.store` computes it for the dataset or group an HDF5 shard would
hold (dtype, shape and data as read back; the root over its attributes, ``complete`` aside, its members' names and
digests), and :func:`decode` recomputes them all from the decoded data: an edited number, string, name or attribute
fails as it does in an HDF5 shard. Decoded values have the types an HDF5 shard reads back as: numpy arrays,
numpy scalars for 0-d numbers, ``str``, object arrays of ``str``, nested dicts.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "olrg-hpc compact shard 1"
#: results up to this many bytes of numbers and string characters become compact shards
MAX_BYTES = 64 * 1024
_KINDS = "biufc"


def _entries(results: Mapping[str, Any], budget: list[int]) -> dict[str, Any] | None:
    """The ``data`` member for ``results``, or None when they do not fit the format or :data:`MAX_BYTES`."""
    from olrg_hpc.store import digest

    out: dict[str, Any] = {}
    for name, value in results.items():
        name = str(name)
        if isinstance(value, Mapping):
            sub = _entries(value, budget)
            if sub is None:
                return None
            out[name] = {"group": sub}
            continue
        if isinstance(value, str):
            budget[0] -= len(value)
            out[name] = {"str": value, "sha256": digest(value)}
        else:
            arr = np.asarray(value)
            kind = arr.dtype.kind
            if kind == "U":
                if arr.ndim == 0:  # an HDF5 string scalar reads back as str
                    s = str(arr[()])
                    budget[0] -= len(s)
                    out[name] = {"str": s, "sha256": digest(s)}
                else:
                    budget[0] -= arr.nbytes // 4
                    obj = arr.astype(object)
                    out[name] = {"strs": [str(x) for x in obj.ravel()], "shape": list(arr.shape),
                                 "sha256": digest(obj)}
            elif kind in _KINDS and arr.dtype.char not in "gG" and arr.dtype.fields is None:
                budget[0] -= arr.nbytes
                if budget[0] < 0:
                    return None
                c = np.ascontiguousarray(arr)  # 1-d for a 0-d array: same bytes
                out[name] = {"dtype": arr.dtype.str, "shape": list(arr.shape),
                             "b64": base64.b64encode(c.data).decode("ascii"), "sha256": digest(arr)}
            else:
                return None
        if budget[0] < 0:
            return None
    return out


def _json_attr(value: Any) -> Any:
    """An attribute value as JSON holds it: numpy scalars as Python ones."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def tree_digest(attrs: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    """The digest :func:`olrg_hpc.store.seal` gives a group with these attributes and these members (``data``
    entries, their ``sha256`` already set)."""
    from olrg_hpc.store import UNSIGNED, hash_attrs

    h = hashlib.sha256()
    hash_attrs(h, attrs, UNSIGNED)
    for name in sorted(data):
        e = data[name]
        if "group" in e:
            h.update(f"g{len(name)}:{name}:{tree_digest({}, e['group'])}".encode())
        else:  # a dataset: its name and its one attribute, sha256
            h.update(f"d{len(name)}:{name}".encode())
            hash_attrs(h, {"sha256": e["sha256"]})
    return h.hexdigest()


def encode(results: Mapping[str, Any], attrs: Mapping[str, Any]) -> bytes | None:
    """The compact shard of ``results`` with attributes ``attrs`` (stored as an HDF5 shard stores them: mappings and
    lists as JSON text), or None when the results do not fit (too large, or a type only HDF5 holds)."""
    from olrg_hpc.store import _attr

    data = _entries(results, [MAX_BYTES])
    if data is None:
        return None
    written = {str(k): _json_attr(_attr(v)) for k, v in attrs.items()}
    rec = {"format": FORMAT, "attrs": written, "data": data, "sha256": tree_digest(written, data), "complete": True}
    return json.dumps(rec, separators=(",", ":")).encode()


def _decode(data: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Decoded values of ``data``, each checked against its ``sha256`` (ValueError names the first mismatch)."""
    from olrg_hpc.store import digest

    out: dict[str, Any] = {}
    for name, e in data.items():
        path = f"{where}/{name}"
        if "group" in e:
            out[name] = _decode(e["group"], path)
            continue
        if "str" in e:
            val: Any = str(e["str"])
        elif "strs" in e:
            val = np.array([str(s) for s in e["strs"]], dtype=object).reshape(e["shape"])
        else:
            dt = np.dtype(e["dtype"])
            if dt.kind not in _KINDS:
                raise ValueError(f"{path}: dtype {e['dtype']!r} is not a number type")
            arr = np.frombuffer(base64.b64decode(e["b64"], validate=True), dtype=dt).reshape(e["shape"]).copy()
            val = arr[()] if arr.ndim == 0 else arr
        if digest(val) != e["sha256"]:
            raise ValueError(f"{path}: checksum mismatch (the data changed after it was written)")
        out[name] = val
    return out


def decode(raw: bytes, key: str | None = None, read: bool = False, where: str = "compact shard",
           path: Path | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """``(attrs, data)`` of the compact shard ``raw``, verified: ``data`` is None unless ``read``; ``attrs`` hold
    ``sha256`` and ``complete``, as an HDF5 shard's root does. The written ``task_key`` must be ``key`` when given.
    Anything wrong raises :class:`olrg_hpc.store.CorruptFile` naming ``where``."""
    from olrg_hpc.store import CorruptFile

    try:
        rec = json.loads(raw)
        if not isinstance(rec, dict) or rec.get("format") != FORMAT:
            raise ValueError("not a compact shard")
        if rec.get("complete") is not True:
            raise ValueError("incomplete (no 'complete')")
        attrs, data = rec["attrs"], rec["data"]
        if key is not None and attrs.get("task_key") != key:
            raise ValueError(f"written for other inputs (task_key {attrs.get('task_key')!r}, not {key!r})")
        values = _decode(data, "")
        if tree_digest(attrs, data) != rec["sha256"]:
            raise ValueError("checksum mismatch of its attributes or members")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFile(f"{where}: {' '.join(str(exc).split())[:200]}", path, key) from None
    return {**attrs, "sha256": rec["sha256"], "complete": True}, (values if read else None)
