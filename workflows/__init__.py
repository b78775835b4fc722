"""Study workflows: each module turns a validated config into a Dask graph of library calls.

A workflow module defines:

- ``Params``: a pydantic model (unknown keys forbidden) of its ``params:`` section;
- ``build(params) -> list[olrg_hpc.tasks.Task]``: the task graph (fan out, gather, reduce);
- ``report(study_file, out_dir) -> olrg_hpc.report.WorkflowReport``: the figures it wrote to ``out_dir`` and
  its summary tables.

Workflows know nothing of matrix elements: task functions live in the library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

WORKFLOWS: dict[str, str] = {
    "chain_sweep": "workflows.chain_sweep",
    "phi4_ensembles": "workflows.phi4_ensembles",
    "olrg_study": "workflows.olrg_study",
    "flow_study": "workflows.flow_study",
    "scaling_study": "workflows.scaling_study",
    "suite": "workflows.suite",
}


def get_workflow(name: str) -> ModuleType:
    """The workflow module for ``name``; KeyError with the known names otherwise."""
    if name not in WORKFLOWS:
        raise KeyError(f"unknown workflow {name!r} (known: {', '.join(sorted(WORKFLOWS))})")
    return importlib.import_module(WORKFLOWS[name])
