"""The command line end to end, as a user runs it: real LocalCluster worker processes, real files.

The kill test stops the driver (and its workers) with SIGKILL half-way through a study, reruns the same
command, and checks that only the missing tasks are recomputed and that the study file holds exactly the
same data as an undisturbed run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from chain_study import EXE, chain_study, run_cli

from olrg_hpc import store


def _profile(tmp_path: Path) -> Path:
    p = tmp_path / "local.yaml"
    p.write_text("kind: local\nn_workers: 2\nthreads_per_worker: 1\ndashboard_address: ':0'\n")
    return p


def test_run_rerun_status_report(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(chain_study("cli-test"))
    out = run_cli(["run", str(cfg), "--cluster", str(_profile(tmp_path)), "--output", "st"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "dashboard: http://" in out.stderr
    assert "13 tasks: 0 skipped" in out.stderr and "13 computed, 0 failed" in out.stderr
    assert out.stdout.startswith("What was computed") and "Verdict: ED against free fermions" in out.stdout
    assert out.stdout.count("agrees (< 1e-10)") == 6  # (N = 6, 8) x three h
    study = tmp_path / "st"
    assert (study / "study.h5").exists() and (study / "report" / "index.html").exists()
    diff = store.datasets(study / "study.h5")["tasks/collect-tfim/ed_vs_ff_max_diff"]
    assert np.max(diff) < 1e-10  # ED and free fermions are both exact: only rounding separates them

    again = run_cli(["run", str(cfg), "--cluster", str(_profile(tmp_path)), "--output", "st", "--no-report"], tmp_path)
    assert again.returncode == 0 and "13 tasks: 13 skipped" in again.stderr

    st = run_cli(["status", "st"], tmp_path)
    assert st.returncode == 0 and "13 tasks: 13 done, 0 missing" in st.stdout

    rep = run_cli(["report", "st"], tmp_path)
    assert rep.returncode == 0 and "Provenance" in rep.stdout


def test_report_and_status_of_a_missing_study(tmp_path):
    for cmd in ("report", "status"):
        out = run_cli([cmd, "nowhere"], tmp_path)
        assert out.returncode == 2 and out.stderr.count("\n") == 1 and "nowhere" in out.stderr


def test_killed_driver_resumes_with_only_missing_tasks(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(chain_study("cli-test", n_times=201, sizes=(9, 10, 11, 12)))
    prof = _profile(tmp_path)
    proc = subprocess.Popen([*EXE, "run", str(cfg), "--cluster", str(prof), "--output", "killed", "--no-progress"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    shards = tmp_path / "killed" / "shards"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and len(store.Shards(tmp_path / "killed").keys()) < 4:
        assert proc.poll() is None, "the study finished before it could be killed: make its tasks longer"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its LocalCluster workers, mid-write or not
    proc.wait(timeout=30)
    done_before = len(store.Shards(tmp_path / "killed").keys())
    assert 4 <= done_before < 25

    rerun = run_cli(["run", str(cfg), "--cluster", str(prof), "--output", "killed", "--no-report"], tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    m = re.search(r"25 tasks: (\d+) skipped \(valid shard\), (\d+) to run", rerun.stderr)
    assert m, rerun.stderr
    skipped, to_run = int(m.group(1)), int(m.group(2))
    assert skipped >= done_before - 0 and skipped + to_run == 25
    assert not list(shards.glob(".*tmp*")), "temporary files of the killed run must be cleaned up"

    clean = run_cli(["run", str(cfg), "--cluster", str(prof), "--output", "clean", "--no-report"], tmp_path)
    assert clean.returncode == 0, clean.stderr
    resumed, undisturbed = store.datasets(tmp_path / "killed/study.h5"), store.datasets(tmp_path / "clean/study.h5")
    assert resumed.keys() == undisturbed.keys()
    for k in undisturbed:
        np.testing.assert_array_equal(resumed[k], undisturbed[k], err_msg=k)


@pytest.mark.parametrize("bad", ["nope.yaml"])
def test_run_with_bad_config_leaves_nothing(tmp_path, bad):
    out = run_cli(["run", bad, "--output", "x"], tmp_path)
    assert out.returncode == 2 and "nope.yaml: no such file" in out.stderr
    assert not (tmp_path / "x").exists()
