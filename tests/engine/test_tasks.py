"""Task keys: they depend on the source a task can run, so a change there without a version bump reruns the task,
and a change elsewhere (a report, another workflow) does not."""

from __future__ import annotations

import re
import textwrap
import time
from pathlib import Path

import pytest

from olrg_hpc import provenance, records, tasks
from olrg_hpc.tasks import Task, task_key, task_seed


def _double(x: float) -> dict:
    return {"y": 2 * x}


def test_code_hash_is_a_stable_hex_digest():
    first = provenance.code_hash()
    provenance.code_hash.cache_clear()  # recompute from the files, not just the cached value
    assert re.fullmatch(r"[0-9a-f]{64}", first)
    assert provenance.code_hash() == first
    assert provenance.run_provenance()["code_hash"] == first


def test_a_parameter_added_to_one_task_moves_no_other_stream():
    """Seeds hash the study seed and the task's name: a key added to one task leaves every seed as it was (its own
    too), while that task's key, which hashes the parameters, changes so it is recomputed."""
    a, b = Task("a", _double, {"x": 1.5}), Task("b", _double, {"x": 1.5})
    wider = Task("a", _double, {"x": 1.5, "extra": 2})
    assert task_seed(3, a) != task_seed(3, b)  # equal parameters, different names: different streams
    assert task_seed(3, wider) == task_seed(3, a) and task_seed(3, b) == task_seed(3, Task("b", _double, {"x": 1.5}))
    assert task_key(wider, task_seed(3, wider), []) != task_key(a, task_seed(3, a), [])
    assert task_seed(4, a) != task_seed(3, a)  # another study seed: other streams
    assert 0 <= task_seed(3, a) < 2**63


def test_task_key_changes_with_the_code(monkeypatch):
    task = Task("double", _double, {"x": 1.5})
    original = task_key(task, 7, ["dep"])
    assert task_key(task, 7, ["dep"]) == original  # same code: resume reuses the shard
    monkeypatch.setattr(tasks, "module_code_hash", lambda module: "0" * 64)
    assert task_key(task, 7, ["dep"]) != original


@pytest.fixture
def toy_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A package ``toy`` standing in for the project's sources: ``run`` imports ``physics`` (which imports
    ``toy.util`` relatively, and ``numpy``), ``lazy`` only inside a function; ``report`` and ``other`` are
    never imported by ``run``."""
    root = tmp_path / "toy"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "run.py": """
            import numpy as np
            from toy.sub import physics

            def task():
                from toy import lazy
                return lazy.f(physics.g(np.ones(2)))
            """,
        "sub/__init__.py": "",
        "sub/physics.py": "from ..util import h\n\ndef g(x):\n    return h(x)\n",
        "util.py": "def h(x):\n    return x\n",
        "lazy.py": "def f(x):\n    return x\n",
        "report.py": "from toy import run\n",
        "other.py": "X = 1\n",
    }
    for rel, text in files.items():
        (root / rel).write_text(textwrap.dedent(text))
    monkeypatch.setattr(provenance, "_source_roots", lambda: [("toy", root)])
    provenance.module_code_hash.cache_clear()
    yield root
    provenance.module_code_hash.cache_clear()


def test_module_sources_follow_imports(toy_package: Path) -> None:
    assert sorted(provenance.module_sources("toy.run")) == ["toy", "toy.lazy", "toy.run", "toy.sub",
                                                             "toy.sub.physics", "toy.util"]


@pytest.mark.parametrize(("edited", "changes"), [
    ("util.py", True),  # imported through a relative import, two levels down
    ("lazy.py", True),  # imported inside a function only
    ("sub/__init__.py", True),  # a parent package runs on import
    ("report.py", False),  # imports the task's module, not imported by it
    ("other.py", False),
])
def test_module_code_hash_sees_exactly_the_imported_sources(toy_package: Path, edited: str, changes: bool) -> None:
    before = provenance.module_code_hash("toy.run")
    with open(toy_package / edited, "a") as f:
        f.write("# edited\n")
    provenance.module_code_hash.cache_clear()
    assert (provenance.module_code_hash("toy.run") != before) is changes


def _sleep(seconds: float) -> dict:
    time.sleep(seconds)
    return {"slept": seconds}


def _spin(seconds: float) -> dict:
    end, n = time.process_time() + seconds, 0
    while time.process_time() < end:
        n += 1
    return {"loops": n}


def _spec(tmp_path: Path, fn, params: dict) -> tasks.TaskSpec:
    return tasks.TaskSpec(name=fn.__name__, key="k" * 24, fn=fn, params=params, seed=1,
                          shard=tmp_path / f"{fn.__name__}.h5", dep_shards={}, provenance={})


def test_a_task_records_the_cpu_time_of_its_process_beside_the_wall_clock(tmp_path: Path) -> None:
    """A task that waits costs wall clock but no CPU time; one that computes costs CPU time whatever else runs on
    the machine. With JAX imported, the shard also says which backend and devices the task had."""
    import jax  # noqa: F401 - imported, so the task's shard records JAX's devices

    slept = tasks.execute(_spec(tmp_path, _sleep, {"seconds": 0.3}))
    assert slept["compute_s"] >= 0.3 and slept["cpu_s"] < 0.1  # 0.1: imports and the result check, not 0.3 s
    spun = tasks.execute(_spec(tmp_path, _spin, {"seconds": 0.2}))
    assert spun["cpu_s"] >= 0.2 and spun["compute_s"] > 0
    attrs, _ = records.decode(spun["record"], "k" * 24)  # a small result: its compact shard, as the driver gets it
    assert attrs["cpu_seconds"] == spun["cpu_s"] and attrs["compute_seconds"] == spun["compute_s"]
    assert attrs["jax_backend"] == "cpu" and attrs["jax_devices"].endswith(" x cpu")
