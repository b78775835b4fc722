"""C(t) of a trained OLRG map from a study file, on any time grid, without retraining.

One line, from the repository root, after ``olrg-hpc run experiments/olrg_long/small.yaml`` (its D = 16 map, on a grid
twice as fine and twice as long as the study's)::

    python -m olrg_hpc.olrg.replay studies/olrg-long-small/study.h5 train-linear-D16 --t-max 6 --n-times 301

prints ``t  C_olrg(t)  C_exact(t)  |error|`` for the chain of the task's evaluation (``--N`` to change it); with
``--blocks``, where the error enters instead: for every trained block of ``n`` sites, its own ``C_n(t)`` against the
exact ``n``-site chain (free fermions or ED; for judging, never in training). The map is
rebuilt from the task's stored parameters (``params/00000 ...``) and its recorded arguments (model, couplings, map,
options, ``n0``, ``n_final``), so the curve is the one the study evaluated, on a grid of the caller's choosing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np

from olrg_hpc.errors import UserError

__all__ = ["replay_curve", "block_errors", "main"]


def _trained(study_file: str | Path, task: str) -> tuple[dict[str, Any], Any, list[dict[str, Any]]]:
    """(recorded arguments, rebuilt parameters, the study's evaluations' arguments) of a ``train-...`` task."""
    import h5py

    from olrg_hpc.olrg.pipeline import params_from_leaves

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
    return p, params_from_leaves(p["map_name"], p["map_options"], p["n0"], p["n_final"], leaves), evals


def replay_curve(study_file: str | Path, task: str, times: Any, N: int | None = None) -> dict[str, np.ndarray]:
    """``{"times", "approx", "exact", "abs_err", "rel_err"}`` of the map trained by ``task`` grown to ``N`` sites
    (default: the chain its evaluation used, else 64)."""
    from olrg_hpc.olrg.evaluate import error_curve
    from olrg_hpc.olrg.maps import make_map
    from olrg_hpc.spins.models import make_model

    p, params, evals = _trained(study_file, task)
    if N is None:
        N = next((int(e["N"]) for e in evals if e["map_name"] == p["map_name"] and e["n0"] == p["n0"]
                  and e["couplings"] == p["couplings"]), 64)
    model = make_model(p["model"], N, **p["couplings"])
    return error_curve(model, N, make_map(p["map_name"], **p["map_options"]), np.asarray(times, float), params=params,
                       n0=p["n0"], enlarge=int(p.get("enlarge", 0)))


def block_errors(study_file: str | Path, task: str, times: Any) -> dict[str, np.ndarray]:
    """``{"n", "max_abs_err"}``: for every block ``n = n0 + 1 .. n_final`` the map of ``task`` built, the largest
    ``|C_n(t) - C_n^exact(t)|`` over ``times``, where ``C_n`` is the block's own curve (grown and mapped ``n - n0``
    times, nothing cut) and ``C_n^exact`` that of the exact ``n``-site chain: the growth step at which the error
    enters (a jump from one block to the next) shows without any exact answer in the training."""
    from olrg_hpc.olrg.evaluate import block_expectation, exact_curve, grown_blocks
    from olrg_hpc.olrg.maps import make_map
    from olrg_hpc.spins.models import make_model

    p, params, _ = _trained(study_file, task)
    t = np.asarray(times, float)
    model = make_model(p["model"], p["n_final"], **p["couplings"])
    ns = np.arange(p["n0"] + 1, p["n_final"] + 1)
    errs = [float(np.abs(block_expectation(jax.tree_util.tree_map(np.asarray, block), t)
                         - exact_curve(model.with_n(int(n)), int(n), t)).max())
            for n, block in zip(ns, grown_blocks(model, p["n_final"], make_map(p["map_name"], **p["map_options"]),
                                                 params, n0=p["n0"]), strict=True)]
    return {"n": ns, "max_abs_err": np.asarray(errs)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m olrg_hpc.olrg.replay", description=__doc__.splitlines()[0])
    ap.add_argument("study_file")
    ap.add_argument("task", help="a train-... task of the study")
    ap.add_argument("--t-max", type=float, default=10.0)
    ap.add_argument("--n-times", type=int, default=201)
    ap.add_argument("--N", type=int, default=None, help="chain length (default: the study's evaluation)")
    ap.add_argument("--blocks", action="store_true", help="per trained block: its C_n(t) against the exact n sites")
    a = ap.parse_args(argv)
    if a.n_times < 2 or not a.t_max > 0:
        print("replay: need --t-max > 0 and --n-times >= 2", file=sys.stderr)
        return 2
    times = np.linspace(0.0, a.t_max, a.n_times)
    try:
        r = block_errors(a.study_file, a.task, times) if a.blocks else replay_curve(a.study_file, a.task, times, a.N)
    except UserError as e:
        print(f"replay: {e}", file=sys.stderr)
        return 2
    if a.blocks:
        print(f"# n  max |C_n(t) - C_n,exact(t)| on [0, {a.t_max:g}]")
        for n, e in zip(r["n"], r["max_abs_err"], strict=True):
            print(f"{n} {e:.3e}")
        return 0
    print("# t  C_olrg  C_exact  abs_err")
    for row in zip(r["times"], r["approx"], r["exact"], r["abs_err"], strict=True):
        print(" ".join(f"{x:.10g}" for x in row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
