"""The README's quickstart at reduced size, end to end as a newcomer meets it: ``olrg-hpc run
configs/quickstart.yaml`` (here with fewer training steps, trajectories and samples), the terminal summary, the
study file, and the HTML report opened in headless Chromium.

The browser check loads a copy of ``report/index.html`` with one script appended that counts the images that
decoded (``naturalWidth > 0``) and the tables, and writes the counts into the page title; ``--dump-dom``
prints the DOM after load. The report itself carries no script.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import h5py
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def shrink(cfg: dict[str, Any]) -> dict[str, Any]:
    """The quickstart with its costly knobs turned down; the graph (parts, maps, priors, samplers) is kept."""
    parts = cfg["params"]["parts"]
    olrg = parts["olrg"]["params"]
    olrg["training"]["steps"] = min(olrg["training"]["steps"], 20)
    olrg["n_times"] = min(olrg["n_times"], 21)
    fl = parts["flows"]["params"]
    if "ensembles" in fl:  # only a prior kind with an HMC ensemble needs them
        fl["ensembles"].update(n_therm=50, n_traj=100)
    fl["training"].update(steps=200, metrics_every=50, metrics_batch=256)
    fl["imh"].update(n_steps=300)
    fl["flow_hmc"].update(n_traj=30, n_therm=5)
    fl["hmc"].update(n_traj=300, n_therm=50)
    return cfg


def _run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "olrg_hpc.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("quickstart")
    cfg = shrink(yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text()))
    (tmp / "quickstart.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (tmp / "local.yaml").write_text("kind: local\nn_workers: 2\nthreads_per_worker: 1\ndashboard_address: ':0'\n")
    out = _run(["run", "quickstart.yaml", "--cluster", "local.yaml", "--output", "study"], tmp)
    return tmp / "study", out


def test_quickstart_runs_and_summarises(quickstart):
    study, out = quickstart
    assert out.returncode == 0, out.stderr[-3000:]
    assert "dashboard: http" in out.stderr and "0 failed" in out.stderr
    for title in ("olrg: OLRG maps against the exact C(t)", "flows: Samplers"):  # the summary tables
        assert title in out.stdout + out.stderr
    with h5py.File(study / "study.h5") as f:
        names = list(f["tasks"])
        assert f.attrs["workflow"] == "suite"
        assert any(n.startswith("olrg:eval-linear") for n in names) and "olrg:compare" in names
        assert any(n.startswith("flows:train-warm") for n in names) and any(n.startswith("flows:imh-") for n in names)


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium on this machine (apt install chromium)")
def test_report_renders_in_headless_chromium(quickstart, tmp_path):
    study, out = quickstart
    assert out.returncode == 0, out.stderr[-3000:]
    page = (study / "report" / "index.html").read_text()
    n_img, n_tab = page.count("<img "), page.count("<table>")
    assert n_img >= 2 and n_tab >= 2
    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", "<script>window.addEventListener('load', () => {"
                                  "const ok = [...document.images].filter(i => i.complete && i.naturalWidth > 0);"
                                  "document.title = `rendered ${ok.length} images ${document.querySelectorAll("
                                  "'table').length} tables`;});</script></body>"))
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r"<title>rendered (\d+) images (\d+) tables</title>", dom.stdout)
    assert m, f"the page did not finish loading in Chromium: {dom.stderr[-2000:]}"
    assert (int(m[1]), int(m[2])) == (n_img, n_tab), "an image failed to decode or a table is missing"
