"""Bad configs get one clear line naming the file, the key path and what was expected; exit code 2.

Each case writes a broken study config or cluster profile and runs ``olrg-hpc validate`` in-process.
One case runs the installed console script to show that no traceback reaches the user. The adversarial cases
(not UTF-8, binary, 100k-deep nesting, duplicate keys, NaN, a 900 kB name, a billion replicas, a newline or
``;`` in a profile value that would reach a job script) must fail fast, in one bounded line.
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
    ("trailing newline in the name", GOOD_STUDY.replace("study: t", 'study: "t\\n"'),
     ["study", "control or non-printable character '\\n'"]),
    ("control character in the name", GOOD_STUDY.replace("study: t", 'study: "t\\x1b[2J"'), ["study", "'\\x1b'"]),
    ("duplicate key", GOOD_STUDY + "seed: 2\n", ["duplicate key 'seed' at line 12"]),
    ("duplicate nested key", GOOD_STUDY.replace("t_max: 1.0", "t_max: 1.0\n  t_max: 2.0"),
     ["duplicate key 't_max' at line 6"]),
    ("NaN", GOOD_STUDY.replace("t_max: 1.0", "t_max: .nan"), ["params.t_max", "finite number"]),
    ("infinity in a list", GOOD_STUDY.replace("h: [1.0]", "h: [1.0, -.inf]"),
     ["params.sweeps.0.couplings.h.1", "finite number"]),
    ("100k-deep nesting", GOOD_STUDY.replace("seed: 1", "seed: " + "[" * 100_000 + "]" * 100_000),
     ["nested too deeply"]),
    ("nesting over the bound", GOOD_STUDY + "extra: " + "[" * 40 + "]" * 40 + "\n", ["nested deeper than 32"]),
    ("a 900 kB name", GOOD_STUDY.replace("study: t", "study: " + "x" * 900_000),
     ["study", "at most 4096 characters", "(900000 characters)"]),
    ("too big a file", GOOD_STUDY + "#" * (1 << 20), ["bytes; a config is at most 1048576 bytes"]),
    ("a billion aliased values", "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{x}: &{x} [{', '.join([f'*{p}'] * 10)}]\n" for p, x in zip("abcdefgh", "bcdefghi", strict=True)),
     ["more than 100000 values"]),
]

PROFILE_CASES = [
    ("unparsable walltime", GOOD_PROFILE.replace("'00:30:00'", "'thirty minutes'"), ["walltime", "'thirty minutes'"]),
    ("bad memory", GOOD_PROFILE.replace("1GB", "lots"), ["memory", "memory size", "'lots'"]),
    ("unknown kind", GOOD_PROFILE.replace("kind: slurm", "kind: pbs"), ["kind", "local, slurm, address"]),
    ("unknown profile key", GOOD_PROFILE + "partition: debug\n", ["partition", "unknown key", "queue"]),
    ("jobs and adapt", GOOD_PROFILE + "adapt: {maximum_jobs: 3}\n", ["either jobs", "or adapt"]),
    ("lifetime beyond walltime", GOOD_PROFILE + "worker_lifetime: 40m\n", ["worker_lifetime", "shorter than walltime"]),
    ("zero cores", GOOD_PROFILE + "cores: 0\n", ["cores", "greater than or equal to 1"]),
    ("newline in queue", GOOD_PROFILE.replace("queue: debug", 'queue: "debug\\ntouch /tmp/pwned"'),
     ["queue", "'\\n'"]),
    ("semicolon in account", GOOD_PROFILE + "account: 'proj;touch /tmp/pwned'\n", ["account", "no spaces, quotes"]),
    ("command in python", GOOD_PROFILE + "python: '/usr/bin/python3; touch /tmp/pwned'\n", ["python", "'/usr/bin"]),
    ("substitution in local_directory", GOOD_PROFILE + "local_directory: '$(touch /tmp/pwned)'\n",
     ["local_directory", "$NAME or ${NAME}"]),
    ("newline in a directive", GOOD_PROFILE + 'job_extra_directives: ["--qos=low\\ntouch /tmp/pwned"]\n',
     ["job_extra_directives.0", "'\\n'"]),
    ("directive that is no option", GOOD_PROFILE + "job_extra_directives: ['touch /tmp/pwned']\n",
     ["job_extra_directives", "sbatch options"]),
    ("space in job name", GOOD_PROFILE + "job_name: 'a b'\n", ["job_name"]),
    ("walltime with a trailing newline", GOOD_PROFILE.replace("'00:30:00'", '"00:30:00\\n"'), ["walltime"]),
    ("bad dashboard address", GOOD_PROFILE + "dashboard_address: 'all'\n", ["dashboard_address", "HOST:PORT"]),
    ("newline in the prologue", GOOD_PROFILE + 'job_script_prologue: ["module load x\\nrm -rf /"]\n',
     ["job_script_prologue.0", "'\\n'"]),
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
    assert len(lines) == 1, err[:2000]
    assert len(lines[0]) < 400, lines[0][:2000]
    assert str(tmp_path / "study.yaml") in lines[0]
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.mark.parametrize("what, text, words", PROFILE_CASES, ids=[c[0] for c in PROFILE_CASES])
def test_bad_cluster_profile(tmp_path, capsys, what, text, words):
    code, err = _validate(tmp_path, capsys, GOOD_STUDY, text)
    assert not (tmp_path / "pwned").exists()
    assert code == 2, what
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path / "prof.yaml") in lines[0], err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_good_configs_and_shipped_profiles(tmp_path, capsys):
    """Profile syntax; ``validate`` itself also asks SLURM about a slurm profile (tests/slurm/test_submit.py)."""
    from olrg_hpc.config import load_profile

    assert _validate(tmp_path, capsys, GOOD_STUDY, None)[0] == 0
    for name in ("local", "slurm-dev", "configs/clusters/example-production.yaml"):
        load_profile(name)
    assert load_profile("local")[1].dashboard_address == "127.0.0.1:8787"  # the dashboard stays on this machine
    prof = load_profile("configs/clusters/gpu-cluster.yaml")[1]
    assert prof.local_directory == "$TMPDIR" and "--constraint=h100|a100" in prof.job_extra_directives


def test_validate_of_a_slurm_profile_without_slurm_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    code, err = _validate(tmp_path, capsys, GOOD_STUDY, GOOD_PROFILE)
    assert code == 2 and err.strip().count("\n") == 0 and "sbatch: not found on PATH" in err


def test_a_billion_replicas_fail_fast(tmp_path, capsys):
    """A size that would make the workflow build a billion tasks stops at the graph bound, not in swap."""
    import time

    root = __import__("pathlib").Path(__file__).resolve().parents[2]
    text = (root / "configs" / "phi4_ensembles.yaml").read_text().replace("replicas: 2", "replicas: 1000000000")
    t0 = time.perf_counter()
    code, err = _validate(tmp_path, capsys, text, None)
    assert code == 2 and "task graph: more than 100000 tasks" in err and err.count("\n") == 1
    assert time.perf_counter() - t0 < 60  # ~1 s on two busy cores; without the bound: minutes and gigabytes


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


@pytest.mark.parametrize("content", [b"\xff\xfe s\x00t\x00u\x00d\x00y\x00", b"study: caf\xe9\n",
                                     b"\x7fELF\x02\x01\x01\x00"], ids=["UTF-16", "latin-1", "binary"])
def test_not_utf8_or_binary_is_one_line(tmp_path, capsys, content):
    cfg = tmp_path / "bad.yaml"
    cfg.write_bytes(content)
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("not UTF-8 text" in err or "a binary file" in err)


def test_shipped_study_configs_validate(capsys):
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[2]
    configs = sorted((root / "configs").glob("*.yaml")) + sorted((root / "configs" / "production").glob("*.yaml"))
    assert len(configs) >= 12
    for cfg in configs:
        assert main(["validate", str(cfg)]) == 0, capsys.readouterr().err
    from olrg_hpc.config import load_profile

    for profile in sorted((root / "configs" / "clusters").glob("*.yaml")):
        load_profile(str(profile))


def test_help_explains_each_command(capsys):
    for cmd in ("run", "validate", "status", "report"):
        with pytest.raises(SystemExit) as e:
            main([cmd, "--help"])
        assert e.value.code == 0
        assert textwrap.shorten(capsys.readouterr().out, 10)
