"""Study configs and cluster profiles: YAML in, validated pydantic models out.

A *study* is one YAML file naming its workflow and that workflow's parameters::

    study: tfim-quench          # name; also the default output folder studies/<study>
    workflow: chain_sweep       # a module in workflows/ (see workflows.WORKFLOWS)
    seed: 1234                  # study seed; every task derives its own from it and its name
    retries: 1                  # times a raising task is retried before it is reported as failed
    output: studies/tfim        # optional output folder
    params: {...}               # validated by the workflow's own ``Params`` model

A *cluster profile* is one YAML file in ``configs/clusters/`` with ``kind: local | slurm | address``.

Every model forbids unknown keys. Validation errors become one :class:`~olrg_hpc.errors.UserError` line
``FILE: KEY.PATH: what was expected (got VALUE)``, e.g.
``configs/x.yaml: params.n_sitse: unknown key (allowed: n_sites, h, ...)``.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from dask.utils import parse_bytes, parse_timedelta
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from olrg_hpc.errors import UserError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, values are not coerced silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class StudyConfig(Strict):
    study: str = Field(description="study name (letters, digits, . _ -)")
    workflow: str = Field(description="workflow module in workflows/")
    seed: int = Field(0, ge=0, description="study seed")
    retries: int = Field(1, ge=0, le=20, description="retries of a raising task")
    output: str | None = Field(None, description="output folder (default studies/<study>)")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("study")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("a name of letters, digits, '.', '_' or '-'")
        return v


# ---------------------------------------------------------------------------------------------- clusters


def _check_memory(v: str) -> str:
    try:
        if parse_bytes(v) <= 0:
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError(f"a memory size such as '4GB' or '512MiB' (got {v!r})") from None
    return v


_WALLTIME_RE = re.compile(r"^(?:(\d+)-)?(\d{1,3}):([0-5]\d)(?::([0-5]\d))?$")


def walltime_seconds(v: str) -> int:
    """Seconds in a SLURM walltime 'D-HH:MM:SS', 'HH:MM:SS' or 'HH:MM' (ValueError if unparsable)."""
    m = _WALLTIME_RE.match(v.strip())
    if not m:
        raise ValueError(f"a walltime such as '01:30:00' or '2-00:00:00' (got {v!r})")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"a positive walltime (got {v!r})")
    return total


def _check_duration(v: str) -> str:
    try:
        if parse_timedelta(v) <= 0:
            raise ValueError
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"a duration such as '55m' or '3600s' (got {v!r})") from None
    return v


class LocalProfile(Strict):
    """A dask.distributed LocalCluster on this machine (the default)."""

    kind: Literal["local"]
    n_workers: int | None = Field(None, ge=1, description="worker processes (default: cores / threads)")
    threads_per_worker: int = Field(1, ge=1)
    processes: bool = True
    memory_limit: str = "auto"
    dashboard_address: str = ":8787"

    @field_validator("memory_limit")
    @classmethod
    def _mem(cls, v: str) -> str:
        return v if v == "auto" else _check_memory(v)


class AdaptBounds(Strict):
    minimum_jobs: int = Field(0, ge=0)
    maximum_jobs: int = Field(ge=1)


class SlurmProfile(Strict):
    """dask-jobqueue SLURMCluster: every keyword a user of dask-jobqueue expects, validated."""

    kind: Literal["slurm"]
    queue: str | None = Field(None, description="partition (#SBATCH -p)")
    account: str | None = None
    cores: int = Field(1, ge=1, description="cores per job")
    processes: int = Field(1, ge=1, description="worker processes per job")
    memory: str = "2GB"
    walltime: str = "01:00:00"
    gpus_per_job: int = Field(0, ge=0, description="adds #SBATCH --gres=gpu:N")
    jobs: int | None = Field(None, ge=1, description="fixed number of worker jobs (scale)")
    adapt: AdaptBounds | None = None
    job_extra_directives: list[str] = Field(default_factory=list)
    job_directives_skip: list[str] = Field(default_factory=list)
    job_script_prologue: list[str] = Field(default_factory=list)
    interface: str | None = None
    local_directory: str | None = None
    log_directory: str | None = None
    worker_lifetime: str | None = Field(None, description="e.g. '55m': restart workers before walltime")
    lifetime_stagger: str = "2m"
    python: str | None = Field(None, description="python on compute nodes (default: this one)")
    job_name: str = Field("olrg-worker", description="SLURM job name of the worker jobs (squeue -n)")
    security: bool = Field(True, description="TLS with per-study temporary credentials")
    dashboard_address: str = ":8787"
    submit_template: str = "slurm/driver.sbatch"

    @field_validator("memory")
    @classmethod
    def _mem(cls, v: str) -> str:
        return _check_memory(v)

    @field_validator("walltime")
    @classmethod
    def _wall(cls, v: str) -> str:
        walltime_seconds(v)
        return v

    @field_validator("worker_lifetime", "lifetime_stagger")
    @classmethod
    def _dur(cls, v: str | None) -> str | None:
        return None if v is None else _check_duration(v)

    @model_validator(mode="after")
    def _consistent(self) -> SlurmProfile:
        if self.jobs is not None and self.adapt is not None:
            raise ValueError("set either jobs (fixed) or adapt (bounds), not both")
        if self.adapt is not None and self.adapt.minimum_jobs > self.adapt.maximum_jobs:
            raise ValueError(f"adapt.minimum_jobs ({self.adapt.minimum_jobs}) exceeds adapt.maximum_jobs "
                             f"({self.adapt.maximum_jobs})")
        if self.processes > self.cores:
            raise ValueError(f"processes ({self.processes}) exceeds cores ({self.cores}) per job")
        if self.worker_lifetime is not None:
            life, wall = parse_timedelta(self.worker_lifetime), walltime_seconds(self.walltime)
            if life + parse_timedelta(self.lifetime_stagger) >= wall:
                raise ValueError(f"worker_lifetime + lifetime_stagger ({self.worker_lifetime} + "
                                 f"{self.lifetime_stagger}) must be shorter than walltime ({self.walltime})")
        return self


class AddressProfile(Strict):
    """An already running Dask scheduler."""

    kind: Literal["address"]
    address: str = Field(description="e.g. tcp://10.0.0.5:8786")
    timeout: str = "10s"

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        if "://" not in v:
            raise ValueError(f"a scheduler address such as 'tcp://host:8786' (got {v!r})")
        return v


ClusterProfile = Annotated[LocalProfile | SlurmProfile | AddressProfile, Field(discriminator="kind")]
_PROFILE_ADAPTER: TypeAdapter[LocalProfile | SlurmProfile | AddressProfile] = TypeAdapter(ClusterProfile)

class MPIHMCConfig(Strict):
    """An MPI HMC run (``mpiexec -n N olrg-hpc hmc CONFIG``; see olrg_hpc.lattice.mpi_hmc).

    Exactly one action convention: ``m2`` (tutorial), ``beta`` (beta/lambda) or ``kappa`` (hopping),
    each with ``lam``. ``n_traj`` is the total target: a rerun resumes from ``checkpoint``.
    """

    program: Literal["mpi_hmc"]
    L: int | list[int] = Field(description="L, or [Ly, Lx]")
    m2: float | None = Field(None, allow_inf_nan=False)
    beta: float | None = Field(None, gt=0, allow_inf_nan=False)
    kappa: float | None = Field(None, gt=0, allow_inf_nan=False)
    lam: float = Field(ge=0, allow_inf_nan=False)
    n_traj: int = Field(ge=1)
    seed: int = Field(0, ge=0)
    tau: float = Field(1.0, gt=0, allow_inf_nan=False)
    n_steps: int = Field(10, ge=1)
    integrator: Literal["leapfrog", "omelyan"] = "leapfrog"
    init: Literal["hot", "cold"] = "hot"
    init_scale: float = Field(0.5, gt=0, allow_inf_nan=False,
                              description="hot start: standard deviation of the field per site")
    dims: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=2, max_length=2,
                                                          description="process grid [Py, Px]")
    checkpoint: str | None = None
    checkpoint_every: int = Field(0, ge=0)
    out: str = Field(description="results file, HDF5 with provenance (written by rank 0, atomically)")
    transport: Literal["mpi4jax", "callback"] | None = Field(
        None, description="how halos travel between ranks (default: mpi4jax when installed)")
    watchdog_s: float = Field(300.0, gt=0, allow_inf_nan=False,
                              description="end the run when a rank makes no progress for this long")
    ntasks: int = Field(4, ge=1, description="MPI ranks when submitted with olrg-hpc submit")

    @model_validator(mode="after")
    def _check(self) -> MPIHMCConfig:
        given = [k for k in ("m2", "beta", "kappa") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of m2, beta, kappa (got {', '.join(given) or 'none'})")
        sizes = [self.L, self.L] if isinstance(self.L, int) else self.L
        if len(sizes) != 2 or min(sizes) < 2:
            raise ValueError(f"L must be an extent >= 2 or [Ly, Lx] (got {self.L})")
        if self.dims is not None and (sizes[0] % self.dims[0] or sizes[1] % self.dims[1]):
            raise ValueError(f"dims {self.dims} must divide the lattice {sizes}")
        return self


def load_hmc_config(path: str | Path) -> MPIHMCConfig:
    data = read_yaml(path)
    try:
        return MPIHMCConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(str(path), exc, model=MPIHMCConfig)) from None


# ------------------------------------------------------------------------------------------------ errors


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("local", "slurm", "address")]
    return ".".join(parts) if parts else "(top level)"


def format_validation_error(source: str, exc: ValidationError, prefix: str = "", model: Any = None) -> str:
    """One line naming the file, the key path and what was expected, for the most telling error.

    An unknown key is reported before a missing one: a typo'd ``n_sitse`` causes both, and the typo is the
    cause. For unknown keys the closest allowed name is suggested.
    """
    errors = sorted(exc.errors(), key=lambda e: {"extra_forbidden": 0, "missing": 2}.get(e["type"], 1))
    err = errors[0]
    key = _loc(tuple(err["loc"]))
    key = f"{prefix}{key}" if prefix else key
    etype = err["type"]
    if etype == "extra_forbidden":
        allowed = ""
        fields = _allowed_keys(model, tuple(err["loc"])[:-1]) if model is not None else []
        if fields:
            close = difflib.get_close_matches(str(err["loc"][-1]), fields, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            allowed = f" ({hint}allowed: {', '.join(fields)})"
        return f"{source}: {key}: unknown key{allowed}".removeprefix(": ")
    if etype == "missing":
        return f"{source}: {key}: required key is missing".removeprefix(": ")
    if etype == "union_tag_invalid" or etype == "union_tag_not_found":
        return f"{source}: kind: expected one of local, slurm, address (got {err.get('input', {}).get('kind')!r})"
    msg = err["msg"].removeprefix("Value error, ")
    if msg.startswith("."):  # a nested config validated by its own model (see workflows.suite): key path continues
        return f"{source}: {key}{msg}"
    got = err.get("input")
    shown = f" (got {got!r})" if got is not None and "got" not in msg and not isinstance(got, dict) else ""
    more = len(errors) - 1
    tail = f" [+{more} more]" if more else ""
    return f"{source}: {key}: {msg}{shown}{tail}".removeprefix(": ")


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside an annotation such as ``list[Sweep]`` or ``AdaptBounds | None``."""
    if hasattr(annotation, "model_fields"):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) model at ``loc``; best effort, for the error message only."""
    cur = model
    for part in loc:
        if isinstance(part, int) or part in ("local", "slurm", "address"):
            continue  # list index or union tag: the model found so far already is the item type
        field = cur.model_fields.get(part) if cur is not None else None
        if field is None:
            return []
        cur = _model_in(field.annotation)
    return list(cur.model_fields) if cur is not None else []


# ------------------------------------------------------------------------------------------------ loading


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; missing file, syntax error or a non-mapping document give one UserError line."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{p}: YAML syntax error{where}: {problem}") from None
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of keys to values at the top level (got {type(data).__name__})")
    return data


def load_study(path: str | Path) -> tuple[StudyConfig, BaseModel]:
    """Load and validate a study config and its workflow parameters."""
    from workflows import get_workflow

    data = read_yaml(path)
    try:
        cfg = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(str(path), exc, model=StudyConfig)) from None
    try:
        wf = get_workflow(cfg.workflow)
    except KeyError as exc:
        raise UserError(f"{path}: workflow: {exc.args[0]}") from None
    try:
        params = wf.Params.model_validate(cfg.params)
    except ValidationError as exc:
        raise UserError(format_validation_error(str(path), exc, prefix="params.", model=wf.Params)) from None
    return cfg, params


def find_profile(name_or_path: str, search_root: Path | None = None) -> Path:
    """Resolve ``--cluster``: a path to a YAML file, or a name in configs/clusters/ (cwd, then the source tree)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise UserError(f"{p}: no such cluster profile file")
        return p
    roots = [Path.cwd()] + ([search_root] if search_root else []) + [Path(__file__).resolve().parents[1]]
    for root in roots:
        cand = root / "configs" / "clusters" / f"{name_or_path}.yaml"
        if cand.exists():
            return cand
    known = sorted({c.stem for r in roots for c in (r / "configs" / "clusters").glob("*.yaml")})
    raise UserError(f"--cluster {name_or_path}: no such profile (known: {', '.join(known) or 'none'})")


def load_profile(name_or_path: str = "local") -> tuple[Path, LocalProfile | SlurmProfile | AddressProfile]:
    """Load and validate a cluster profile by name or path."""
    path = find_profile(name_or_path)
    data = read_yaml(path)
    if "kind" not in data:
        raise UserError(f"{path}: kind: required key is missing (expected one of local, slurm, address)")
    try:
        return path, _PROFILE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        model = {"local": LocalProfile, "slurm": SlurmProfile, "address": AddressProfile}.get(data.get("kind"))
        raise UserError(format_validation_error(str(path), exc, model=model)) from None
