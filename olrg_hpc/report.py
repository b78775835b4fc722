"""Reports: a study file in, figures (PNG), a summary table and one self-contained HTML page out.

Each workflow's ``report(study_file, out_dir)`` draws its figures and returns :class:`Table` objects; this
module renders the tables for the terminal and writes ``report/index.html`` with the figures embedded
(base64 PNG) and the provenance (config, versions, git commit, hosts, task timings and devices).

**Reading order.** The summary and the page open with the workflow's :data:`COMPUTED` table (model, sizes,
couplings: what was computed), when it gives one (inside a suite, every part's), then its other tables (verdicts
first, as the workflow orders them), then the figures, the provenance and the config.

**Numbers.** A float in a table is shown with three significant digits (:func:`sig3`; ``-`` when it is not
finite, i.e. not measured); a value with its error as ``value(error)`` (:func:`value_error`), the form a workflow
uses wherever a table has both.
"""

from __future__ import annotations

import base64
import html
import json
import math
import numbers
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from olrg_hpc import store
from olrg_hpc.errors import UserError

if TYPE_CHECKING:
    from olrg_hpc.config import WorkflowLookup


#: a cell that reads as a number (``0.123``, ``-4``, ``3.039(48)``, ``1.2e-05``) or as "not measured" (``-``)
_NUMBER = re.compile(r"^(?:[-+]?(?:\d|\.\d)|-$)")


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Any]]

    def text(self) -> list[str]:
        cells = [[_fmt(c) for c in r] for r in self.rows]
        widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(self.header)]
        line = "  ".join(h.ljust(w) for h, w in zip(self.header, widths, strict=True))
        out = [self.title, line, "-" * len(line)]
        # numbers right-aligned, text (the first column, descriptions) left-aligned
        right = [i > 0 and all(_NUMBER.match(r[i]) for r in cells) for i in range(len(self.header))]
        out += ["  ".join(c.rjust(w) if right[i] else c.ljust(w)
                          for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in cells]
        return out

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in self.rows)
        return f"<h2>{html.escape(self.title)}</h2><table><tr>{head}</tr>{body}</table>"


@dataclass
class WorkflowReport:
    figures: list[Path] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


#: title of the table a workflow's report opens with (inside a suite: ``<part>: What was computed``)
COMPUTED = "What was computed"


def sig3(x: Any) -> str:
    """``x`` with three significant digits (``-`` when not finite)."""
    v = float(x)
    return f"{v:.3g}" if math.isfinite(v) else "-"


def value_error(x: Any, err: Any) -> str:
    """``x`` with its error in parentheses, the error to two significant digits and ``x`` to the same decimal
    place: ``value_error(3.0394, 0.0481) == "3.039(48)"``, ``value_error(1234.5, 56) == "1234(56)"`` (the plain
    three significant digits of :func:`sig3` when the error is not positive and finite)."""
    v, e = float(x), float(err)
    if not (math.isfinite(v) and math.isfinite(e) and e > 0):
        return sig3(v)
    decimals = 1 - math.floor(math.log10(e))
    if decimals > 0:
        return f"{v:.{decimals}f}({round(e * 10**decimals):d})"
    step = 10.0 ** (-decimals)
    return f"{round(v / step) * step:.0f}({round(e / step) * step:.0f})"


#: a result agrees with its reference when no observable's pull exceeds this (combined standard deviations) ...
AGREE_SIGMA = 2.0
#: ... and is in tension up to this; beyond it they disagree
TENSION_SIGMA = 3.0


def agreement(pulls: Mapping[str, float], missing: str = "no reference") -> str:
    """Verdict on pulls against a reference (``{observable: (value - reference) / combined error}``): the largest
    one and what it means (:data:`AGREE_SIGMA`, :data:`TENSION_SIGMA`); ``missing`` when no pull is finite."""
    finite = {k: float(v) for k, v in pulls.items() if math.isfinite(float(v))}
    if not finite:
        return missing
    key = max(finite, key=lambda k: abs(finite[k]))
    worst = abs(finite[key])
    word = ("agrees" if worst <= AGREE_SIGMA else
            f"tension ({AGREE_SIGMA:.0f}-{TENSION_SIGMA:.0f} sigma)" if worst <= TENSION_SIGMA else "disagrees")
    return f"{word}: max |pull| {worst:.1f} sigma ({key})"


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_, numbers.Integral)):
        return str(v)
    if isinstance(v, numbers.Real):
        return sig3(v)
    return str(v)


def opens_report(table: Table) -> bool:
    """Whether ``table`` is a workflow's :data:`COMPUTED` table (also as ``<part>: What was computed``)."""
    return table.title == COMPUTED or table.title.endswith(f": {COMPUTED}")


def provenance_table(study_file: Path) -> Table:
    """Versions, commit, hosts, task timings (wall clock and CPU) and JAX devices from the study file's attributes."""
    with h5py.File(study_file, "r") as f:
        root = dict(f.attrs)
        hosts: Counter[str] = Counter()
        devices: Counter[str] = Counter()
        seconds = cpu = 0.0
        for grp in f["tasks"].values():
            hosts[str(grp.attrs.get("host", "?"))] += 1
            seconds += float(grp.attrs.get("compute_seconds", 0.0))
            cpu += float(grp.attrs.get("cpu_seconds", math.nan))  # NaN: a study file from before it was recorded
            if "jax_devices" in grp.attrs:
                devices[f"{grp.attrs.get('jax_backend', '?')}: {grp.attrs['jax_devices']}"] += 1
    rows: list[list[Any]] = [[k.removeprefix("version_"), root[k]] for k in sorted(root) if k.startswith("version_")]
    rows = [["olrg-hpc", root.get("olrg_hpc_version", "?")], ["git commit", root.get("git_commit", "?")], *rows]
    rows += [["gathered", root.get("gathered", "?")], ["tasks", root.get("n_tasks", "?")],
             ["task compute time (s): wall clock / CPU time of the process", f"{sig3(seconds)} / {sig3(cpu)}"],
             ["hosts", ", ".join(f"{h} ({n} tasks)" for h, n in hosts.most_common())],
             ["JAX devices", ", ".join(f"{d} ({n} tasks)" for d, n in devices.most_common()) or "JAX not used"]]
    return Table("Provenance", ["item", "value"], rows)


def write_report(study_dir: Path, get_workflow: WorkflowLookup) -> tuple[Path, list[str]]:
    """Write STUDY_DIR/report/ (PNGs, summary.txt, index.html); returns the folder and the terminal lines.
    ``get_workflow`` finds the ``report`` of the study file's workflow (the command line hands the registry down).

    Holds the study folder's lock (:func:`olrg_hpc.store.study_lock`) and verifies the study file against its
    checksums before drawing anything from it.
    """
    study_dir = Path(study_dir)
    study_file = study_dir / store.STUDY_FILE
    missing = UserError(f"{study_dir}: no {store.STUDY_FILE} (run the study first; 'olrg-hpc status {study_dir}' "
                        "shows what is missing)")
    if not study_dir.is_dir():
        raise missing
    with store.study_lock(study_dir):
        if not study_file.exists():
            raise missing
        store.verify_study_file(study_file)
        return _write_report(study_dir, study_file, get_workflow)


def _write_report(study_dir: Path, study_file: Path, get_workflow: WorkflowLookup) -> tuple[Path, list[str]]:
    try:
        with h5py.File(study_file, "r") as f:
            workflow = str(f.attrs["workflow"])
            config_text = str(f.attrs.get("study_config", ""))
    except (OSError, KeyError) as exc:
        raise UserError(f"{study_file}: not a readable olrg-hpc study file ({exc})") from None
    out_dir = study_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    try:
        report = get_workflow(workflow).report
    except KeyError as exc:
        raise UserError(f"{study_file}: workflow: {exc.args[0]}") from None
    rep: WorkflowReport = report(study_file, out_dir)
    own = [t for t in rep.tables if opens_report(t)] + [t for t in rep.tables if not opens_report(t)]
    tables = [*own, provenance_table(study_file)]
    lines: list[str] = []
    for t in tables:
        lines += [*t.text(), ""]
    (out_dir / "summary.txt").write_text("\n".join(lines) + "\n")
    figs = "".join(
        f'<figure><img alt="{html.escape(p.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(Path(p).read_bytes()).decode()}"><figcaption>{html.escape(p.name)}</figcaption></figure>'
        for p in rep.figures)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(study_dir.name)}</title>"
            "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:2px 8px;text-align:right}img{max-width:100%}"
            "pre{background:#f4f4f4;padding:1em}</style></head><body>"
            f"<h1>olrg-hpc study: {html.escape(study_dir.name)} ({html.escape(workflow)})</h1>"
            + "".join(t.html() for t in own) + figs + tables[-1].html()
            + f"<h2>Config</h2><pre>{html.escape(config_text)}</pre></body></html>")
    (out_dir / "index.html").write_text(page)
    (out_dir / "tables.json").write_text(json.dumps([t.__dict__ for t in tables], default=str, indent=1))
    return out_dir, lines
