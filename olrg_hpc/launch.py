"""Tasks that span processes: one multi-process JAX program per task, started by the worker that holds the task.

A task declares ``Resources(processes=P, devices=d)`` (:class:`olrg_hpc.tasks.Resources`). The worker that takes it
calls :func:`run_launched`, which starts ``python -m olrg_hpc.launch WORK`` as P processes and waits for them:

- inside a SLURM worker job (the job exports ``OLRG_HPC_LAUNCH=srun``): one ``srun --ntasks=P`` step of that job,
  so the processes use the job's own allocation (its ``ntasks``, ``nodes``, GPUs: ``--gpus-per-task=d`` when the
  job has GPUs); anywhere else, P processes on the worker's machine;
- every process emulates ``d`` CPU devices when there is no accelerator
  (``--xla_force_host_platform_device_count``), joins ``jax.distributed`` (gloo collectives on CPU; process 0 runs
  the coordinator and publishes its address in ``WORK/coordinator``, the route to the worker's host), and calls the
  task's function (:func:`olrg_hpc.tasks.call`: the same seed, the same dependencies read from their shards);
- process 0 stores the result (:func:`olrg_hpc.tasks.store_result`: a compact shard handed back to the worker,
  or an HDF5 shard written atomically; checksummed; attribute ``launch`` saying ``P processes x d devices``); the
  others write nothing.

A process that fails writes its error into ``WORK/error-I.json`` and exits 1; the others are stopped
(``--kill-on-bad-exit``, or by the worker) and the task fails with one line, ``process I/P: TYPE: message``, the
process's traceback attached to the exception (the run's log shows it). ``WORK`` (``STUDY_DIR/.launch/KEY-TOKEN``,
with the processes' output in ``out-I.log``) is removed after a success. The processes die with the task's worker:
a SLURM job's steps end with the job (a study that ends, Ctrl-C, ``scancel``); local processes are killed by the
kernel when the worker process exits (``PR_SET_PDEATHSIG``). A task whose worker died is run again by Dask from the
start, as any task.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

LAUNCH_ENV = "OLRG_HPC_LAUNCH"
GPUS_ENV = "OLRG_HPC_GPUS"
_ID_ENV, _COUNT_ENV, _PARENT_ENV, _REACH_ENV = ("OLRG_HPC_PROCESS_ID", "OLRG_HPC_NUM_PROCESSES",
                                                "OLRG_HPC_PARENT_PID", "OLRG_HPC_REACH")
LAUNCH_DIR = ".launch"
#: seconds a process waits for process 0 to publish the coordinator's address
RENDEZVOUS_S = 180.0
_COUNT_FLAG = re.compile(r"--xla_force_host_platform_device_count=\S*")


class LaunchedTaskError(RuntimeError):
    """A process of a multi-process task failed; the message names it and its error in one line."""


def xla_flags(flags: str, devices: int | None) -> str:
    """``flags`` with the emulated CPU device count set to ``devices`` (unchanged for None)."""
    if devices is None:
        return flags
    return " ".join([*_COUNT_FLAG.sub("", flags).split(), f"--xla_force_host_platform_device_count={devices}"])


def _reach() -> str:
    """An address of the worker's host, for process 0 to find its own route to (the worker's Dask address)."""
    try:
        from distributed import get_worker

        host = get_worker().address.rsplit("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
        return host or "127.0.0.1"
    except (ImportError, ValueError, AttributeError):
        return "127.0.0.1"


def _command(work: Path, processes: int, devices: int | None) -> tuple[list[list[str]], list[dict[str, str]]]:
    """The command and environment of each process started here (one ``srun`` in a SLURM job)."""
    env = {k: v for k, v in os.environ.items() if k not in (_ID_ENV, _COUNT_ENV, _PARENT_ENV)}
    env["XLA_FLAGS"] = xla_flags(env.get("XLA_FLAGS", ""), devices)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the task's module, as the worker imports it
    env[_REACH_ENV] = _reach()
    cmd = [sys.executable, "-m", "olrg_hpc.launch", str(work)]
    if os.environ.get(LAUNCH_ENV) == "srun":
        srun = ["srun", f"--ntasks={processes}", "--kill-on-bad-exit=1", "--overlap", f"--output={work}/out-%t.log",
                f"--job-name=olrg-task-{work.name[:16]}"]
        if os.environ.get(GPUS_ENV, "0") not in ("", "0"):
            srun.append(f"--gpus-per-task={devices or 1}")
        return [srun + cmd], [env]
    envs = [{**env, _ID_ENV: str(i), _COUNT_ENV: str(processes), _PARENT_ENV: str(os.getpid())}
            for i in range(processes)]
    return [cmd] * processes, envs


def run_launched(spec: Any, inline: dict[str, bytes] | None = None) -> dict[str, Any]:
    """Run ``spec`` (a :class:`~olrg_hpc.tasks.TaskSpec` whose resources ask for processes; ``inline``: compact
    shards of its dependencies, :func:`olrg_hpc.tasks.call`) as one multi-process program and wait for it (module
    docstring); returns what :func:`olrg_hpc.tasks.store_result` returned in process 0."""
    from olrg_hpc.store import write_bytes_atomic

    res = spec.resources
    work = Path(spec.shard).parent.parent / LAUNCH_DIR / f"{spec.key}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    write_bytes_atomic(work / "spec.pkl", pickle.dumps((spec, inline or {})))
    cmds, envs = _command(work, res.processes, res.devices)
    procs = []
    for i, (cmd, env) in enumerate(zip(cmds, envs, strict=True)):
        log = open(work / f"out-{i}.log", "wb") if cmd[0] != "srun" else open(work / "srun.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      cwd=os.getcwd()))
        log.close()
    try:
        while any(p.poll() is None for p in procs):
            if any(p.returncode not in (None, 0) for p in procs):  # one failed: the others would wait forever
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait()
    result = work / "result.pkl"
    if all(p.returncode == 0 for p in procs) and result.exists():
        out = pickle.loads(result.read_bytes())
        shutil.rmtree(work, ignore_errors=True)
        return out
    raise _failure(work, spec, [p.returncode for p in procs])


def _failure(work: Path, spec: Any, codes: list[int | None]) -> LaunchedTaskError:
    """The one-line error of a failed launch: the first process's own error, else the end of its output."""
    n = spec.resources.processes
    for i in range(n):
        f = work / f"error-{i}.json"
        if f.exists():
            err = json.loads(f.read_text())
            exc = LaunchedTaskError(f"process {i}/{n}: {err['type']}: {err['message']}")
            exc.add_note(f"traceback of process {i}/{n} (its output: {work}):\n{err['traceback']}")
            return exc
    tail = ""
    for log in sorted(work.glob("*.log")):
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            tail = f"; {log.name}: {' | '.join(lines[-3:])[-300:]}"
            break
    return LaunchedTaskError(f"{n} processes ended with exit codes {codes} and no error of their own{tail}")


# ------------------------------------------------------------------------------------------------ in each process


def _process() -> tuple[int, int]:
    """(index, count) of this process: from srun's environment, or from the worker that started it here."""
    if _ID_ENV in os.environ:
        return int(os.environ[_ID_ENV]), int(os.environ[_COUNT_ENV])
    count = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS", "1")
    return int(os.environ.get("SLURM_PROCID", "0")), int(count)


def _die_with_parent() -> None:
    """Let the kernel kill this process when the worker that started it exits (local launches)."""
    parent = int(os.environ.get(_PARENT_ENV, "0"))
    if not parent:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it exited before the line above
        os._exit(1)


def _own_address() -> str:
    """This host's address on the route to the worker's host (which every process of the program can reach)."""
    target = os.environ.get(_REACH_ENV, "127.0.0.1")
    if target.startswith("127."):
        return "127.0.0.1"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((target, 9))
            return s.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())


def coordinator(work: Path, index: int, timeout: float = RENDEZVOUS_S) -> str:
    """The ``host:port`` of ``jax.distributed``'s coordinator: chosen and published by process 0, read by the
    others from ``WORK/coordinator``."""
    from olrg_hpc.store import write_bytes_atomic

    path = work / "coordinator"
    if index == 0:
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        address = f"{_own_address()}:{port}"
        write_bytes_atomic(path, address.encode())
        return address
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"process 0 did not publish the coordinator's address in {timeout:.0f} s")
        time.sleep(0.05)
    return path.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    """One process of a multi-process task: ``python -m olrg_hpc.launch WORK``."""
    _die_with_parent()
    work = Path((argv if argv is not None else sys.argv[1:])[0])
    index, count = _process()
    try:
        from olrg_hpc.sharding import init_distributed
        from olrg_hpc.store import write_bytes_atomic
        from olrg_hpc.tasks import call, store_result

        # before the task's modules are imported (unpickling the spec): nothing may touch a device before this
        init_distributed(coordinator(work, index) if count > 1 else None, count, index)
        import jax

        spec, inline = pickle.loads((work / "spec.pkl").read_bytes())

        result, started, compute_s, cpu_s = call(spec, inline)
        if index == 0:
            layout = f"{count} processes x {jax.local_device_count()} {jax.devices()[0].platform} devices"
            out = store_result(spec, result, started, compute_s, cpu_s, launch=layout)
            write_bytes_atomic(work / "result.pkl", pickle.dumps(out))
        return 0
    except BaseException as exc:  # noqa: BLE001 - reported to the worker in full, then this process ends
        err = {"type": type(exc).__name__, "message": " ".join(str(exc).split())[:300],
               "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))}
        (work / f"error-{index}.json").write_text(json.dumps(err))
        return 1


if __name__ == "__main__":
    sys.exit(main())
