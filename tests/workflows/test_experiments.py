"""Product configs and experiments: every shipped config validates, every experiment has its results page, and
the README's config table lists exactly the product configs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from olrg_hpc.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p for p in (ROOT / "experiments").iterdir() if p.is_dir())
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted((ROOT / "configs" / "production").glob("*.yaml"))


@pytest.mark.parametrize("cfg", [*CONFIGS, *(ROOT / "experiments").glob("*/*.yaml")],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_config_validates(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(cfg)]) == 0, capsys.readouterr().err


def test_every_experiment_has_a_results_page_with_a_finding() -> None:
    assert len(EXPERIMENTS) >= 8
    index = (ROOT / "experiments" / "README.md").read_text()
    for exp in EXPERIMENTS:
        page = (exp / "README.md").read_text()
        assert page.startswith("# ") and "**Finding.**" in page, exp.name
        assert f"[{exp.name}]({exp.name}/README.md)" in index, exp.name
        for name in re.findall(r"experiments/([a-z0-9_]+)/", page):  # links to other experiments resolve
            assert (ROOT / "experiments" / name).is_dir(), (exp.name, name)


def test_readme_lists_the_product_configs_and_points_to_experiments() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("Studies shipped in `configs/`"):]
    table = table[:table.index("\n\n", table.index("| config |"))]
    listed = set(re.findall(r"^\| `([^`]+\.yaml)`", table, flags=re.M))
    shipped = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert listed - {"production/*.yaml"} == shipped
    assert "experiments/" in readme
