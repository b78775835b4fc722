"""The ``olrg-hpc`` command line.

Exit codes: 0 success; 1 some tasks failed (each named with its error in one line; the tracebacks are in
``STUDY_DIR/run.log``); 2 bad input (one line naming the file, key, value or command at fault, cut to
:data:`MAX_LINE` characters); 130 interrupted (finished tasks are kept: rerun to resume).

``run`` holds the study folder's lock from before it writes anything until the report is written, and
logs everything Dask says (and every failed task's traceback) into ``STUDY_DIR/run.log`` instead of the
terminal; ``-v`` shows Dask's messages on the terminal as well.

The command line is the one module of ``olrg_hpc`` that knows the study workflows: it hands their registry
(:func:`workflows.get_workflow`) to the engine (:func:`olrg_hpc.config.load_study`,
:func:`olrg_hpc.report.write_report`, :func:`olrg_hpc.submit.prepare`), which imports no workflow itself.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from olrg_hpc import __version__
from olrg_hpc.errors import UserError
from workflows import get_workflow

#: longest line an error prints (a value in it is already cut; this bounds paths and the rest)
MAX_LINE = 1000
#: loggers whose records go to STUDY_DIR/run.log during a run
LOGGERS = ("olrg_hpc", "distributed", "dask_jobqueue", "bokeh", "tornado", "asyncio", "py.warnings")
_LOG: list[Path] = []  # the run's log file while a run is on: where the interpreter's last words go after Ctrl-C

DESCRIPTION = """\
olrg-hpc runs renormalization-group-inspired machine-learning studies (OLRG for spin chains, trivializing
flows for phi^4) as Dask task graphs, on this machine or on a SLURM cluster, with results in HDF5.
"""

EPILOG = """\
examples:
  olrg-hpc run configs/quickstart.yaml                 run a study on a LocalCluster
  olrg-hpc run configs/chain_sweep.yaml --cluster slurm-dev
  olrg-hpc validate configs/chain_sweep.yaml --cluster slurm-dev
  olrg-hpc status studies/chain-sweep                  what is done, missing, failed
  olrg-hpc report studies/chain-sweep                  figures and summary table
"""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _study_dir(cfg, output: str | None) -> Path:
    return Path(output or cfg.output or Path("studies") / cfg.study)


def _build(cfg, params) -> list:
    """The study's task graph, bounded (:func:`olrg_hpc.tasks.bounded_graph`) and checked."""
    from olrg_hpc.runner import topological_order
    from olrg_hpc.tasks import bounded_graph

    with bounded_graph():
        return topological_order(get_workflow(cfg.workflow).build(params))


def _check_output(profile, study_dir: Path, label: str) -> None:
    """A study folder the profile's kind cannot use (a SLURM job script names it: a plain path) is refused."""
    from olrg_hpc.cluster import kind_of

    kind_of(profile).check_output(profile, study_dir, label)


def cmd_validate(args: argparse.Namespace) -> int:
    from olrg_hpc.cluster import kind_of
    from olrg_hpc.config import load_hmc_config, load_profile, load_study, read_yaml

    if read_yaml(args.config).get("program") == "mpi_hmc":
        hcfg = load_hmc_config(args.config)
        print(f"{args.config}: ok (MPI HMC program, L = {hcfg.L}, {hcfg.n_traj} trajectories)")
        return 0
    cfg, params = load_study(args.config, get_workflow)
    tasks = _build(cfg, params)
    path, profile = load_profile(args.cluster)
    _check_output(profile, _study_dir(cfg, None), f"{args.config}: output")
    checked = kind_of(profile).check(profile)
    checked = f"; {checked}" if checked else ""
    print(f"{args.config}: ok (workflow {cfg.workflow}, {len(tasks)} tasks); "
          f"cluster profile {path}: ok (kind {profile.kind}{checked})")
    return 0


@contextlib.contextmanager
def _study_log(study_dir: Path, verbose: bool) -> Iterator[Path]:
    """Records of :data:`LOGGERS` (Dask's messages, failed tasks' tracebacks, warnings) into
    ``STUDY_DIR/run.log`` for the duration, and not onto the terminal unless ``verbose``."""
    import distributed  # noqa: F401 - configures its loggers when first imported: before they are redirected

    from olrg_hpc import store

    path = Path(study_dir) / store.LOG
    handlers: list[logging.Handler] = []

    def handler() -> logging.Handler:
        # one per logger: Dask's clusters set the level of the handlers of its loggers (silence_logs), which
        # must not silence the others
        h = logging.FileHandler(path, encoding="utf-8")
        h.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        handlers.append(h)
        return h

    saved = {}
    logging.captureWarnings(True)
    # Dask gives some child loggers (distributed.client, ...) handlers of their own: those are redirected too
    names = set(LOGGERS) | {n for n, lg in logging.root.manager.loggerDict.items()
                            if n.startswith(tuple(f"{p}." for p in LOGGERS)) and getattr(lg, "handlers", None)}
    for name in names:
        lg = logging.getLogger(name)
        saved[name] = (lg.handlers[:], lg.level, lg.propagate)
        lg.handlers = [handler(), *(lg.handlers if verbose else [])]
        if name in LOGGERS:
            lg.setLevel(logging.INFO)
        lg.propagate = False
    logging.getLogger("olrg_hpc").info("olrg-hpc %s: %s", __version__, " ".join(sys.argv))
    _LOG.append(path)
    # after an error or Ctrl-C the records keep going to the log: Dask's threads may go on closing the cluster,
    # and logging, until the process exits
    yield path
    for name, (handlers, level, propagate) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers, lg.propagate = handlers, propagate
        lg.setLevel(level)
    logging.captureWarnings(False)
    for h in handlers:
        h.close()


def cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from olrg_hpc import store
    from olrg_hpc.cluster import health_check, open_client, pools_of
    from olrg_hpc.config import load_profile, load_study
    from olrg_hpc.devices import watch_worker_devices
    from olrg_hpc.runner import run_tasks

    cfg, params = load_study(args.config, get_workflow)
    _, profile = load_profile(args.cluster)
    tasks = _build(cfg, params)
    study_dir = _study_dir(cfg, args.output)
    _check_output(profile, study_dir, "--output" if args.output else f"{args.config}: output")
    store.check_writable(study_dir)
    with store.study_lock(study_dir):
        store.check_folder(study_dir, cfg.study)
        resolved = cfg.model_dump() | {"params": params.model_dump()}
        config_text = yaml.safe_dump(resolved, sort_keys=False)
        (study_dir / store.CONFIG).write_text(config_text)
        _say(f"study {cfg.study}: workflow {cfg.workflow}, {len(tasks)} tasks -> {study_dir}")
        with _study_log(study_dir, args.verbose) as log_path:
            with open_client(profile, study_dir=study_dir, echo=_say, log_file=log_path) as client:
                watch_worker_devices(client, profile, _say)  # a GPU profile whose workers see only CPUs: one line
                summary = run_tasks(tasks, study_dir, client, study_seed=cfg.seed, retries=cfg.retries,
                                    study_attrs={"study": cfg.study, "workflow": cfg.workflow,
                                                 "study_config": config_text},
                                    progress=not args.no_progress, check=health_check(client),
                                    pools=pools_of(client))
        for line in summary.lines():
            _say(line)
        if not summary.ok:
            _say(f"{len(summary.failed)} task(s) failed (tracebacks: {log_path}); fix and rerun to compute only "
                 "what is missing")
            return 1
        if not args.no_report:
            _print_report(study_dir)
    return 0


def _print_report(study_dir: Path) -> None:
    from olrg_hpc.report import write_report

    out_dir, lines = write_report(study_dir, get_workflow)
    for line in lines:
        print(line)
    _say(f"report: {out_dir}")


def cmd_status(args: argparse.Namespace) -> int:
    from olrg_hpc.runner import pool_line, study_status

    pools: dict[str, list[str]] = {}
    st = study_status(Path(args.study_dir), pools)
    total = sum(len(v) for v in st.values())
    print(f"{args.study_dir}: {total} tasks: {len(st['done'])} done, {len(st['missing'])} missing, "
          f"{len(st['corrupt'])} partial or corrupt, {len(st['failed'])} failed")
    if pools:
        print("  pools: " + "; ".join(pool_line(p or "-", n) for p, n in sorted(pools.items())))
    for name in st["failed"]:
        print(f"  failed  {name}")
    if args.verbose:
        pool_of = {n: p for p, names in pools.items() for n in names}
        for name in st["done"]:
            print(f"  done    {name}  (pool {pool_of.get(name) or '-'})")
        for state in ("missing", "corrupt"):
            for name in st[state]:
                print(f"  {state:7s} {name}")
    return 0 if len(st["done"]) == total else 1


def _rank() -> int:
    """This process's MPI rank from the launcher's environment (0 outside MPI)."""
    import os

    for var in ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def cmd_hmc(args: argparse.Namespace) -> int:
    import numpy as np

    from olrg_hpc.config import load_hmc_config

    cfg = load_hmc_config(args.config)
    try:
        from mpi4py import MPI
    except ImportError:
        raise UserError("mpi4py: not installed (pip install -e '.[mpi]')") from None
    from olrg_hpc.lattice.mpi_hmc import run_mpi_hmc

    comm = MPI.COMM_WORLD
    for path in (cfg.out, cfg.checkpoint):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    res = run_mpi_hmc(cfg.spec(), comm)
    if comm.Get_rank() == 0:
        w = np.exp(-np.asarray(res["dH"]))
        t = res["timings"]
        w_err = w.std() / max(1, w.size) ** 0.5
        print(f"{args.config}: {res['size']} ranks as {list(res['dims'])}, {res['trajectory']} trajectories, "
              f"acceptance {res['acceptance']:.3f}, <exp(-dH)> = {w.mean():.4f} +- {w_err:.4f}")
        print(f"time {t['total_s']:.2f} s (trajectories {t['run_s']:.2f} s, compilation {t['compile_s']:.2f} s; "
              f"halos by {res['transport']} on {res['device']}); results: {cfg.out}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from olrg_hpc.submit import prepare, sbatch

    sub = prepare(args.config, args.cluster, get_workflow, check=not args.dry_run)
    if args.dry_run:
        print(sub.script, end="")
        return 0
    sub = sbatch(sub)
    print(f"submitted job {sub.job_id}")
    print(f"  script: {sub.script_path}")
    print(f"  log:    {str(sub.log).replace('%j', sub.job_id or '%j')}")
    if sub.study_dir:
        print(f"  study:  {sub.study_dir}  (olrg-hpc status {sub.study_dir})")
        print("  dashboard: printed in the log once the driver starts (an ssh -N -L tunnel command)")
    print(f"  follow: squeue -j {sub.job_id}; cancel: scancel {sub.job_id}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    _print_report(Path(args.study_dir))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="olrg-hpc", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"olrg-hpc {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="show Dask's own log messages")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = sub.add_parser("run", help="run a study (resumes: tasks with a valid shard are skipped)",
                         description="Validate CONFIG and the cluster profile, start the cluster, run the study's "
                         "task graph with a progress bar, gather the study file and write the report. A rerun "
                         "skips tasks whose shard is valid and recomputes missing or corrupt ones.")
    run.add_argument("config", help="study YAML (e.g. configs/quickstart.yaml)")
    run.add_argument("--cluster", default="local", metavar="PROFILE",
                     help="cluster profile: a name in configs/clusters/ or a YAML path (default: local)")
    run.add_argument("--output", metavar="DIR", help="study folder (default: the config's output, or studies/<study>)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="check a study config and a cluster profile without running anything",
                         description="Validate CONFIG (and its workflow parameters) and the cluster profile; "
                         "build the task graph to check it. Exit 2 with one line naming the file and key at fault.")
    val.add_argument("config")
    val.add_argument("--cluster", default="local", metavar="PROFILE")
    val.set_defaults(func=cmd_validate)

    st = sub.add_parser("status", help="tasks done / missing / failed in a study folder",
                        description="Count the tasks of STUDY_DIR's manifest by state. Exit 0 when all are done.")
    st.add_argument("study_dir")
    st.set_defaults(func=cmd_status)

    rep = sub.add_parser("report", help="figures and a summary table from a study file",
                         description="Read STUDY_DIR/study.h5 and write figures (PNG), a summary table and an "
                         "HTML page into STUDY_DIR/report/.")
    rep.add_argument("study_dir")
    rep.set_defaults(func=cmd_report)
    sm = sub.add_parser("submit", help="submit a study (or an MPI HMC config) as a SLURM job and walk away",
                        description="Render a job script from slurm/driver.sbatch (study configs: the driver runs "
                        "the Dask workflow inside the allocation, workers are jobs of the profile) or "
                        "slurm/mpi_hmc.sbatch (configs with program: mpi_hmc) and submit it with sbatch. Prints the "
                        "job id, the log, the study folder and how to follow it.")
    sm.add_argument("config")
    sm.add_argument("--cluster", required=True, metavar="PROFILE", help="a slurm cluster profile")
    sm.add_argument("--dry-run", action="store_true", help="print the job script, submit nothing")
    sm.set_defaults(func=cmd_submit)

    hmc = sub.add_parser("hmc", help="run the MPI HMC baseline (launch with mpiexec -n N or srun)",
                         description="Run one domain-decomposed HMC chain of 2D phi^4 described by CONFIG (see "
                         "configs/hmc_mpi.yaml) on all ranks of MPI_COMM_WORLD: mpiexec -n 4 olrg-hpc hmc CONFIG. "
                         "Resumes from the config's checkpoint. The chain does not depend on the number of ranks.")
    hmc.add_argument("config")
    hmc.set_defaults(func=cmd_hmc)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; ``argv=None`` means this process is the program (its own sys.argv)."""
    try:
        code = _main(argv)
    finally:
        if argv is None:  # the command is done: a Ctrl-C while the interpreter exits only ends it sooner
            import os
            import signal

            signal.signal(signal.SIGINT, lambda *_: os._exit(130))
    if code == 130 and argv is None:
        _silence_teardown()
    return code


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        for name in ("distributed", "dask_jobqueue", "bokeh", "tornado"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return args.func(args)
    except UserError as exc:
        if _rank() == 0:  # under MPI every rank fails alike: say it once
            line = " ".join(str(exc).split())
            line = line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."
            print(f"olrg-hpc: error: {line}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("olrg-hpc: interrupted; finished tasks are kept in their shards, rerun to resume", file=sys.stderr,
              flush=True)
        return 130


def _silence_teardown() -> None:
    """Standard error into the run's log (or nowhere) for the rest of the process: what half-started or
    half-stopped Dask objects print while the interpreter exits is not for the terminal."""
    import os

    try:
        fd = os.open(_LOG[-1] if _LOG else os.devnull, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 2)
    os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
