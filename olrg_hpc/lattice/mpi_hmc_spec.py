"""The settings of one MPI HMC run (:mod:`olrg_hpc.lattice.mpi_hmc`): one pydantic model, its only defaults.

:class:`MPIHMCSpec` is what :func:`olrg_hpc.lattice.mpi_hmc.run_mpi_hmc` receives. Every way of starting a run
builds it, so every check and default lives here:

* ``mpiexec -n N olrg-hpc hmc CONFIG``: the YAML is :class:`olrg_hpc.config.MPIHMCConfig`, this model plus the
  engine's ``program`` and ``ntasks`` keys (and ``out`` required);
* ``mpiexec -n N python -m olrg_hpc.lattice.mpi_hmc --L 16 --beta 0.634 --lam 0.5 --n-traj 100 ...``: one option
  per field (:func:`parse_argv`; ``n_traj`` is ``--n-traj``, a boolean ``restart`` is ``--restart`` /
  ``--no-restart``, ``L`` and ``dims`` take one or two numbers); the options carry strings, the model converts
  and checks them, so a bad value is the same one line as from a config;
* a program that launches the module (the scaling study's :func:`olrg_hpc.scaling.mpi_hmc_task`) writes the
  options of a spec with :func:`to_argv`: ``parse_argv(to_argv(spec)) == spec``.

This module imports neither JAX nor MPI: the engine validates configs with it without starting either.
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from olrg_hpc.errors import UserError

__all__ = ["MPIHMCSpec", "error_line", "parse_argv", "to_argv"]

#: the program name in error lines and ``--help``
PROG = "python -m olrg_hpc.lattice.mpi_hmc"


class MPIHMCSpec(BaseModel):
    """One MPI HMC run. Exactly one action convention: ``m2`` (tutorial), ``beta`` (beta/lambda) or ``kappa``
    (hopping), each with ``lam`` (docs/phi4-hmc.md, "Actions and conversions"). ``n_traj`` is the total target:
    with ``checkpoint`` and ``restart`` a rerun continues from the checkpoint to ``n_traj``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    L: int | list[int] = Field(description="lattice extent L (L x L, periodic), or [Ly, Lx]")
    m2: float | None = Field(None, description="tutorial convention mass term (with lam)")
    beta: float | None = Field(None, gt=0, description="beta/lambda convention hopping (with lam)")
    kappa: float | None = Field(None, gt=0, description="hopping convention (with lam)")
    lam: float = Field(ge=0, description="quartic coupling of the chosen convention")
    n_traj: int = Field(ge=1, lt=2**32, description="total number of trajectories")
    seed: int = Field(0, ge=0, lt=2**64, description="seed of the counter-based random numbers")
    tau: float = Field(1.0, gt=0, description="trajectory length")
    n_steps: int = Field(10, ge=1, description="molecular-dynamics steps per trajectory")
    integrator: Literal["leapfrog", "omelyan"] = "leapfrog"
    init: Literal["hot", "cold"] = Field("hot", description="start field: hot (random) or cold (zero)")
    init_scale: float = Field(0.5, gt=0, description="hot start: standard deviation of the field per site "
                              "(0.5 keeps the quartic force moderate at lam ~ 8)")
    dims: list[Annotated[int, Field(ge=1)]] | None = Field(None, min_length=2, max_length=2,
                                   description="process grid [Py, Px] (default: MPI_Dims_create)")
    checkpoint: str | None = Field(None, description="HDF5 checkpoint (rank 0, atomic)")
    checkpoint_every: int = Field(0, ge=0, description="trajectories between checkpoints (0: only at the end)")
    restart: bool = Field(True, description="resume from the checkpoint when that file exists (false: start "
                          "afresh and overwrite it)")
    out: str | None = Field(None, description="results file, HDF5 with provenance (rank 0, atomic)")
    transport: Literal["mpi4jax", "callback"] | None = Field(
        None, description="how halos travel between ranks (default: mpi4jax when installed)")
    halo: Literal["trajectory", "force"] = Field(
        "trajectory", description="halo exchange once per trajectory, of depth n_force + 1, where the blocks are "
        "at least that deep (else per force evaluation), or at every force evaluation")
    watchdog_s: float = Field(300.0, gt=0, description="end the run when a rank makes no progress for this long "
                              "beyond the expected")
    profile: bool = Field(False, description="time the kernel's parts after the run")

    @field_validator("L")
    @classmethod
    def _extents(cls, v: int | list[int]) -> int | list[int]:
        sizes = [v, v] if isinstance(v, int) else v
        if len(sizes) != 2 or min(sizes) < 2 or sizes[0] * sizes[1] >= 2**32:
            raise ValueError("an extent >= 2 or [Ly, Lx], the volume below 2^32")
        return v

    @model_validator(mode="after")
    def _check(self) -> MPIHMCSpec:
        given = [k for k in ("m2", "beta", "kappa") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of m2, beta, kappa (got {', '.join(given) or 'none'})")
        if self.dims is not None and (self.shape[0] % self.dims[0] or self.shape[1] % self.dims[1]):
            raise ValueError(f"dims {self.dims} must divide the lattice {list(self.shape)}")
        return self

    @property
    def shape(self) -> tuple[int, int]:
        """``(Ly, Lx)``."""
        return (self.L, self.L) if isinstance(self.L, int) else (self.L[0], self.L[1])


def error_line(exc: ValidationError) -> str:
    """The first error of a validation as one line ``KEY: what was expected (got VALUE)`` (values cut to 60
    characters); the engine's configs say the same through :func:`olrg_hpc.config.format_validation_error`."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if not key:  # a check across keys: its message names them
        return err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing":
        return f"{key}: required, not given"
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    got = value if isinstance(value, str) else repr(value)  # command-line values are strings: shown as typed
    got = got if len(got) <= 60 else f"{got[:60]}... ({len(got)} characters)"
    return f"{key}: {msg}" + ("" if "got" in msg or err["type"] == "extra_forbidden" else f" (got {got})")


# ------------------------------------------------------------------------------------------- command line
def _kind(annotation: Any) -> tuple[str, tuple[str, ...]]:
    """How a field reads from the command line: ``("flag" | "many" | "one", choices)``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    if args == [bool]:
        return "flag", ()
    if any(typing.get_origin(a) is list for a in args):
        return "many", ()
    if typing.get_origin(args[0]) is Literal:
        return "one", tuple(str(c) for c in typing.get_args(args[0]))
    return "one", ()


def parser() -> argparse.ArgumentParser:
    """The module's command line: one option per field of :class:`MPIHMCSpec` (``n_traj`` -> ``--n-traj``).
    Options hold strings (``None`` when not given); :func:`parse_argv` hands them to the model."""
    ap = argparse.ArgumentParser(prog=PROG, description="Domain-decomposed HMC for 2D phi^4 (one MPI HMC run).")
    for name, field in MPIHMCSpec.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kind, choices = _kind(field.annotation)
        default = "required" if field.is_required() else f"default {field.default}"
        text = f"{field.description or ''} ({', '.join(choices) + '; ' if choices else ''}{default})".lstrip()
        if kind == "flag":
            ap.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            ap.add_argument(flag, dest=name, nargs="+" if kind == "many" else None, default=None, help=text,
                            metavar=name.upper())
    return ap


def parse_argv(argv: Sequence[str] | None = None) -> MPIHMCSpec:
    """The spec of a command line; :class:`~olrg_hpc.errors.UserError` (one line naming the key) when the model
    refuses it. (A malformed command line, e.g. an unknown option, is argparse's usage message and exit 2.)"""
    given = {k: v for k, v in vars(parser().parse_args(argv)).items() if v is not None}
    for k, v in given.items():
        if isinstance(v, list) and len(v) == 1 and int in typing.get_args(MPIHMCSpec.model_fields[k].annotation):
            given[k] = v[0]  # ``--L 16``: the scalar form of ``int | list[int]``
    try:
        return MPIHMCSpec.model_validate(given)
    except ValidationError as exc:
        raise UserError(error_line(exc)) from None


def to_argv(spec: MPIHMCSpec) -> list[str]:
    """The options that :func:`parse_argv` reads back as ``spec`` (fields at their default are left out)."""
    out: list[str] = []
    for name, value in spec.model_dump(exclude_defaults=True).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            out += [flag, *(repr(v) for v in value)]
        else:
            out += [flag, repr(value) if isinstance(value, float) else str(value)]
    return out
