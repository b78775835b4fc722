"""Task keys: they depend on the package's source, so a code change without a version bump reruns tasks."""

from __future__ import annotations

import re

from olrg_hpc import provenance, tasks
from olrg_hpc.tasks import Task, task_key


def _double(x: float) -> dict:
    return {"y": 2 * x}


def test_code_hash_is_a_stable_hex_digest():
    first = provenance.code_hash()
    provenance.code_hash.cache_clear()  # recompute from the files, not just the cached value
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert provenance.code_hash() == first
    assert provenance.run_provenance()["code_hash"] == first


def test_task_key_changes_with_the_code(monkeypatch):
    task = Task("double", _double, {"x": 1.5})
    original = task_key(task, 7, ["dep"])
    assert task_key(task, 7, ["dep"]) == original  # same code: resume reuses the shard
    monkeypatch.setattr(tasks, "code_hash", lambda: "0" * 64)
    assert task_key(task, 7, ["dep"]) != original
