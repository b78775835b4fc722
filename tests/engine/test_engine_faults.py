"""Faults a user (or an adversary) can cause, end to end through the command line on a LocalCluster.

Each test injects one fault and checks that it surfaces as it should, never silently: a shard or a study file
edited in place (counted corrupt by ``status``, recomputed by a rerun, refused by ``report``); two runs in one
folder (the second is refused in one line naming the first's host and pid); ``--output`` into another study, a
file, or a folder the user cannot write (one line, exit 2, nothing written); a failing task (one line; its
traceback in ``STUDY_DIR/run.log``); Ctrl-C early and late (exit 130, one line, no traceback on the terminal).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from _edit import edit_number
from chain_study import EXE, BackgroundRun, chain_study, run_cli

from olrg_hpc import store
from olrg_hpc.cli import main


def _files(tmp: Path, name: str = "faults", n_times: int = 21, sizes: tuple[int, ...] = (6, 8)) -> tuple[Path, Path]:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(chain_study(name, n_times=n_times, sizes=sizes))
    prof = tmp / "local.yaml"
    prof.write_text("kind: local\nn_workers: 2\nthreads_per_worker: 1\ndashboard_address: '127.0.0.1:0'\n")
    return cfg, prof




@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished study (13 tasks); tests copy it before they damage it."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg, prof = _files(tmp)
    out = run_cli(["run", str(cfg), "--cluster", str(prof), "--output", "st", "--no-report"], tmp)
    assert out.returncode == 0, out.stderr
    return tmp


def _copy(finished: Path, tmp: Path) -> Path:
    shutil.copytree(finished, tmp / "w")
    return tmp / "w"


def test_a_shard_edited_in_place_is_corrupt_for_status_and_recomputed(finished, tmp_path):
    work = _copy(finished, tmp_path)
    edit_number(work / "st")  # still a valid file, still 'complete', same key: only a number changed
    st = run_cli(["status", "st"], work)
    assert st.returncode == 1 and "12 done, 0 missing, 1 partial or corrupt" in st.stdout, st.stdout
    cfg, prof = work / "faults.yaml", work / "local.yaml"
    again = run_cli(["run", str(cfg), "--cluster", str(prof), "--output", "st", "--no-report"], work)
    assert again.returncode == 0 and "13 tasks: 12 skipped (valid shard), 1 to run (0 missing, 1 partial or corrupt)" \
        in again.stderr, again.stderr
    a, b = store.datasets(work / "st/study.h5"), store.datasets(finished / "st/study.h5")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_report_refuses_a_study_file_edited_in_place(finished, tmp_path):
    work = _copy(finished, tmp_path)
    with h5py.File(work / "st/study.h5", "a") as f:
        f["tasks/collect-tfim/ed_vs_ff_max_diff"][0] = 0.0  # a plausible value: no check of ranges would see it
    rep = run_cli(["report", "st"], work)
    assert rep.returncode == 2 and rep.stderr.count("\n") == 1, rep.stderr
    assert "corrupt" in rep.stderr and "tasks/collect-tfim/ed_vs_ff_max_diff: checksum mismatch" in rep.stderr
    assert not (work / "st" / "report").exists()


def test_a_second_run_in_the_same_folder_is_refused_and_the_first_finishes(tmp_path):
    cfg, prof = _files(tmp_path, n_times=201, sizes=(9, 10, 11, 12))
    first = subprocess.Popen([*EXE, "run", str(cfg), "--cluster", str(prof), "--output", "st", "--no-report",
                              "--no-progress"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "st" / store.LOCK
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (lock.exists() and lock.read_text()):
        assert first.poll() is None, first.communicate()[1]
        time.sleep(0.05)
    t0 = time.monotonic()
    second = run_cli(["run", str(cfg), "--cluster", str(prof), "--output", "st", "--no-report"], tmp_path)
    refused_after = time.monotonic() - t0
    assert first.poll() is None, "the first run ended before the second one tried: make it longer"
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert f"in use by another olrg-hpc run, pid {first.pid} on {socket.gethostname()}" in second.stderr
    rep = run_cli(["report", "st"], tmp_path)
    assert rep.returncode == 2 and f"pid {first.pid}" in rep.stderr
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert "25 computed, 0 failed" in err
    store.verify_study_file(tmp_path / "st" / "study.h5")
    print(f"second run refused {refused_after:.1f} s after it started (interpreter start and imports included)")

    other, _ = _files(tmp_path, name="another-study")
    out = run_cli(["run", str(other), "--cluster", str(prof), "--output", "st"], tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "holds another study ('faults'" in out.stderr
    assert "study: faults" in (tmp_path / "st" / "config.yaml").read_text()


@pytest.mark.parametrize("case", ["a file", "under a file"])
def test_output_that_cannot_be_a_folder_is_one_line(tmp_path, case):
    cfg, prof = _files(tmp_path)
    (tmp_path / "taken").write_text("my notes\n")
    output = "taken" if case == "a file" else "taken/study"
    out = run_cli(["run", str(cfg), "--cluster", str(prof), "--output", output], tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
    assert "taken" in out.stderr and ("not a folder" in out.stderr or "is a file" in out.stderr)
    assert (tmp_path / "taken").read_text() == "my notes\n"


def _as_nobody() -> list[str] | None:
    """A command prefix that runs this checkout's CLI as user 'nobody' (system Python 3.11 with this venv's
    packages), or None where that is impossible (not root, no runuser, no such Python)."""
    py = Path("/usr/bin/python3.11")
    if os.geteuid() != 0 or shutil.which("runuser") is None or not py.exists() or \
            sys.version_info[:2] != (3, 11):
        return None
    site = next(p for p in sys.path if p.endswith("site-packages"))
    boot = f"import site, sys; site.addsitedir({site!r}); from olrg_hpc.cli import main; sys.exit(main())"
    check = subprocess.run(["runuser", "-u", "nobody", "--", str(py), "-c", boot.replace("sys.exit(main())", "0")],
                           capture_output=True, timeout=120)
    return ["runuser", "-u", "nobody", "--", str(py), "-c", boot] if check.returncode == 0 else None


def test_an_unwritable_study_folder_is_one_line_up_front(tmp_path):
    """As another user (nobody) into a folder owned by root: refused before any work, nothing written."""
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("needs root, runuser and /usr/bin/python3.11 to run the CLI as another user")
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="olrg-unwritable-", dir="/tmp"))  # pytest's tmp_path is root's only
    try:
        cfg, prof = _files(home)
        os.chmod(home, 0o755)
        for p in (cfg, prof):
            os.chmod(p, 0o644)
        (home / "st").mkdir(mode=0o755)
        t0 = time.monotonic()
        out = subprocess.run([*prefix, "run", str(cfg), "--cluster", str(prof), "--output", "st"], cwd=home,
                             capture_output=True, text=True, timeout=300)
        took = time.monotonic() - t0
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr, out.stderr
        assert "st: cannot write there (Permission denied)" in out.stderr
        assert list((home / "st").iterdir()) == []
        print(f"refused after {took:.1f} s")
    finally:
        shutil.rmtree(home)


def boom(x: float) -> dict:
    raise ValueError(f"no convergence at x = {x}\n(second line of the message)")


def test_task_failures_are_one_line_each_with_the_traceback_in_run_log(tmp_path, capfd, monkeypatch):
    """Two tasks fail: each is one line on the terminal with its name and error; the tracebacks are in run.log."""
    import workflows.chain_sweep as chain_sweep
    from olrg_hpc.tasks import Task

    real = chain_sweep.build
    monkeypatch.setattr(chain_sweep, "build", lambda p: [*real(p), Task("boom-1", boom, {"x": 1.0}),
                                                         Task("boom-2", boom, {"x": 2.0})])
    cfg, _ = _files(tmp_path)
    prof = tmp_path / "threads.yaml"  # worker threads in this process, so that the patched graph reaches them
    prof.write_text("kind: local\nn_workers: 1\nthreads_per_worker: 2\nprocesses: false\n"
                    "dashboard_address: '127.0.0.1:0'\n")
    code = main(["run", str(cfg), "--cluster", str(prof), "--output", str(tmp_path / "st"), "--no-progress"])
    out, err = capfd.readouterr()
    assert code == 1
    failed = [ln for ln in err.splitlines() if ln.startswith("FAILED ")]
    assert failed == ["FAILED boom-1: ValueError: no convergence at x = 1.0 (second line of the message)",
                      "FAILED boom-2: ValueError: no convergence at x = 2.0 (second line of the message)"]
    assert "Traceback" not in out + err and "run.log" in err
    log = (tmp_path / "st" / "run.log").read_text()
    assert log.count("Traceback (most recent call last)") >= 2 and "task boom-2 failed" in log
    assert 'raise ValueError(f"no convergence' in log


@pytest.mark.parametrize("when", ["starting", "running"])
def test_ctrl_c_exits_130_with_one_line_and_no_tracebacks(tmp_path, when):
    """SIGINT to the whole process group, as a terminal sends it: the driver and its worker processes."""
    cfg, prof = _files(tmp_path, n_times=201, sizes=(9, 10, 11, 12))
    run = BackgroundRun(cfg, prof, tmp_path)
    proc = run.proc
    deadline = time.monotonic() + 180
    if when == "starting":  # the cluster's worker processes exist and are importing their modules
        import psutil

        driver = psutil.Process(proc.pid)
        while time.monotonic() < deadline and not any(
                "spawn_main" in " ".join(c.cmdline()) for c in driver.children(recursive=True) if c.is_running()):
            time.sleep(0.02)
        time.sleep(0.3)
    else:
        while time.monotonic() < deadline and len(store.Shards(tmp_path / "st").keys()) < 2:
            time.sleep(0.05)
    assert proc.poll() is None, "the run ended before Ctrl-C"
    out, err, took = run.interrupt()
    assert proc.returncode == 130, err
    assert err.splitlines()[-1] == "olrg-hpc: interrupted; finished tasks are kept in their shards, rerun to resume"
    assert "Traceback" not in out + err and "Error" not in out + err, err
    print(f"Ctrl-C while {when}: exit 130 after {took:.1f} s")
