"""C(t) of a trained OLRG map from a study file, on any time grid, without retraining.

One line, from the repository root, after ``olrg-hpc run experiments/olrg_long/small.yaml`` (its D = 16 map, on a grid
twice as fine and twice as long as the study's)::

    python -m olrg_hpc.olrg.replay studies/olrg-long-small/study.h5 train-linear-D16 --t-max 6 --n-times 301

prints ``t  C_olrg(t)  C_exact(t)  |error|`` for the chain of the task's evaluation (``--N`` to change it). The map is
rebuilt from the task's stored parameters (``params/00000 ...``) and its recorded arguments (model, couplings, map,
options, ``n0``, ``n_final``), so the curve is the one the study evaluated, on a grid of the caller's choosing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from olrg_hpc.errors import UserError

__all__ = ["replay_curve", "main"]


def replay_curve(study_file: str | Path, task: str, times: Any, N: int | None = None) -> dict[str, np.ndarray]:
    """``{"times", "approx", "exact", "abs_err", "rel_err"}`` of the map trained by ``task`` grown to ``N`` sites
    (default: the chain its evaluation used, else 64)."""
    import h5py

    from olrg_hpc.olrg.evaluate import error_curve
    from olrg_hpc.olrg.maps import make_map
    from olrg_hpc.olrg.pipeline import params_from_leaves
    from olrg_hpc.spins.models import make_model

    path = Path(study_file)
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not a readable study file ({e})") from None
    with f:
        if f"tasks/{task}" not in f:
            trained = sorted(n for n in f.get("tasks", {}) if n.startswith("train-"))
            raise UserError(f"{path}: no task {task!r}; trained maps: {', '.join(trained) or 'none'}")
        g = f[f"tasks/{task}"]
        if "params" not in g:
            raise UserError(f"{path}: task {task!r} holds no trained map (no 'params' group)")
        p = json.loads(g.attrs["params"])
        leaves = {k: g["params"][k][()] for k in g["params"]}
        evals = [json.loads(f["tasks"][n].attrs["params"]) for n in f["tasks"] if n.startswith("eval-")]
    if N is None:
        N = next((int(e["N"]) for e in evals if e["map_name"] == p["map_name"] and e["n0"] == p["n0"]
                  and e["couplings"] == p["couplings"]), 64)
    params = params_from_leaves(p["map_name"], p["map_options"], p["n0"], p["n_final"], leaves)
    model = make_model(p["model"], N, **p["couplings"])
    return error_curve(model, N, make_map(p["map_name"], **p["map_options"]), np.asarray(times, float), params=params,
                       n0=p["n0"], enlarge=int(p.get("enlarge", 0)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m olrg_hpc.olrg.replay", description=__doc__.splitlines()[0])
    ap.add_argument("study_file")
    ap.add_argument("task", help="a train-... task of the study")
    ap.add_argument("--t-max", type=float, default=10.0)
    ap.add_argument("--n-times", type=int, default=201)
    ap.add_argument("--N", type=int, default=None, help="chain length (default: the study's evaluation)")
    a = ap.parse_args(argv)
    if a.n_times < 2 or not a.t_max > 0:
        print("replay: need --t-max > 0 and --n-times >= 2", file=sys.stderr)
        return 2
    try:
        r = replay_curve(a.study_file, a.task, np.linspace(0.0, a.t_max, a.n_times), a.N)
    except UserError as e:
        print(f"replay: {e}", file=sys.stderr)
        return 2
    print("# t  C_olrg  C_exact  abs_err")
    for row in zip(r["times"], r["approx"], r["exact"], r["abs_err"], strict=True):
        print(" ".join(f"{x:.10g}" for x in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
