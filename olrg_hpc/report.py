"""Reports: a study file in, figures (PNG), a summary table and one self-contained HTML page out.

Each workflow's ``report(study_file, out_dir)`` draws its figures and returns :class:`Table` objects; this
module renders the tables for the terminal and writes ``report/index.html`` with the figures embedded
(base64 PNG) and the provenance (config, versions, git commit, hosts, task timings).
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py

from olrg_hpc import store
from olrg_hpc.errors import UserError

if TYPE_CHECKING:
    from olrg_hpc.config import WorkflowLookup


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
        out += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                for r in cells]
        return out

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in self.rows)
        return f"<h2>{html.escape(self.title)}</h2><table><tr>{head}</tr>{body}</table>"


@dataclass
class WorkflowReport:
    figures: list[Path] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def provenance_table(study_file: Path) -> Table:
    """Versions, commit, hosts and timings from the study file's attributes."""
    with h5py.File(study_file, "r") as f:
        root = dict(f.attrs)
        hosts: Counter[str] = Counter()
        seconds = 0.0
        for grp in f["tasks"].values():
            hosts[str(grp.attrs.get("host", "?"))] += 1
            seconds += float(grp.attrs.get("compute_seconds", 0.0))
    rows: list[list[Any]] = [[k.removeprefix("version_"), root[k]] for k in sorted(root) if k.startswith("version_")]
    rows = [["olrg-hpc", root.get("olrg_hpc_version", "?")], ["git commit", root.get("git_commit", "?")], *rows]
    rows += [["gathered", root.get("gathered", "?")], ["tasks", root.get("n_tasks", "?")],
             ["task compute time (s)", round(seconds, 3)],
             ["hosts", ", ".join(f"{h} ({n} tasks)" for h, n in hosts.most_common())]]
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
    tables = [*rep.tables, provenance_table(study_file)]
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
            f"<h1>olrg-hpc study: {html.escape(study_dir.name)} ({html.escape(workflow)})</h1>{figs}"
            + "".join(t.html() for t in tables)
            + f"<h2>Config</h2><pre>{html.escape(config_text)}</pre></body></html>")
    (out_dir / "index.html").write_text(page)
    (out_dir / "tables.json").write_text(json.dumps([t.__dict__ for t in tables], default=str, indent=1))
    return out_dir, lines
