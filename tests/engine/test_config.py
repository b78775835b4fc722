"""Bad configs get one clear line naming the file, the key path and what was expected; exit code 2.

Each case writes a broken study config or cluster profile and runs ``olrg-hpc validate`` in-process.
One case runs the installed console script to show that no traceback reaches the user.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from olrg_hpc.cli import main

GOOD_STUDY = """\
study: t
workflow: chain_sweep
seed: 1
params:
  t_max: 1.0
  n_times: 5
  sweeps:
    - model: tfim
      n_sites: [6]
      couplings: {J: [1.0], h: [1.0]}
      methods: [ed]
"""

GOOD_PROFILE = "kind: slurm\nqueue: debug\nmemory: 1GB\nwalltime: '00:30:00'\njobs: 2\n"

# (what is wrong, study text, profile text or None, words the one line must contain)
STUDY_CASES = [
    ("typo in a workflow key", GOOD_STUDY.replace("n_sites", "n_sitse"),
     ["params.sweeps.0.n_sitse", "unknown key", "allowed: model, n_sites"]),
    ("typo in a top-level key", GOOD_STUDY.replace("seed: 1", "sed: 1"), ["sed", "unknown key"]),
    ("wrong type", GOOD_STUDY.replace("n_times: 5", "n_times: many"), ["params.n_times", "integer", "'many'"]),
    ("impossible value", GOOD_STUDY.replace("t_max: 1.0", "t_max: -1.0"), ["params.t_max", "greater than 0"]),
    ("unknown model", GOOD_STUDY.replace("model: tfim", "model: potts"), ["params.sweeps.0.model", "'potts'"]),
    ("unknown workflow", GOOD_STUDY.replace("workflow: chain_sweep", "workflow: nope"),
     ["workflow", "unknown workflow 'nope'", "chain_sweep"]),
    ("missing required key", GOOD_STUDY.replace("study: t\n", ""), ["study", "required key is missing"]),
    ("coupling of another model", GOOD_STUDY.replace("h: [1.0]", "delta: [1.0]"),
     ["params.sweeps.0", "'delta' is not a coupling of tfim"]),
    ("too large for ED", GOOD_STUDY.replace("n_sites: [6]", "n_sites: [64]"), ["limited to 20 sites"]),
    ("chain too short", GOOD_STUDY.replace("n_sites: [6]", "n_sites: [1]"), ["n_sites", "at least 2 sites"]),
    ("YAML syntax error", GOOD_STUDY.replace("n_times: 5", "n_times: [5"), ["YAML syntax error", "line"]),
    ("not a mapping", "- just\n- a list\n", ["expected a mapping"]),
    ("negative seed", GOOD_STUDY.replace("seed: 1", "seed: -3"), ["seed", "greater than or equal to 0"]),
    ("bad study name", GOOD_STUDY.replace("study: t", "study: 'my study/1'"), ["study", "letters, digits"]),
]

PROFILE_CASES = [
    ("unparsable walltime", GOOD_PROFILE.replace("'00:30:00'", "'thirty minutes'"), ["walltime", "'thirty minutes'"]),
    ("bad memory", GOOD_PROFILE.replace("1GB", "lots"), ["memory", "memory size", "'lots'"]),
    ("unknown kind", GOOD_PROFILE.replace("kind: slurm", "kind: pbs"), ["kind", "local, slurm, address"]),
    ("unknown profile key", GOOD_PROFILE + "partition: debug\n", ["partition", "unknown key", "queue"]),
    ("jobs and adapt", GOOD_PROFILE + "adapt: {maximum_jobs: 3}\n", ["either jobs", "or adapt"]),
    ("lifetime beyond walltime", GOOD_PROFILE + "worker_lifetime: 40m\n", ["worker_lifetime", "shorter than walltime"]),
    ("zero cores", GOOD_PROFILE + "cores: 0\n", ["cores", "greater than or equal to 1"]),
]


def _validate(tmp_path, capsys, study: str, profile: str | None) -> tuple[int, str]:
    cfg = tmp_path / "study.yaml"
    cfg.write_text(study)
    args = ["validate", str(cfg)]
    if profile is not None:
        prof = tmp_path / "prof.yaml"
        prof.write_text(profile)
        args += ["--cluster", str(prof)]
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("what, text, words", STUDY_CASES, ids=[c[0] for c in STUDY_CASES])
def test_bad_study_config(tmp_path, capsys, what, text, words):
    code, err = _validate(tmp_path, capsys, text, None)
    assert code == 2, what
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(tmp_path / "study.yaml") in lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("what, text, words", PROFILE_CASES, ids=[c[0] for c in PROFILE_CASES])
def test_bad_cluster_profile(tmp_path, capsys, what, text, words):
    code, err = _validate(tmp_path, capsys, GOOD_STUDY, text)
    assert code == 2, what
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "prof.yaml") in lines[0], err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_good_configs_and_shipped_profiles(tmp_path, capsys):
    assert _validate(tmp_path, capsys, GOOD_STUDY, GOOD_PROFILE)[0] == 0
    for name in ("local", "slurm-dev", "configs/clusters/example-production.yaml"):
        assert main(["validate", str(tmp_path / "study.yaml"), "--cluster", name]) == 0


def test_unknown_profile_name_and_missing_file(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(GOOD_STUDY)
    assert main(["validate", str(tmp_path / "s.yaml"), "--cluster", "nosuch"]) == 2
    assert "--cluster nosuch: no such profile (known: " in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err


def test_console_script_prints_one_line_no_traceback(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(GOOD_STUDY.replace("n_sites", "n_sitse"))
    exe = [sys.executable, "-m", "olrg_hpc.cli"]
    out = subprocess.run([*exe, "validate", str(cfg)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith(f"olrg-hpc: error: {cfg}: params.sweeps.0.n_sitse: unknown key")


def test_shipped_study_configs_validate(capsys):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    configs = sorted((root / "configs").glob("*.yaml")) + sorted((root / "configs" / "production").glob("*.yaml"))
    assert len(configs) >= 12
    for cfg in configs:
        assert main(["validate", str(cfg)]) == 0, capsys.readouterr().err
    for profile in sorted((root / "configs" / "clusters").glob("*.yaml")):
        assert main(["validate", str(configs[0]), "--cluster", str(profile)]) == 0, capsys.readouterr().err


def test_help_explains_each_command(capsys):
    for cmd in ("run", "validate", "status", "report"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert textwrap.shorten(capsys.readouterr().out, 10)
