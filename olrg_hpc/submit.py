"""Submit and walk away: render a job script from a template in ``slurm/`` and hand it to ``sbatch``.

The templates are read from the repository's ``slurm/`` in a source checkout and from the package's copies in an
installed wheel (:func:`olrg_hpc.resources.shipped_dir`).

``olrg-hpc submit STUDY_CONFIG --cluster PROFILE`` renders ``slurm/driver.sbatch``: a one-core job that
runs the Dask workflow from inside the allocation, its workers being further SLURM jobs of the profile.
``olrg-hpc submit HMC_CONFIG --cluster PROFILE`` (a config with ``program: mpi_hmc``) renders
``slurm/mpi_hmc.sbatch``: ``srun --mpi=pmi2`` over the config's ``ntasks`` ranks. ``--dry-run`` prints
the script instead of submitting it. Partition and account come from the profile.

What reaches the script: the profile's values, already restricted to plain words and paths
(:mod:`olrg_hpc.config`), paths of this machine shell-quoted, the study folder and the log path checked by
:func:`olrg_hpc.config.check_job_path` (they also appear in ``#SBATCH`` lines, where quotes do not help), and
the profile's ``job_script_prologue`` lines as written (shell by design).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

from olrg_hpc.cluster import check_slurm
from olrg_hpc.config import (
    SlurmProfile,
    WorkflowLookup,
    check_job_path,
    load_hmc_config,
    load_profile,
    load_study,
    read_yaml,
)
from olrg_hpc.errors import UserError
from olrg_hpc.resources import shipped_dir

TEMPLATES = shipped_dir("slurm")


@dataclass
class Submission:
    script: str
    script_path: Path
    log: Path
    study_dir: Path | None
    job_id: str | None = None


def render(template: str, values: dict[str, str]) -> str:
    path = TEMPLATES / template
    try:
        return Template(path.read_text()).substitute(values)
    except FileNotFoundError:
        raise UserError(f"{path}: job template not found") from None
    except KeyError as exc:
        raise UserError(f"{path}: unknown placeholder ${{{exc.args[0]}}}") from None
    except ValueError as exc:
        raise UserError(f"{path}: {exc}") from None


def _word(value: str) -> str:
    """A profile path for the shell: double-quoted when it refers to ``$NAME`` (expanded on the node; the
    profile's character set has no quote, backslash or backtick), single-quoted (shlex) otherwise."""
    return f'"{value}"' if "$" in value else shlex.quote(value)


def _common(profile: SlurmProfile) -> dict[str, str]:
    directives = []
    if profile.queue:
        directives.append(f"#SBATCH --partition={profile.queue}")
    if profile.account:
        directives.append(f"#SBATCH --account={profile.account}")
    directives += [f"#SBATCH {d}" for d in profile.job_extra_directives]
    return {"directives": "\n".join(directives), "prologue": "\n".join(profile.job_script_prologue),
            "python": _word(profile.python or sys.executable), "walltime": profile.walltime,
            "workdir": shlex.quote(str(Path.cwd()))}


def prepare(config: str, cluster: str, get_workflow: WorkflowLookup, check: bool = True) -> Submission:
    """Validate the config (its workflow found with ``get_workflow``) and the profile and render the job script
    (nothing is submitted)."""
    _, profile = load_profile(cluster)
    if not isinstance(profile, SlurmProfile):
        raise UserError(f"--cluster {cluster}: submit needs a slurm profile (this one is kind {profile.kind})")
    values = _common(profile)
    if check:
        check_slurm(profile)
    if read_yaml(config).get("program") == "mpi_hmc":
        cfg = load_hmc_config(config)
        out_dir = Path(cfg.out).resolve().parent
        check_job_path(f"{config}: out", out_dir)
        log = out_dir / "mpi_hmc-%j.out"
        values.update(job_name="olrg-hmc", log=str(log), ntasks=str(cfg.ntasks),
                      mem_per_cpu=profile.memory.replace(" ", ""), config=shlex.quote(str(Path(config).resolve())))
        return Submission(render("mpi_hmc.sbatch", values), out_dir / "mpi_hmc.sbatch", log, None)
    cfg, _ = load_study(config, get_workflow)
    study_dir = Path(cfg.output or Path("studies") / cfg.study).resolve()
    check_job_path(f"{config}: output", study_dir)
    log = study_dir / "driver-%j.out"
    values.update(job_name=f"olrg-{cfg.study}"[:64], log=str(log), driver_mem="2G",
                  study_dir=shlex.quote(str(study_dir)), config=shlex.quote(str(Path(config).resolve())),
                  profile=shlex.quote(str(load_profile(cluster)[0])))
    return Submission(render("driver.sbatch", values), study_dir / "driver.sbatch", log, study_dir)


def sbatch(sub: Submission) -> Submission:
    """Write the script next to its results and submit it; the job id is parsed from sbatch's answer."""
    sub.script_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sub.script_path.write_text(sub.script)
    out = subprocess.run(["sbatch", "--parsable", str(sub.script_path)], capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        msg = " ".join(out.stderr.split()) or f"exit code {out.returncode}"
        raise UserError(f"sbatch {sub.script_path}: {msg}")
    m = re.match(r"^(\d+)", out.stdout.strip())
    if not m:
        raise UserError(f"sbatch {sub.script_path}: unexpected answer {out.stdout.strip()!r}")
    sub.job_id = m.group(1)
    return sub


def jax_job(profile: SlurmProfile, command: str, ntasks: int, log: Path, cpu_devices_per_task: int = 0) -> str:
    """Job script for a multi-process JAX program (``slurm/jax_multinode.sbatch``).

    ``cpu_devices_per_task > 0`` emulates that many CPU devices in every process (tests, CPU clusters).
    """
    values = _common(profile)
    values.update(job_name="olrg-jax", log=str(log), ntasks=str(ntasks), cpus_per_task=str(profile.cores),
                  mem_per_cpu=profile.memory.replace(" ", ""), command=command,
                  xla_flags=f"--xla_force_host_platform_device_count={cpu_devices_per_task}"
                  if cpu_devices_per_task else "")
    return render("jax_multinode.sbatch", values)
