"""The scaling study: its graph (a chain, shared points measured once), the curve arithmetic, the report
from a study file, one-line errors for bad params, and runs end to end through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from pydantic import ValidationError

from olrg_hpc import scaling, store
from olrg_hpc.cli import main
from olrg_hpc.lattice.mpi_hmc_spec import MPIHMCSpec
from olrg_hpc.report import write_report
from olrg_hpc.tasks import NonFiniteResult, check_finite
from workflows import get_workflow, scaling_study


def _params(**over):
    base = {"throughput": {"workers": [1, 2], "strong_tasks": 8, "weak_tasks_per_worker": 4},
            "mpi": {"ranks": [1, 2, 4], "strong_L": 32, "weak_local": 8},
            "training": {"devices": [1, 2, 4], "strong_batch": 16, "weak_batch_per_device": 4}}
    return scaling_study.Params.model_validate({**base, **over})


class TestGraph:
    def test_chain_and_shared_points(self):
        tasks = scaling_study.build(_params())
        names = [t.name for t in tasks]
        assert len(set(names)) == len(names) and names[-1] == "curves"
        measured = tasks[:-1]
        # a chain: every measurement waits for the one before, so no two timings overlap
        assert measured[0].deps == ()
        assert all(t.deps == (p.name,) for p, t in zip(measured[:-1], measured[1:], strict=True))
        assert set(tasks[-1].deps) == {t.name for t in measured}
        # weak 2 workers x 4 = strong 8 tasks, weak 4 devices x 4 = strong 16: measured once, used twice
        assert names.count("throughput-w2-M8") == 1 and names.count("train-d4-B16") == 1
        curves = tasks[-1].params["curves"]
        assert set(curves) == {f"{p}-{m}" for p in ("throughput", "mpi_hmc", "training") for m in ("strong", "weak")}
        assert curves["throughput-weak"]["points"] == [[1, "throughput-w1-M4"], [2, "throughput-w2-M8"]]
        assert curves["mpi_hmc-weak"]["points"][-1] == [4, "mpi-r4-L16x16"]
        spec = MPIHMCSpec.model_validate({t.name: t for t in tasks}["mpi-r4-L16x16"].params["spec"])
        assert spec.dims == [2, 2] and spec.shape == (16, 16) and spec.n_traj == 10  # the program's own spec

    def test_an_unsampled_host_is_not_measured(self):
        """host_facts(sample_s=0) gives NaN busy cores: every measurement and the curves declare it (Task.nan_ok)."""
        facts = scaling.host_facts(sample_s=0)
        assert np.isnan(facts["background_busy_cores"])
        for t in scaling_study.build(_params()):
            check_finite({"background_busy_cores": facts["background_busy_cores"],
                          "mpi_hmc-strong": {"background_busy_cores": np.array([np.nan, 0.5])}}, t.nan_ok)
            with pytest.raises(NonFiniteResult):
                check_finite({"seconds": np.array([np.nan])}, t.nan_ok)

    def test_only_one_mode_and_part(self):
        tasks = scaling_study.build(scaling_study.Params.model_validate(
            {"mpi": {"ranks": [1, 2]}, "modes": ["weak"]}))
        assert [t.name for t in tasks] == ["mpi-r1-L256x256", "mpi-r2-L512x256", "curves"]

    @pytest.mark.parametrize(("over", "msg"), [
        ({"mpi": {"ranks": [1, 3], "strong_L": 32}}, "not divisible by the 3x1 process grid"),
        ({"training": {"devices": [1, 3], "strong_batch": 16}}, "multiple of every device count"),
        ({"throughput": {"workers": [1, 1]}}, "must be distinct"),
        ({"throughput": None, "mpi": None, "training": None}, "nothing to measure"),
    ])
    def test_bad_params(self, over, msg):
        with pytest.raises(ValidationError, match=msg):
            _params(**over)

    def test_validate_names_the_key_in_one_line(self, tmp_path, capsys):
        cfg = tmp_path / "bad.yaml"
        cfg.write_text("study: s\nworkflow: scaling_study\nparams:\n  mpi: {ranks: [1, 3], strong_L: 32}\n")
        assert main(["validate", str(cfg)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "params.mpi" in err[0] and "3x1 process grid" in err[0], err


class TestCurves:
    def test_process_grid_as_mpi_dims_create(self):
        assert [scaling.process_grid(n) for n in (1, 2, 3, 4, 6, 8, 12, 16)] == [
            (1, 1), (2, 1), (3, 1), (2, 2), (3, 2), (4, 2), (4, 3), (4, 4)]

    def test_strong_and_weak(self):
        s, e = scaling.scaling_curve([1, 2, 4], [8.0, 4.0, 4.0], "strong")
        np.testing.assert_allclose(s, [1, 2, 2])
        np.testing.assert_allclose(e, [1, 1, 0.5])
        s, e = scaling.scaling_curve([2, 4], [6.0, 4.0], "strong")  # baseline 2: S(2) = 2 by definition
        np.testing.assert_allclose(s, [2, 3])
        s, e = scaling.scaling_curve([1, 2, 4], [1.0, 1.0, 2.0], "weak")
        np.testing.assert_allclose(e, [1, 1, 0.5])
        np.testing.assert_allclose(s, [1, 2, 2])
        assert scaling.stop_point([1, 2, 4], e, 0.7) == 4 and scaling.stop_point([1, 2], [1, 0.9], 0.7) is None

    def test_training_env_replaces_the_device_count(self, monkeypatch):
        monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8")
        env = scaling.training_env(2)
        assert env["XLA_FLAGS"] == "--xla_cpu_foo=1 --xla_force_host_platform_device_count=2"
        assert env["JAX_PLATFORMS"] == "cpu" and "JAX_PLATFORMS" not in scaling.training_env(2, "default")


def _host(busy=0.0):
    return {"host": "h", "cpu_count": 2, "usable_cpus": 2, "physical_cores": 2, "background_busy_cores": busy,
            "repeat_spread": 1.0}


def _synthetic_points():
    thr = {f"thr{w}": {"resources": w, "seconds": t, "tasks_per_s": 8 / t, "compute_ms_per_task": c,
                       "write_ms_per_task": 1.0, "overhead_share": o, "tasks_per_worker": 8 / w, "n_tasks": 8,
                       **_host()}
           for w, t, c, o in ((1, 8.0, 900.0, 0.05), (2, 4.2, 950.0, 0.1), (4, 4.0, 1900.0, 0.5))}
    mpi = {f"mpi{r}": {"resources": r, "md_step_s": t, "site_updates_per_s": 1e6 / t, "halo_share": h,
                       "rng_share": 0.05, "local_block": [16 // max(1, r // 2), 16 // min(2, r)], **_host()}
           for r, t, h in ((1, 1.0, 0.0), (2, 0.55, 0.05), (4, 0.6, 0.6))}
    trn = {f"trn{d}": {"resources": d, "step_s": t, "samples_per_s": 16 / t, "per_device_batch": 16 // d,
                       "batch_size": 16, "n_params": 100, "platform": "cpu", **_host(busy=1.5)}
           for d, t in ((1, 1.0), (2, 1.1))}
    return {**thr, **mpi, **trn}


def test_curves_reasons_and_report_from_a_study_file(tmp_path):
    curves = {"throughput-strong": {"part": "throughput", "mode": "strong",
                                    "points": [[1, "thr1"], [2, "thr2"], [4, "thr4"]]},
              "mpi_hmc-strong": {"part": "mpi_hmc", "mode": "strong",
                                 "points": [[1, "mpi1"], [2, "mpi2"], [4, "mpi4"]]},
              "mpi_hmc-weak": {"part": "mpi_hmc", "mode": "weak", "points": [[1, "mpi1"], [2, "mpi2"]]},
              "training-strong": {"part": "training", "mode": "strong", "points": [[1, "trn1"], [2, "trn2"]]},
              "training-weak": {"part": "training", "mode": "weak", "points": [[1, "trn1"]]}}
    res = scaling.scaling_curves(curves, 0.7, deps=_synthetic_points())
    t = res["throughput-strong"]
    np.testing.assert_allclose(t["speedup"], [1, 8 / 4.2, 2])
    assert t["stops_at"] == 4
    assert "oversubscribed" in t["reason"] and "slower" in t["reason"] and "outside tasks" in t["reason"]
    assert res["mpi_hmc-strong"]["stops_at"] == 4 and "halo exchange 60%" in res["mpi_hmc-strong"]["reason"]
    assert res["mpi_hmc-weak"]["stops_at"] == 0 and "up to 2 MPI ranks" in res["mpi_hmc-weak"]["reason"]
    assert "emulated CPU devices" in res["training-strong"]["reason"]
    assert "other processes kept 1.5" in res["training-strong"]["reason"]

    study = tmp_path / "study"
    store.write_shard(store.shard_path(study, "k"), res, {"task_key": "k"})
    store.gather(study, [{"name": "curves", "key": "k"}], {"workflow": "scaling_study"})
    out_dir, lines = write_report(study, get_workflow)
    assert sorted(p.name for p in out_dir.glob("*.png")) == [
        "scaling-mpi_hmc.png", "scaling-throughput.png", "scaling-training.png"]  # training-weak: one point
    text = "\n".join(lines)
    assert "Verdict per curve: efficiency against the target E >= 0.7 on h (2 usable cores)" in text
    stops = [ln for ln in lines if ln.startswith("mpi_hmc-strong") and "halo exchange" in ln]
    assert len(stops) == 1
    tables = json.loads((out_dir / "tables.json").read_text())
    assert [t["title"].split(" ")[0] for t in tables[:3]] == ["What", "Verdict", "Scaling"]
    computed = dict(tables[0]["rows"])
    assert computed["target"] == "efficiency E >= 0.7 (the study's efficiency_threshold)"
    assert computed["mpi_hmc-strong: MPI ranks 1, 2, 4"] == "mpi1, mpi2, mpi4"  # no task parameters in this file
    verdict = {r[0]: r for r in tables[1]["rows"]}
    assert verdict["mpi_hmc-strong"][1:3] == ["1: 1, 2: 0.909, 4: 0.417", "met up to 2, missed from 4 MPI ranks"]
    assert verdict["mpi_hmc-weak"][2:] == ["met up to 2 MPI ranks (the largest measured)", "-"]
    assert verdict["training-weak"][1:3] == ["1: 1", "met up to 1 devices (the largest measured)"]
    assert len(tables[2]["rows"]) == 3 + 3 + 2 + 2 + 1


def _run_study(tmp_path: Path, params: str) -> Path:
    cfg = tmp_path / "scaling.yaml"
    cfg.write_text(f"study: scaling-test\nworkflow: scaling_study\nretries: 0\nparams:\n{params}")
    prof = tmp_path / "one.yaml"
    prof.write_text("kind: local\nn_workers: 1\nthreads_per_worker: 1\ndashboard_address: ':0'\n")
    out = tmp_path / "st"
    assert main(["run", str(cfg), "--cluster", str(prof), "--output", str(out), "--no-progress"]) == 0
    return out


def _check_curves(study: Path, names: set[str]) -> None:
    with h5py.File(study / "study.h5") as f:
        g = f["tasks/curves"]
        assert {n for n in g if n not in ("threshold", "host")} == names
        for n in names:
            r, s, e, t = (g[n][k][()] for k in ("resources", "speedup", "efficiency", "seconds"))
            assert len(r) >= 2 and r.shape == s.shape == e.shape == t.shape
            assert np.all(t > 0) and np.all(np.isfinite(e)) and e[0] == pytest.approx(1.0)
            assert g[n]["reason"].asstr()[()]
        assert g["host/usable_cpus"][()] >= 1
    figs = sorted(p.name for p in (study / "report").glob("*.png"))
    assert figs == sorted({f"scaling-{n.rsplit('-', 1)[0]}.png" for n in names})
    summary = (study / "report" / "summary.txt").read_text()
    assert summary.startswith("What was computed") and "Verdict per curve" in summary


@pytest.mark.mpi
def test_mpi_part_end_to_end_and_resume(tmp_path, capsys):
    study = _run_study(tmp_path, "  repeats: 1\n  mpi: {ranks: [1, 2], strong_L: 16, weak_local: 8, n_traj: 2, "
                                 "n_steps: 2}\n")
    _check_curves(study, {"mpi_hmc-strong", "mpi_hmc-weak"})
    with h5py.File(study / "study.h5") as f:
        r2 = f["tasks/mpi-r2-L16x16"]
        assert list(r2["dims"][()]) == [2, 1] and 0 <= r2["halo_share"][()] <= 1
        assert r2.attrs["compute_seconds"] > 0  # provenance of every measurement
    computed = dict(json.loads((study / "report" / "tables.json").read_text())[0]["rows"])
    assert computed["mpi_hmc-strong: MPI ranks 1, 2"] == "L = 16 x 16"
    assert computed["mpi_hmc-weak: MPI ranks 1, 2"] == "8 x 8 sites per rank"
    capsys.readouterr()
    assert main(["run", str(study / "config.yaml"), "--output", str(study), "--no-progress", "--no-report",
                 "--cluster", str(tmp_path / "one.yaml")]) == 0
    assert "5 tasks: 5 skipped" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.mpi
def test_all_parts_end_to_end(tmp_path):
    study = _run_study(tmp_path, """\
  repeats: 1
  throughput: {workers: [1, 2], strong_tasks: 4, weak_tasks_per_worker: 2, n_sites: 6, n_times: 5}
  mpi: {ranks: [1, 2], strong_L: 16, weak_local: 8, n_traj: 2, n_steps: 2}
  training: {devices: [1, 2], strong_batch: 8, weak_batch_per_device: 4, n_steps: 2, warmup_steps: 1, n_layers: 1,
             hidden: [2], L: 4}
""")
    _check_curves(study, {f"{p}-{m}" for p in ("throughput", "mpi_hmc", "training") for m in ("strong", "weak")})
    with h5py.File(study / "study.h5") as f:
        assert f["tasks/train-d2-B8/devices_seen"][()] == 2 and f["tasks/train-d2-B8/per_device_batch"][()] == 4
        assert f["tasks/throughput-w2-M4/n_tasks"][()] == 4
