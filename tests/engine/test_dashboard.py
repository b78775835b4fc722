"""During a run, the printed dashboard address serves the real Dask status page.

The body is checked, not only the status code: without bokeh, /status still answers HTTP 200 with the
text "Dask needs bokeh".
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request

from chain_study import chain_study


def test_dashboard_serves_status_page_during_run(tmp_path):
    (tmp_path / "s.yaml").write_text(chain_study("dash", sizes=(11, 12), methods=("ed",), n_times=301, seed=1))
    (tmp_path / "p.yaml").write_text("kind: local\nn_workers: 1\ndashboard_address: ':0'\n")
    proc = subprocess.Popen([sys.executable, "-m", "olrg_hpc.cli", "run", "s.yaml", "--cluster", "p.yaml",
                             "--no-progress", "--no-report"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    link = None
    deadline = time.monotonic() + 120
    while link is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        m = re.match(r"dashboard: (http://\S+)", line)
        link = m.group(1) if m else None
    assert link, "no dashboard line"
    assert proc.poll() is None, "the run ended before the dashboard could be checked"
    body = urllib.request.urlopen(link, timeout=30).read().decode()
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, rest
    assert "<title>Dask Diagnostic UI</title>" in body and "Bokeh" in body
    assert "Dask needs bokeh" not in body
