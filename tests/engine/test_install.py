"""A non-editable install works from any directory: the wheel carries the SLURM job templates and the cluster
profiles (olrg_hpc/resources.py, setup.py), and the engine finds its workflows through the registry the command
line hands down, so ``validate``, ``submit --dry-run``, ``run`` and ``report`` need no source checkout.

Slow: building the wheel takes seconds, but installing it with its dependencies into a fresh venv takes ~50 s
from pip's cache on two busy cores, and the run another ~10 s.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from chain_study import chain_study

from olrg_hpc.resources import SHIPPED

ROOT = Path(__file__).resolve().parents[2]


HMC = """\
program: mpi_hmc
L: 8
m2: -4.0
lam: 8.0
n_traj: 10
out: hmc/chain.h5
ntasks: 2
"""


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)}: exit {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out


def test_only_the_command_line_imports_the_workflows():
    """The engine and the physics import no workflow (anywhere in a file, functions included): the command line
    hands the registry down."""
    offenders = set()
    for f in sorted((ROOT / "olrg_hpc").rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            if any(n == "workflows" or n.startswith("workflows.") for n in names):
                offenders.add(f.relative_to(ROOT).as_posix())
    assert offenders == {"olrg_hpc/cli.py"}, offenders


@pytest.mark.slow
def test_an_installed_wheel_validates_submits_runs_and_reports_from_any_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)], tmp_path, env)
    (wheel,) = wheels.glob("olrg_hpc-*.whl")
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    _run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)], tmp_path, env)
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "olrg-hpc")

    # the package imported is the installed copy, and its shipped files are those of the repository, byte for byte
    where = _run([python, "-c", "import olrg_hpc, workflows; print(olrg_hpc.__file__); print(workflows.__file__)"],
                 work, env).stdout.split()
    assert all(Path(w).is_relative_to(venv) for w in where), where
    package = Path(where[0]).parent
    for name, (folder, pattern) in SHIPPED.items():
        originals = sorted((ROOT / folder).glob(pattern))
        assert originals, f"{folder}: nothing to ship"
        for f in originals:
            assert (package / "_shipped" / name / f.name).read_bytes() == f.read_bytes(), f

    (work / "tiny.yaml").write_text(chain_study("tiny", sizes=(6,), h=(1.0,), t_max=1.0, n_times=11, seed=1))
    (work / "hmc.yaml").write_text(HMC)
    out = _run([cli, "validate", "tiny.yaml"], work, env).stdout
    assert "ok (workflow chain_sweep, 3 tasks)" in out and "_shipped/clusters/local.yaml: ok" in out, out

    script = _run([cli, "submit", "tiny.yaml", "--cluster", "slurm-dev", "--dry-run"], work, env).stdout
    assert "#SBATCH --job-name=olrg-tiny" in script and "#SBATCH --partition=debug" in script, script
    assert f"-m olrg_hpc.cli run {work / 'tiny.yaml'} --cluster {package / '_shipped/clusters/slurm-dev.yaml'}" \
        in script, script
    script = _run([cli, "submit", "hmc.yaml", "--cluster", "slurm-dev", "--dry-run"], work, env).stdout
    assert "srun --mpi=pmi2" in script and f"-m olrg_hpc.cli hmc {work / 'hmc.yaml'}" in script, script

    _run([cli, "run", "tiny.yaml", "--no-progress", "--no-report"], work, env)
    study = work / "studies" / "tiny"
    out = _run([cli, "report", str(study)], work, env).stdout
    assert (study / "report" / "index.html").is_file() and "git commit" in out
