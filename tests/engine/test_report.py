"""The report: three significant digits, value(error), the "What was computed" table first, provenance with the
CPU time and the JAX devices of the tasks, and the workflow found through the registry handed down."""

from __future__ import annotations

import math
import types
from pathlib import Path

import numpy as np
import pytest

from olrg_hpc import store, tasks
from olrg_hpc.errors import UserError
from olrg_hpc.report import COMPUTED, Table, WorkflowReport, sig3, value_error, write_report


@pytest.mark.parametrize(("x", "err", "shown"), [
    (3.0394, 0.0481, "3.039(48)"),  # the error to two digits, the value to the same decimal place
    (-0.0123456, 0.00056, "-0.01235(56)"),
    (0.5, 0.12, "0.50(12)"),
    (1234.5, 56.0, "1234(56)"),
    (12346.0, 678.0, "12350(680)"),  # an error of 10 or more: both rounded to the error's second digit
    (0.5, 0.0, "0.5"),  # no error: three significant digits
    (2.0 / 3.0, math.nan, "0.667"),
    (math.nan, 0.1, "-"),  # not measured
])
def test_value_error(x, err, shown):
    assert value_error(x, err) == shown


def test_table_cells_have_three_significant_digits():
    t = Table("t", ["a", "b", "c", "d", "e", "f", "g", "h"],
              [[0.123456, 123456.0, np.float32(2.5), 7, np.int64(12345), True, math.nan, "3.14159 as text"]])
    assert t.text()[-1].split() == ["0.123", "1.23e+05", "2.5", "7", "12345", "True", "-", "3.14159", "as", "text"]
    assert "<td>0.123</td>" in t.html() and sig3(np.float64(1 / 3)) == "0.333"
    # a column of numbers is right-aligned, a column with text (descriptions) left-aligned
    lines = Table("t", ["item", "value", "n"], [["model", "tfim, open chain", 1.5], ["N", 12, "3.0(1)"]]).text()
    assert lines[3:] == ["model  tfim, open chain     1.5", "N      12                3.0(1)"]


def _study(tmp_path: Path) -> Path:
    """A study folder with a real study file: two tasks run by the engine, gathered."""
    study_dir = tmp_path / "study"
    (study_dir / "shards").mkdir(parents=True)
    entries = []
    for i, fn in enumerate((_square, _square)):
        key = f"{i:024d}"
        spec = tasks.TaskSpec(name=f"sq-{i}", key=key, fn=fn, params={"x": float(i)}, seed=i,
                              shard=store.shard_path(study_dir, key), dep_shards={}, provenance={})
        out = tasks.execute(spec)
        store.Shards(study_dir).add([(key, out["record"])])  # the driver's part: small results go to a batch file
        entries.append({"name": spec.name, "key": key})
    store.gather(study_dir, entries, {"study": "report-test", "workflow": "toy", "study_config": "seed: 0\n"})
    return study_dir


def _square(x: float) -> dict:
    return {"y": np.float64(x) ** 2 / 3.0}


def _toy_report(study_file: Path, out_dir: Path) -> WorkflowReport:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    path = out_dir / "line.png"
    fig.savefig(path)
    plt.close(fig)
    return WorkflowReport(figures=[path], tables=[
        Table("Verdict", ["result", "value"], [["y", value_error(1 / 3, 0.0123)]]),
        Table(f"part: {COMPUTED}", ["item", "value"], [["model", "toy"], ["coupling", 1 / 7]]),
    ])


def test_the_report_opens_with_what_was_computed(tmp_path):
    study_dir = _study(tmp_path)
    toy = types.ModuleType("toy")
    toy.report = _toy_report
    known = {"toy": toy}

    def lookup(name: str) -> types.ModuleType:  # as workflows.get_workflow answers
        if name not in known:
            raise KeyError(f"unknown workflow {name!r} (known: {', '.join(known) or 'none'})")
        return known[name]

    out_dir, lines = write_report(study_dir, lookup)
    titles = [line for line in lines if line in ("part: What was computed", "Verdict", "Provenance")]
    assert titles == ["part: What was computed", "Verdict", "Provenance"]
    assert any(line.split() == ["coupling", "0.143"] for line in lines)
    assert any(line.split() == ["y", "0.333(12)"] for line in lines)
    cpu = next(line for line in lines if line.startswith("task compute time"))
    assert "wall clock / CPU time of the process" in cpu and "/ -" not in cpu  # both clocks recorded
    page = (out_dir / "index.html").read_text()
    order = [page.index(s) for s in ("What was computed</h2>", "Verdict</h2>", "<figure", "Provenance</h2>",
                                     "Config</h2>")]
    assert order == sorted(order)

    known.clear()  # a study file whose workflow the registry does not know: one line, no traceback
    with pytest.raises(UserError, match=r"study.h5: workflow: unknown workflow 'toy' \(known: none\)$"):
        write_report(study_dir, lookup)
