"""Suite: several studies of other workflows run as one graph, one study file and one report.

The quickstart uses it to run a small OLRG study and a small flow study side by side on one cluster::

    workflow: suite
    params:
      parts:
        olrg: {workflow: olrg_study, params: {...}}
        flows: {workflow: flow_study, params: {...}}

Each part's params are validated by its own workflow (errors name the full key path). Task names get the
part's name as a prefix (``olrg:eval-nrg-D8``), so parts never collide and ``olrg-hpc status`` shows which
part a task belongs to. The report gives each part a view of the study file in which its tasks carry their
own names again (HDF5 external links, no copy), calls the part's own ``report`` on it, and prefixes its
figures and tables with the part name.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import h5py
from pydantic import Field, PrivateAttr, ValidationError, model_validator

from olrg_hpc.config import Strict, format_validation_error
from olrg_hpc.report import Table, WorkflowReport
from olrg_hpc.tasks import Task

SEP = ":"


class Part(Strict):
    workflow: str
    params: dict[str, Any] = Field(default_factory=dict)
    _validated: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> Part:
        from workflows import get_workflow

        if self.workflow == "suite":
            raise ValueError("a suite cannot contain a suite")
        try:
            wf = get_workflow(self.workflow)
        except KeyError as exc:
            raise ValueError(exc.args[0]) from None
        try:
            self._validated = wf.Params.model_validate(self.params)
        except ValidationError as exc:
            # reported as "<file>: params.parts.<part>.params.<key path>: <what was expected> (workflow <name>)"
            line = format_validation_error("", exc, prefix="params.", model=wf.Params)
            raise ValueError(f".{line} (workflow {self.workflow})") from None
        return self


class Params(Strict):
    parts: dict[str, Part] = Field(min_length=1)

    @model_validator(mode="after")
    def _names(self) -> Params:
        bad = [n for n in self.parts if not n or SEP in n or "/" in n]
        if bad:
            raise ValueError(f"part names must be non-empty without {SEP!r} or '/' (got {bad[0]!r})")
        return self


def build(params: Params) -> list[Task]:
    from workflows import get_workflow

    tasks: list[Task] = []
    for name, part in params.parts.items():
        for t in get_workflow(part.workflow).build(part._validated):
            tasks.append(dataclasses.replace(t, name=f"{name}{SEP}{t.name}",
                                             deps=tuple(f"{name}{SEP}{d}" for d in t.deps)))
    return tasks


def part_view(study_file: Path, part: str, view: Path) -> Path:
    """An HDF5 file at ``view`` whose ``tasks/<name>`` link to ``tasks/<part>:<name>`` of the study file."""
    prefix = f"{part}{SEP}"
    target = str(Path(study_file).resolve())
    with h5py.File(study_file, "r") as src, h5py.File(view, "w") as dst:
        dst.attrs.update(src.attrs)
        g = dst.create_group("tasks")
        for name in src["tasks"]:
            if name.startswith(prefix):
                g[name.removeprefix(prefix)] = h5py.ExternalLink(target, f"tasks/{name}")
    return view


def report(study_file: Path, out_dir: Path) -> WorkflowReport:
    import yaml

    from workflows import get_workflow

    with h5py.File(study_file, "r") as f:
        config_text = str(f.attrs.get("study_config", ""))
    parts = Params.model_validate(yaml.safe_load(config_text)["params"]).parts
    rep = WorkflowReport()
    with tempfile.TemporaryDirectory(prefix="olrg-suite-") as tmp:
        for name, part in parts.items():
            view = part_view(study_file, name, Path(tmp) / f"{name}.h5")
            sub_dir = out_dir / name
            sub_dir.mkdir(parents=True, exist_ok=True)
            sub = get_workflow(part.workflow).report(view, sub_dir)
            rep.figures += sub.figures
            rep.tables += [Table(f"{name}: {t.title}", t.header, t.rows) for t in sub.tables]
    return rep

