"""Study configs and cluster profiles: YAML in, validated pydantic models out.

A *study* is one YAML file naming its workflow and that workflow's parameters::

    study: tfim-quench          # name; also the default output folder studies/<study>
    workflow: chain_sweep       # a workflow of the registry the command line hands down (workflows.WORKFLOWS)
    seed: 1234                  # study seed; every task derives its own from it and its name
    retries: 1                  # times a raising task is retried before it is reported as failed
    output: studies/tfim        # optional output folder
    params: {...}               # validated by the workflow's own ``Params`` model

A *cluster profile* is one YAML file in ``configs/clusters/`` with ``kind: local | slurm | address``
(:data:`PROFILE_KINDS`); a SLURM profile may name several worker pools (``pools``).

Every model forbids unknown keys and non-finite numbers. Validation errors become one
:class:`~olrg_hpc.errors.UserError` line ``FILE: KEY.PATH: what was expected (got VALUE)``, e.g.
``configs/x.yaml: params.n_sitse: unknown key (allowed: n_sites, h, ...)``; a value shown in an error is cut to
:data:`SHOWN_CHARS` characters, so a 50 MB value never becomes a 50 MB line.

**Bounded input.** :func:`read_yaml` reads at most :data:`MAX_CONFIG_BYTES` of UTF-8 text from a regular file
and refuses, in one line naming the key path: duplicate keys, nesting deeper than :data:`MAX_DEPTH`, more than
:data:`MAX_NODES` values (aliases counted each time they are used), strings longer than :data:`MAX_STRING` or
holding control or other non-printable characters (a newline in a name, a path or a job-script value), and
``.nan``/``.inf``. The largest shipped config is 2.5 kB and the deepest nests 7 levels: 1 MiB and 32 levels leave
ample room for hand-written configs, while reading any file that passes or fails them stays under ~1.5 s.

**Values that reach a job script.** Everything of a SLURM profile that dask-jobqueue or ``slurm/*.sbatch``
writes into a job script is checked against a character set that the shell and ``sbatch`` read as one plain
word (:data:`SAFE_WORD`, :data:`SAFE_PATH`; ``$NAME``/``${NAME}`` also in ``python`` and ``local_directory``,
expanded on the compute node); ``job_extra_directives`` must be options (``-x`` or ``--name[=value]``) and go
only into ``#SBATCH`` comment lines. ``job_script_prologue`` is shell by design: each item is one line,
run as written, with the user's rights, on the compute node; olrg-hpc neither quotes nor checks it beyond
that. Study output paths are checked by :func:`check_job_path` for SLURM profiles.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Literal

import yaml
from dask.utils import parse_bytes, parse_timedelta
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from olrg_hpc.errors import UserError
from olrg_hpc.lattice.mpi_hmc_spec import MPIHMCSpec
from olrg_hpc.resources import shipped_dir

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: one word for the shell and for sbatch: partitions, accounts, job names, interfaces
SAFE_WORD = re.compile(r"[A-Za-z0-9_.,@%+=:-]+")
#: a path that the shell and sbatch read as one word (no spaces, quotes, ``$`` or shell operators)
SAFE_PATH = re.compile(r"[A-Za-z0-9_./+@%,:=~-]+")
#: SAFE_PATH with environment references ``$NAME`` / ``${NAME}`` (expanded by the job's shell)
SAFE_PATH_VARS = re.compile(r"(?:[A-Za-z0-9_./+@%,:=~-]|\$[A-Za-z_][A-Za-z0-9_]*|\$\{[A-Za-z_][A-Za-z0-9_]*\})+")
_DIRECTIVE_RE = re.compile(r"-[A-Za-z]|--[A-Za-z][A-Za-z0-9-]*")
_ADDRESS_RE = re.compile(r"(?:[A-Za-z0-9_.-]*|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")

MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_NODES = 100_000
MAX_STRING = 4096
SHOWN_CHARS = 60


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error line, cut to ``limit`` characters with the full length said."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f"{len(value)} characters" if isinstance(value, str) else f"{len(text)} characters as text"
    return f"{text[:limit]}... ({size})"


class Strict(BaseModel):
    """Base for every config model: unknown keys are errors, values are not coerced silently, numbers finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _safe(v: str | None, pattern: re.Pattern[str], what: str) -> str | None:
    if v is not None and not pattern.fullmatch(v):
        raise ValueError(f"{what} (letters, digits and {_allowed(pattern)}; no spaces, quotes or shell "
                         f"characters) (got {shown(v)})")
    return v


def _allowed(pattern: re.Pattern[str]) -> str:
    return {SAFE_WORD.pattern: "_ . , @ % + = : -", SAFE_PATH.pattern: "_ . / + @ % , : = ~ -",
            SAFE_PATH_VARS.pattern: "_ . / + @ % , : = ~ - and $NAME or ${NAME}"}.get(pattern.pattern, "")


def check_job_path(label: str, path: str | Path) -> None:
    """UserError unless ``path`` (e.g. a study folder that a SLURM job script names) is a :data:`SAFE_PATH`."""
    text = str(path)
    if not SAFE_PATH.fullmatch(text):
        raise UserError(f"{label}: {shown(text)} cannot go into a SLURM job script: use a path of letters, digits "
                        f"and {_allowed(SAFE_PATH)} (no spaces, quotes or shell characters)")


#: a workflow registry: name -> module with ``Params``, ``build`` and ``report``; KeyError naming the known ones
WorkflowLookup = Callable[[str], ModuleType]


class StudyConfig(Strict):
    study: str = Field(description="study name (letters, digits, . _ -; at most 64)")
    workflow: str = Field(description="workflow module in workflows/")
    seed: int = Field(0, ge=0, description="study seed")
    retries: int = Field(1, ge=0, le=20, description="retries of a raising task")
    output: str | None = Field(None, description="output folder (default studies/<study>)")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("study")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.fullmatch(v):
            raise ValueError("a name of 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return v


# ---------------------------------------------------------------------------------------------- clusters


def _check_memory(v: str) -> str:
    try:
        if not re.fullmatch(r"[0-9.]+ ?[A-Za-z]*", v) or parse_bytes(v) <= 0:
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError(f"a memory size such as '4GB' or '512MiB' (got {shown(v)})") from None
    return v


_WALLTIME_RE = re.compile(r"^(?:(\d+)-)?(\d{1,3}):([0-5]\d)(?::([0-5]\d))?$")


def walltime_seconds(v: str) -> int:
    """Seconds in a SLURM walltime 'D-HH:MM:SS', 'HH:MM:SS' or 'HH:MM' (ValueError if unparsable)."""
    m = _WALLTIME_RE.fullmatch(v)
    if not m:
        raise ValueError(f"a walltime such as '01:30:00' or '2-00:00:00' (got {shown(v)})")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    if total <= 0:
        raise ValueError(f"a positive walltime (got {v!r})")
    return total


def _check_duration(v: str) -> str:
    try:
        if not re.fullmatch(r"[0-9.]+ ?[A-Za-z]*", v) or parse_timedelta(v) <= 0:
            raise ValueError
    except (ValueError, TypeError, KeyError):
        raise ValueError(f"a duration such as '55m' or '3600s' (got {shown(v)})") from None
    return v


def _check_address(v: str) -> str:
    if not _ADDRESS_RE.fullmatch(v):
        raise ValueError(f"an address HOST:PORT such as '127.0.0.1:8787' or ':8787' (got {shown(v)})")
    return v


class LocalProfile(Strict):
    """A dask.distributed LocalCluster on this machine (the default)."""

    kind: Literal["local"]
    n_workers: int | None = Field(None, ge=1, description="worker processes (default: cores / threads)")
    threads_per_worker: int = Field(1, ge=1)
    processes: bool = True
    memory_limit: str = "auto"
    security: bool = Field(True, description="TLS between scheduler, workers and client, credentials of this run")
    dashboard_address: str = Field("127.0.0.1:8787", description="':8787' listens on every interface")

    @field_validator("memory_limit")
    @classmethod
    def _mem(cls, v: str) -> str:
        return v if v == "auto" else _check_memory(v)

    @field_validator("dashboard_address")
    @classmethod
    def _dash(cls, v: str) -> str:
        return _check_address(v)


class AdaptBounds(Strict):
    minimum_jobs: int = Field(0, ge=0)
    maximum_jobs: int = Field(ge=1)


#: a worker pool's name: part of Dask resource names (``pool-NAME``), job names and the shards' ``pool`` attribute
_POOL_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
#: the pool of a profile without ``pools``
DEFAULT_POOL = "default"


class SlurmProfile(Strict):
    """dask-jobqueue SLURMCluster: every keyword a user of dask-jobqueue expects, validated; one worker pool, or several
    (``pools``: each a name and the keys of its worker jobs that differ from the profile's)."""

    kind: Literal["slurm"]
    queue: str | None = Field(None, description="partition (#SBATCH -p)")
    account: str | None = None
    cores: int = Field(1, ge=1, description="cores per job (per SLURM task when ntasks > 1)")
    processes: int = Field(1, ge=1, description="worker processes per job")
    memory: str = "2GB"
    walltime: str = "01:00:00"
    gpus_per_job: int = Field(0, ge=0, description="adds #SBATCH --gres=gpu:N")
    nodes: int | None = Field(None, ge=1, description="nodes per worker job (#SBATCH --nodes)")
    ntasks: int = Field(1, ge=1, description="SLURM tasks per worker job: the processes a task that asks for "
                        "several may span (an srun step inside the job)")
    accelerator: bool | None = Field(None, description="tasks that want an accelerator go here (default: "
                                     "gpus_per_job > 0)")
    resources: dict[str, float] = Field(default_factory=dict, description="extra Dask worker resources, per worker")
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
    dashboard_address: str = Field("127.0.0.1:8787", description="':8787' listens on every interface")
    max_failed_starts: int = Field(3, ge=1, le=100, description="worker jobs that may end before their worker "
                                   "connects before the study stops")
    pools: dict[str, dict[str, Any]] = Field(default_factory=dict, description="worker pools by name: the keys of "
                                             "their worker jobs that differ from the ones above")

    @field_validator("queue", "job_name", "interface")
    @classmethod
    def _word(cls, v: str | None) -> str | None:
        return _safe(v, SAFE_WORD, "a name")

    @field_validator("account")
    @classmethod
    def _account(cls, v: str | None) -> str | None:
        return _safe(v, SAFE_WORD, "an account name")

    @field_validator("log_directory")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        return _safe(v, SAFE_PATH, "a path")

    @field_validator("python", "local_directory")
    @classmethod
    def _path_vars(cls, v: str | None) -> str | None:
        return _safe(v, SAFE_PATH_VARS, "a path")

    @field_validator("job_extra_directives")
    @classmethod
    def _directives(cls, v: list[str]) -> list[str]:
        for d in v:
            opt = d.split("=", 1)[0].split(" ", 1)[0]
            if not _DIRECTIVE_RE.fullmatch(opt) or not d.isprintable():
                raise ValueError(f"sbatch options such as '--qos=normal' or '-C gpu' (got {shown(d)})")
        return v

    @field_validator("resources")
    @classmethod
    def _resources(cls, v: dict[str, float]) -> dict[str, float]:
        for name, amount in v.items():
            if not _POOL_RE.fullmatch(name) or amount <= 0:
                raise ValueError(f"resource names of letters, digits and _ with positive amounts, such as GPU: 1 "
                                 f"(got {shown(name)}: {amount})")
        return v

    @field_validator("dashboard_address")
    @classmethod
    def _dash(cls, v: str) -> str:
        return _check_address(v)

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
        if self.ntasks > 1 and self.processes > 1:
            raise ValueError(f"ntasks ({self.ntasks}) > 1 needs processes: 1 (one Dask worker drives the job's tasks)")
        if self.nodes is not None and self.nodes > self.ntasks:
            raise ValueError(f"nodes ({self.nodes}) exceeds ntasks ({self.ntasks}): every node runs a task")
        if self.worker_lifetime is not None:
            life, wall = parse_timedelta(self.worker_lifetime), walltime_seconds(self.walltime)
            if life + parse_timedelta(self.lifetime_stagger) >= wall:
                raise ValueError(f"worker_lifetime + lifetime_stagger ({self.worker_lifetime} + "
                                 f"{self.lifetime_stagger}) must be shorter than walltime ({self.walltime})")
        return self

    @field_validator("pools")
    @classmethod
    def _pools(cls, v: dict[str, dict[str, Any]], info: ValidationInfo) -> dict[str, dict[str, Any]]:
        for name, keys in v.items():
            if not _POOL_RE.fullmatch(name):
                raise ValueError(f"a pool name of letters, digits and _, starting with a letter (got {shown(name)})")
            if not isinstance(keys, dict):
                raise ValueError(f".{name}: a mapping of worker-job keys (got {shown(keys)})")
            if len(info.data) == len(cls.model_fields) - 1:  # the other keys are valid: check the pool as a whole
                _pool(dict(info.data), name, keys)
        return v

    @property
    def is_accelerator(self) -> bool:
        return self.gpus_per_job > 0 if self.accelerator is None else self.accelerator

    def worker_pools(self) -> dict[str, SlurmProfile]:
        """The profile of every worker pool by name (one, :data:`DEFAULT_POOL`, without ``pools``)."""
        if not self.pools:
            return {DEFAULT_POOL: self}
        base = self.model_dump(exclude={"pools"})
        return {name: _pool(base, name, keys) for name, keys in self.pools.items()}


def _pool(base: dict[str, Any], name: str, keys: dict[str, Any]) -> SlurmProfile:
    """The profile of pool ``name``: the profile's keys ``base`` with the pool's ``keys`` over them (``jobs`` and
    ``adapt``: a pool that sets one of them sets both; ``job_name`` defaults to the profile's plus ``-NAME``);
    errors continue the key path ``.NAME.KEY``."""
    bad = sorted(set(keys) - set(POOL_KEYS))
    if bad:
        close = difflib.get_close_matches(str(bad[0]), POOL_KEYS, n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        raise ValueError(f".{name}.{_cut(str(bad[0]))}: unknown key ({hint}allowed in a pool: {', '.join(POOL_KEYS)})")
    base = {k: v for k, v in base.items() if k != "pools"}
    if "jobs" in keys or "adapt" in keys:
        base.pop("jobs", None)
        base.pop("adapt", None)
    keys = {"job_name": f"{base.get('job_name', 'olrg-worker')}-{name}", **keys}
    try:
        return SlurmProfile.model_validate({**base, **keys})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        got_text = f" (got {shown(got)})" if got is not None and "got" not in msg and not isinstance(got, dict) \
            and loc else ""
        raise ValueError(f".{name}{'.' + loc if loc else ''}: {msg}{got_text}") from None


#: the keys a pool of a SLURM profile may set: those of its worker jobs
POOL_KEYS = ["queue", "account", "cores", "processes", "memory", "walltime", "gpus_per_job", "nodes", "ntasks",
             "accelerator", "resources", "jobs", "adapt", "job_extra_directives", "job_directives_skip",
             "job_script_prologue", "interface", "local_directory", "worker_lifetime", "lifetime_stagger", "python",
             "job_name"]


class AddressProfile(Strict):
    """An already running Dask scheduler."""

    kind: Literal["address"]
    address: str = Field(description="e.g. tcp://10.0.0.5:8786")
    timeout: str = "10s"

    @field_validator("address")
    @classmethod
    def _addr(cls, v: str) -> str:
        if not re.fullmatch(r"(?:tcp|tls|ucx|inproc)://[A-Za-z0-9_.:\[\]/-]+", v):
            raise ValueError(f"a scheduler address such as 'tcp://host:8786' (got {shown(v)})")
        return v


#: every cluster kind by its ``kind:`` value: its profile model (and :mod:`olrg_hpc.cluster`'s module of that name)
PROFILE_KINDS: dict[str, type[Strict]] = {"local": LocalProfile, "slurm": SlurmProfile, "address": AddressProfile}
AnyProfile = LocalProfile | SlurmProfile | AddressProfile
ClusterProfile = Annotated[AnyProfile, Field(discriminator="kind")]
_PROFILE_ADAPTER: TypeAdapter[AnyProfile] = TypeAdapter(ClusterProfile)
_KINDS_TEXT = ", ".join(PROFILE_KINDS)

class MPIHMCConfig(MPIHMCSpec):
    """An MPI HMC run (``mpiexec -n N olrg-hpc hmc CONFIG``): the program's own spec
    (:class:`olrg_hpc.lattice.mpi_hmc_spec.MPIHMCSpec`, its keys, defaults and checks), ``out`` required, plus
    what the engine needs to start it. A rerun resumes from ``checkpoint``."""

    program: Literal["mpi_hmc"]
    out: str = Field(description="results file, HDF5 with provenance (written by rank 0, atomically)")
    ntasks: int = Field(4, ge=1, description="MPI ranks when submitted with olrg-hpc submit")

    def spec(self) -> MPIHMCSpec:
        """The program's spec (without the engine's keys)."""
        return MPIHMCSpec.model_validate(self.model_dump(exclude={"program", "ntasks"}))


def load_hmc_config(path: str | Path) -> MPIHMCConfig:
    data = read_yaml(path)
    try:
        return MPIHMCConfig.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(str(path), exc, model=MPIHMCConfig)) from None


# ------------------------------------------------------------------------------------------------ errors


def _cut(text: str, limit: int = SHOWN_CHARS) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _loc(loc: tuple[Any, ...]) -> str:
    if loc and loc[0] in PROFILE_KINDS and len(loc) > 1:  # the union tag of a cluster profile
        loc = loc[1:]
    parts = [_cut(str(p)) for p in loc]
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
            close = difflib.get_close_matches(str(err["loc"][-1])[:MAX_STRING], fields, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            allowed = f" ({hint}allowed: {', '.join(fields)})"
        return f"{source}: {_cut(key)}: unknown key{allowed}".removeprefix(": ")
    if etype == "missing":
        return f"{source}: {key}: required key is missing".removeprefix(": ")
    if etype == "union_tag_invalid" or etype == "union_tag_not_found":
        return f"{source}: kind: expected one of {_KINDS_TEXT} (got {shown(err.get('input', {}).get('kind'))})"
    msg = err["msg"].removeprefix("Value error, ")
    if msg.startswith("."):  # a nested config validated by its own model (see workflows.suite): key path continues
        return f"{source}: {key}{msg}"
    got = err.get("input")
    got_text = f" (got {shown(got)})" if got is not None and "got" not in msg and not isinstance(got, dict) else ""
    more = len(errors) - 1
    tail = f" [+{more} more]" if more else ""
    return f"{source}: {key}: {msg}{got_text}{tail}".removeprefix(": ")


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
        if isinstance(part, int) or part in PROFILE_KINDS:
            continue  # list index or union tag: the model found so far already is the item type
        field = cur.model_fields.get(part) if cur is not None else None
        if field is None:
            return []
        cur = _model_in(field.annotation)
    return list(cur.model_fields) if cur is not None else []


# ------------------------------------------------------------------------------------------------ loading


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key that appears twice in one mapping (YAML says keys are unique;
    PyYAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
            except TypeError:  # an unhashable key: PyYAML reports it below
                continue
            if dup:
                mark = key_node.start_mark
                raise UserError(f"{self.name}: duplicate key {shown(key)} at line {mark.line + 1}, column "
                                f"{mark.column + 1} (each key once per mapping)")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _check_values(data: Any, source: str) -> None:
    """Walk a loaded document (iteratively) and refuse what :func:`read_yaml` bounds (module docstring)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(data, ())]
    nodes = 0
    while stack:
        value, path = stack.pop()
        nodes += 1
        where = ".".join(_cut(str(p)) for p in path) or "(top level)"
        if nodes > MAX_NODES:
            raise UserError(f"{source}: more than {MAX_NODES} values (aliases count each time they are used)")
        if len(path) > MAX_DEPTH:
            raise UserError(f"{source}: {where}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{source}: {where}: a finite number (got {value!r})")
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise UserError(f"{source}: {where}: a value of at most {MAX_STRING} characters (got {shown(value)})")
            if not value.isprintable():
                bad = next(c for c in value if not c.isprintable())
                raise UserError(f"{source}: {where}: control or non-printable character {bad!r} in {shown(value)} "
                                "(one line of printable characters)")
        elif isinstance(value, dict):
            for k, v in value.items():
                if isinstance(k, str) and (len(k) > 200 or not k.isprintable()):
                    raise UserError(f"{source}: {where}: key {shown(k)}: at most 200 printable characters")
                stack.append((v, (*path, k)))
        elif isinstance(value, list):
            stack.extend((v, (*path, i)) for i, v in enumerate(value))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, bounded and checked (module docstring); anything wrong is one UserError line."""
    p = Path(path)
    try:
        st = p.stat()
        if not p.is_file():
            raise UserError(f"{p}: not a regular file")
        if st.st_size > MAX_CONFIG_BYTES:
            raise UserError(f"{p}: {st.st_size} bytes; a config is at most {MAX_CONFIG_BYTES} bytes")
        raw = p.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except OSError as exc:
        raise UserError(f"{p}: cannot read ({exc.strerror})") from None
    if b"\0" in raw:
        raise UserError(f"{p}: a binary file (NUL bytes), not a YAML config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None
    loader = _Loader(text)
    loader.name = str(p)
    try:
        data = loader.get_single_data()
    except RecursionError:
        raise UserError(f"{p}: nested too deeply to read (at most {MAX_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or "invalid YAML"
        raise UserError(f"{p}: YAML syntax error{where}: {_cut(str(problem), 120)}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise UserError(f"{p}: expected a mapping of keys to values at the top level (got {type(data).__name__})")
    _check_values(data, str(p))
    return data


def load_study(path: str | Path, get_workflow: WorkflowLookup) -> tuple[StudyConfig, BaseModel]:
    """Load and validate a study config and its workflow parameters (``get_workflow``: the registry the caller
    hands down, e.g. :func:`workflows.get_workflow`; the engine does not know the workflows)."""
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
    """Resolve ``--cluster``: a path to a YAML file, or a name in ``configs/clusters/`` of the working directory,
    then of ``search_root``, then among the shipped profiles (the repository's ``configs/clusters/``, or an
    installed wheel's copies: :func:`olrg_hpc.resources.shipped_dir`)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise UserError(f"{p}: no such cluster profile file")
        return p
    dirs = [root / "configs" / "clusters" for root in [Path.cwd()] + ([search_root] if search_root else [])]
    dirs.append(shipped_dir("clusters"))
    for d in dirs:
        cand = d / f"{name_or_path}.yaml"
        if cand.exists():
            return cand
    known = sorted({c.stem for d in dirs for c in d.glob("*.yaml")})
    raise UserError(f"--cluster {name_or_path}: no such profile (known: {', '.join(known) or 'none'})")


def load_profile(name_or_path: str = "local") -> tuple[Path, AnyProfile]:
    """Load and validate a cluster profile by name or path."""
    path = find_profile(name_or_path)
    data = read_yaml(path)
    if "kind" not in data:
        raise UserError(f"{path}: kind: required key is missing (expected one of {_KINDS_TEXT})")
    try:
        return path, _PROFILE_ADAPTER.validate_python(data)
    except ValidationError as exc:
        model = PROFILE_KINDS.get(data.get("kind"))
        raise UserError(format_validation_error(str(path), exc, model=model)) from None
