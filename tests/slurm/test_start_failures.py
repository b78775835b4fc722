"""On a real SLURM: worker jobs that cannot start stop the study in one line, Ctrl-C exits 130, the per-run TLS
credentials do not outlive the run (and a rerun replaces a killed run's), ``validate`` asks SLURM, and a profile
value or output path that would inject a line into a job script is refused before anything is submitted."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from chain_study import EXE, BackgroundRun, chain_study

from olrg_hpc import store

pytestmark = pytest.mark.slurm



PROFILE = ("kind: slurm\nqueue: debug\ncores: 1\nmemory: 1GB\nwalltime: '00:10:00'\njobs: 2\ninterface: lo\n"
           "job_name: {name}\ndashboard_address: '127.0.0.1:0'\n")


def _squeue(name: str) -> list[str]:
    out = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True, timeout=30)
    return out.stdout.split()


def _released(name: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while _squeue(name) and time.monotonic() < deadline:
        time.sleep(0.5)
    return _squeue(name) == []


def _setup(tmp_path: Path, extra: str = "", n_times: int = 11,
           sizes: tuple[int, ...] = (6, 8)) -> tuple[str, Path, Path]:
    name = f"olrg-start-{uuid.uuid4().hex[:6]}"
    cfg, prof = tmp_path / "s.yaml", tmp_path / "p.yaml"
    cfg.write_text(chain_study("start-failures", sizes=sizes, methods=("ed",), n_times=n_times))
    prof.write_text(PROFILE.format(name=name) + extra)
    return name, cfg, prof


@pytest.mark.parametrize("fault, extra, says", [
    ("python path", "python: /nonexistent/bin/python\n", "/nonexistent/bin/python: No such file or directory"),
    ("local directory", "local_directory: /proc/olrg-cannot-exist\n", "'/proc/olrg-cannot-exist'"),
])
def test_worker_jobs_that_cannot_start_stop_the_study_with_their_log(tmp_path, fault, extra, says):
    """Without the check dask-jobqueue believes the ended jobs alive and the driver waits forever."""
    name, cfg, prof = _setup(tmp_path, extra)
    t0 = time.monotonic()
    out = subprocess.run([*EXE, "run", str(cfg), "--cluster", str(prof), "--output", "st", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stderr
    last = out.stderr.splitlines()[-1]
    assert last.startswith("olrg-hpc: error: worker jobs cannot start: ") and "max_failed_starts: 3" in last
    assert says in last and f"log st/logs/{name}-" in last
    assert "Traceback" not in out.stderr
    assert _released(name), "worker jobs left behind"
    assert not (tmp_path / "st" / ".credentials").exists()
    print(f"{fault}: stopped after {took:.1f} s")


def test_ctrl_c_on_a_slurm_profile_exits_130_and_releases_the_jobs(tmp_path):
    """dask-jobqueue's SIGINT handler would exit 0 with no message."""
    name, cfg, prof = _setup(tmp_path, n_times=401, sizes=(10, 11, 12))
    run = BackgroundRun(cfg, prof, tmp_path)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not store.Shards(tmp_path / "st").keys():
        assert run.proc.poll() is None, "".join(run.err_lines)
        time.sleep(0.2)
    _, err, took = run.interrupt()
    assert run.proc.returncode == 130, err
    assert err.splitlines()[-1] == "olrg-hpc: interrupted; finished tasks are kept in their shards, rerun to resume"
    assert "Traceback" not in err
    assert _released(name)
    print(f"Ctrl-C: exit 130 after {took:.1f} s")


def _credentials(study: Path) -> dict[str, str]:
    cred = study / ".credentials"
    return {p.name: p.read_text() for p in cred.iterdir()} if cred.exists() else {}


def test_credentials_of_a_killed_run_are_replaced_and_a_finished_run_leaves_none(tmp_path):
    name, cfg, prof = _setup(tmp_path, n_times=401, sizes=(10, 11, 12))
    cmd = [*EXE, "run", str(cfg), "--cluster", str(prof), "--output", "st", "--no-progress", "--no-report"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    study = tmp_path / "st"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not store.Shards(study).keys():
        assert proc.poll() is None
        time.sleep(0.2)
    old = _credentials(study)
    assert any("PRIVATE KEY" in v for v in old.values())
    assert oct((study / ".credentials").stat().st_mode & 0o777) == "0o700"
    os.killpg(proc.pid, signal.SIGKILL)  # no cleanup possible: the files stay ...
    proc.wait(timeout=30)
    assert _credentials(study) == old
    for job in _squeue(name):  # ... the orphaned worker jobs lose their scheduler; do not wait for that
        subprocess.run(["scancel", job], timeout=30)
    rerun = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    new: dict[str, str] = old
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and rerun.poll() is None and not (
            set(new).isdisjoint(old) and any("PRIVATE KEY" in v for v in new.values())):
        new = _credentials(study)
        time.sleep(0.1)
    assert set(new).isdisjoint(old) and set(new.values()).isdisjoint(old.values())  # the old key is gone
    assert any("PRIVATE KEY" in v for v in new.values())  # and a new one made for the rerun
    _, err = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, err
    assert not (study / ".credentials").exists()
    assert _released(name)


def test_validate_asks_slurm_about_partition_and_worker_job(tmp_path):
    _, cfg, prof = _setup(tmp_path)
    ok = subprocess.run([*EXE, "validate", str(cfg), "--cluster", str(prof)], capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0 and "sbatch --test-only" in ok.stdout, ok.stderr
    for extra, says in (("queue: nosuch\n", "partition 'nosuch' does not exist"),
                        ("gpus_per_job: 9\n", "sbatch refuses the profile's worker job: Invalid generic resource")):
        prof.write_text(prof.read_text().replace("queue: debug\n", "") + extra)
        bad = subprocess.run([*EXE, "validate", str(cfg), "--cluster", str(prof)], capture_output=True, text=True,
                             timeout=120)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and says in bad.stderr, bad.stderr
        prof.write_text(prof.read_text().replace(extra, "queue: debug\n"))


@pytest.mark.parametrize("where", ["account", "output"])
def test_an_injected_line_never_reaches_sbatch(tmp_path, where):
    """A newline in a profile value or ';' in the study's output path: refused, nothing submitted, no file. (Without
    the checks, the account's second line ran in the submitted driver job and created the file; the output path
    broke the workers' command line, and the run waited for workers that never came.)"""
    name, cfg, prof = _setup(tmp_path)
    pwned = tmp_path / "pwned"
    if where == "account":
        prof.write_text(prof.read_text() + f'account: "proj\\ntouch {pwned}"\n')
    else:
        cfg.write_text(cfg.read_text().replace("seed: 7", f"seed: 7\noutput: 'st;touch {pwned}'"))
    for cmd in (["submit", str(cfg), "--cluster", str(prof)], ["run", str(cfg), "--cluster", str(prof)]):
        out = subprocess.run([*EXE, *cmd], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert _released("olrg-start-failures", timeout=120)  # a driver job, had one been submitted, has run
    assert not pwned.exists() and _squeue(name) == []
