"""OLRG study: every map and D grown to N sites and judged against the exact C(t) = <Z_1 Z_2>(t).

Graph, per coupling point (``couplings`` values that are lists are swept, one point per combination) and training
seed (``seeds``):

- ``targets-n<n>``: the exact TOBCs of the ``n``-site chain (the small-block solver, ``n <= 12``) for the samples
  of that seed, one task per block, shared by every ``D``;
- ``train-<map>-D<D>``: a learned map (linear isometry, neural OMM) trained on the TOBC loss: exact targets on the
  blocks up to ``training.exact_max_n`` sites, the self-consistency term (grown set against its compression) on
  every block up to ``n_final``, which may be ``light_cone``: every site C(t) can feel on ``[0, t_max]``, decided
  from exact chains of at most 12 sites (:func:`olrg_hpc.olrg.evaluate.light_cone_sites`); sites beyond are cut;
- ``eval-<map>-D<D>``: the map grown to ``N`` sites against the exact curve (free fermions for the TFIM); fixed maps
  (identity, NRG, DMRG-style), TEBD at bond dimension ``chi = D`` (and ``tebd_chis``) and ``exact_block`` (the
  exact ``exact_max_n``-site chain alone: the small solver without any map) need no training;
- ``compare``: max |error| per window for every evaluation.

``variants`` name a map with its own options and ``n_final`` (e.g. the map trained on the exact blocks only and cut
after them, ``{map: linear, n_final: 12, options: {beyond: decouple}}``). Task names carry the swept couplings
(``-h0.5``) and the seed (``-s1``) only when there are several. Report: what was computed, then per point C(t) and
|error|(t) with the time the exact block's edge is first felt, error versus D (OLRG and TEBD), the comparison table
with a verdict against TEBD at chi = D, and the seconds each map took to its accuracy against TEBD's.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import Field, model_validator

from olrg_hpc.config import Strict
from olrg_hpc.olrg import pipeline
from olrg_hpc.olrg.maps import make_map
from olrg_hpc.report import COMPUTED, Table, WorkflowReport, sig3
from olrg_hpc.spins.tebd import steps_on_grid
from olrg_hpc.tasks import Resources, Task

#: training runs on an accelerator pool when the cluster has one
TRAINING = Resources(accelerator=True)

MapName = Literal["identity", "nrg", "dmrg", "linear", "omm", "tebd", "exact_block"]
#: largest chain the exact-target term and the light-cone decision may use (dense exact TOBCs)
EXACT_MAX = 12


class Training(Strict):
    steps: int = Field(300, ge=1)
    lr: float = Field(1e-2, gt=0)
    schedule: Literal["together", "gradual"] = "together"
    T: float | None = Field(None, gt=0, description="final time of the TOBC loss; default 1.1 t_max (a margin: "
                            "the learned curve's error grows at the training window's edge)")
    K: int = Field(2, ge=0, le=6, description="highest TOBC order")
    n_per_order: int = Field(20, ge=1)
    n_order0: int | None = Field(None, ge=1, description="order-0 samples (final times); default n_per_order")
    exact_weight: float = Field(1.0, ge=0, description="weight of the exact small-block target term")
    exact_max_n: int = Field(EXACT_MAX, ge=3, le=EXACT_MAX,
                             description="exact targets on the blocks up to this many sites; the blocks beyond are "
                                         "trained on the self-consistency term alone")
    consistency: Literal["joint", "local"] = Field(
        "local", description="past the exact blocks: 'local' trains each map on its own input (grown set fixed), "
                             "'joint' differentiates end to end (olrg_hpc.olrg.loss.LossConfig.consistency)")
    enlarge: int = Field(0, ge=0, le=2, description="exact sites added to both blocks before the TOBCs are compared")
    environments: list[Annotated[int, Field(ge=1, le=6)] | Literal["latest"]] = Field(
        default_factory=list, description="the consistency term also with the block joined to exact chains of these "
                                          "many sites and to 'latest', the block it grew from "
                                          "(olrg_hpc.olrg.loss.LossConfig.environments)")
    env_weight: float = Field(1.0, gt=0, description="weight of the environments' consistency terms")


#: training fields a variant may set for itself (the sampling fields are shared: exact targets serve every map)
VARIANT_TRAINING = ("steps", "lr", "schedule", "exact_weight", "consistency", "environments", "env_weight")


class Variant(Strict):
    map: MapName
    n_final: int | None = Field(None, ge=3, description="blocks trained (learned maps); default the study's")
    options: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict, description="this map's own values of the training "
                                     f"fields {', '.join(VARIANT_TRAINING)}")


class Params(Strict):
    model: Literal["tfim", "mixed_field_ising"] = "tfim"
    couplings: dict[str, float | list[float]] = Field(
        default_factory=lambda: {"J": 1.0, "h": 1.0}, description="a list sweeps that coupling")
    n0: list[int] = Field([3], min_length=1, description="exact initial block sizes: D = 2^n0")
    n_final: int | Literal["light_cone"] = Field(
        10, description="last block trained; 'light_cone': every site C(t) can feel on [0, t_max] (decided from "
                        "chains of at most 12 sites)")
    N: int = Field(10, ge=3, description="chain length of the evaluation")
    seeds: list[int] = Field([0], min_length=1, description="training seeds (TOBC samples and initial maps)")
    maps: list[str] = Field(default_factory=lambda: ["nrg", "dmrg", "linear"], min_length=1,
                            description="map names or names of variants")
    map_options: dict[str, dict[str, Any]] = Field(default_factory=dict, description="map name -> keyword options")
    variants: dict[str, Variant] = Field(default_factory=dict, description="label -> a map with its own options")
    tebd_chis: list[int] = Field(default_factory=list, description="TEBD bond dimensions besides chi = D")
    training: Training = Training()
    t_max: float = Field(2.0, gt=0)
    n_times: int = Field(41, ge=2)
    windows: list[float] | None = Field(None, min_length=1, description="max |error| is tabulated on each [0, w]; "
                                        "default 2 and 4 where they fit, else t_max")

    @property
    def train_T(self) -> float:
        """The TOBC loss's final time: ``training.T``, or ``1.1 t_max`` (at ``N = 64, D = 16`` a model trained to
        exactly ``t_max = 4`` had its error jump from <= 2.5e-4 to 3e-3 in the last 0.05; the mixed-field chain showed
        the same at ``D = 8``)."""
        return self.training.T if self.training.T is not None else round(1.1 * self.t_max, 12)

    def points(self) -> list[dict[str, float]]:
        """One coupling dict per combination of the swept (list-valued) couplings."""
        keys = list(self.couplings)
        values = [v if isinstance(v, list) else [v] for v in self.couplings.values()]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*values)]

    def point_label(self, point: dict[str, float]) -> str:
        swept = [k for k, v in self.couplings.items() if isinstance(v, list)]
        return "".join(f"-{k}{point[k]:g}" for k in swept)

    def resolved(self, name: str) -> tuple[str, dict[str, Any], int | None]:
        """(map, options, n_final override) of a map name or a variant label."""
        if name in self.variants:
            v = self.variants[name]
            return v.map, v.options, v.n_final
        return name, self.map_options.get(name, {}), None

    def training_of(self, name: str) -> Training:
        """The training settings of a map name or variant label (a variant's ``training`` over the study's)."""
        own = self.variants[name].training if name in self.variants else {}
        return Training(**{**self.training.model_dump(), **own}) if own else self.training

    @model_validator(mode="after")
    def _check(self) -> Params:
        bad = [n for n in self.n0 if not 2 <= n <= 6]
        if bad:
            raise ValueError(f"n0 from 2 to 6 (D = 4 .. 64), got {bad[0]}")
        if self.n_final != "light_cone" and max(self.n0) >= self.n_final:
            raise ValueError(f"n_final ({self.n_final}) must exceed every n0 ({max(self.n0)})")
        if self.model == "mixed_field_ising" and self.N > 14:
            raise ValueError(f"mixed_field_ising is checked against ED: N at most 14 (got {self.N})")
        if any(isinstance(v, list) and not v for v in self.couplings.values()):
            raise ValueError("couplings: a swept coupling needs at least one value")
        for w in self.windows or []:
            if not 0 < w <= self.t_max + 1e-12:
                raise ValueError(f"windows: {w:g} is not in (0, t_max = {self.t_max:g}]")
        known = get_args(MapName)
        for name in self.maps:
            if name not in known and name not in self.variants:
                raise ValueError(f"maps: {name!r} is neither a map ({', '.join(known)}) nor a variant")
        for label, v in self.variants.items():
            if label in known:
                raise ValueError(f"variants: {label!r} is a map's name; give the variant another label")
            bad_keys = sorted(set(v.training) - set(VARIANT_TRAINING))
            if bad_keys:
                raise ValueError(f"variants.{label}.training: {bad_keys[0]!r} is shared by the study; a variant may "
                                 f"set {', '.join(VARIANT_TRAINING)}")
            self.training_of(label)
        for name, opts in self.map_options.items():
            _check_map_options(name, opts)
        for label, v in self.variants.items():
            try:
                _check_map_options(v.map, v.options)
            except ValueError as e:
                raise ValueError(f"variants.{label}: {e}") from None
        if any(self.resolved(n)[0] == "tebd" for n in self.maps) or self.tebd_chis:
            dt = float(self.map_options.get("tebd", {}).get("dt", 0.01))
            step = self.t_max / (self.n_times - 1)
            if steps_on_grid(np.linspace(0.0, self.t_max, self.n_times), dt) is None:
                raise ValueError(f"tebd evolves in steps of dt = {dt}: the time step t_max / (n_times - 1) = {step:g} "
                                 "must be a multiple of it")
        return self


def _check_map_options(name: str, opts: dict[str, Any]) -> None:
    """Refuse, at validation rather than in a task, an unknown map, an option its class does not take, or a value
    its constructor refuses."""
    known = get_args(MapName)
    if name not in known:
        raise ValueError(f"map_options.{name}: unknown map; known: {', '.join(known)}")
    if name == "tebd":
        if set(opts) - {"chi", "dt", "order"}:
            raise ValueError(f"map_options.tebd takes chi, dt and order, got {sorted(opts)}")
        return
    if name == "exact_block":
        if opts:
            raise ValueError(f"map_options.exact_block takes no options, got {sorted(opts)}")
        return
    try:
        make_map(name, **opts)
    except (TypeError, ValueError) as e:
        raise ValueError(f"map_options.{name}: {e}") from None


def n_final_of(params: Params, point: dict[str, float]) -> int:
    """The last trained block at one coupling point (``light_cone``: :func:`~olrg_hpc.olrg.evaluate.light_cone_sites`
    from chains of at most :data:`EXACT_MAX` sites)."""
    if params.n_final != "light_cone":
        return int(params.n_final)
    from olrg_hpc.olrg.evaluate import light_cone_sites
    from olrg_hpc.spins.models import make_model

    return int(light_cone_sites(make_model(params.model, EXACT_MAX, **point), params.t_max)["n_sites"])


def build(params: Params) -> list[Task]:
    tr = params.training
    tasks: list[Task] = []
    evals = []
    multi_seed = len(params.seeds) > 1
    for point in params.points():
        pl = params.point_label(point)
        n_fin = n_final_of(params, point)
        common = {"model": params.model, "couplings": point}
        sampling = {"T": params.train_T, "K": tr.K, "n_per_order": tr.n_per_order, "n_order0": tr.n_order0}
        targets: dict[tuple[int, int], str] = {}  # (seed, n) -> task name
        for seed in params.seeds:
            sl = f"-s{seed}" if multi_seed else ""
            for n0 in params.n0:
                for name in params.maps:
                    kind, opts, n_var = params.resolved(name)
                    tv = params.training_of(name)
                    n_final = n_fin if n_var is None else n_var
                    deps: tuple[str, ...] = ()
                    if kind in pipeline.LEARNED:
                        # exact targets: one task per block (shared by every D), when any block has one
                        exact_max = min(tr.exact_max_n, n_final + tr.enlarge)
                        needs = range(n0 + 1 + tr.enlarge, exact_max + 1) if tv.exact_weight > 0 else range(0)
                        for n in needs:
                            if (seed, n) not in targets:
                                t = Task(f"targets-n{n}{pl}{sl}", pipeline.exact_targets_task,
                                         {**common, "n_sites": n, **sampling, "batch_seed": seed})
                                tasks.append(t)
                                targets[(seed, n)] = t.name
                        t = Task(f"train-{name}-D{2**n0}{pl}{sl}", pipeline.train_map_task,
                                 {**common, "map_name": kind, "map_options": opts, "n0": n0, "n_final": n_final,
                                  **sampling, "steps": tv.steps, "lr": tv.lr, "schedule": tv.schedule,
                                  "exact_weight": tv.exact_weight, "enlarge": tr.enlarge, "exact_max_n": exact_max,
                                  "consistency": tv.consistency, "environments": tv.environments,
                                  "env_weight": tv.env_weight, "batch_seed": seed},
                                 deps=tuple(targets[(seed, n)] for n in needs), resources=TRAINING)
                        tasks.append(t)
                        deps = (t.name,)
                    elif seed != params.seeds[0]:
                        continue  # fixed maps, TEBD and the exact block do not depend on the seed
                    if kind == "exact_block":  # one per point, not per D
                        if n0 != params.n0[0]:
                            continue
                        label, n0_e, n_fin_e = f"eval-{name}-n{tr.exact_max_n}{pl}", tr.exact_max_n, tr.exact_max_n
                    else:
                        label = f"eval-{name}-D{2**n0}{pl}{sl if kind in pipeline.LEARNED else ''}"
                        n0_e, n_fin_e = n0, n_final
                    e = Task(label, pipeline.evaluate_map_task,
                             {**common, "map_name": kind, "map_options": opts, "n0": n0_e, "n_final": n_fin_e,
                              "N": params.N, "t_max": params.t_max, "n_times": params.n_times,
                              "enlarge": tr.enlarge if kind in pipeline.LEARNED else 0}, deps=deps)
                    tasks.append(e)
                    evals.append(e.name)
        ds = {2**n0 for n0 in params.n0}
        for chi in sorted(set(params.tebd_chis) - (ds if "tebd" in params.maps else set())):
            opts = {**params.map_options.get("tebd", {}), "chi": chi}
            e = Task(f"eval-tebd-chi{chi}{pl}", pipeline.evaluate_map_task,
                     {**common, "map_name": "tebd", "map_options": opts, "n0": params.n0[0], "n_final": n_fin,
                      "N": params.N, "t_max": params.t_max, "n_times": params.n_times})
            tasks.append(e)
            evals.append(e.name)
    windows = params.windows or [w for w in (2.0, 4.0) if w <= params.t_max] or [params.t_max]
    # a window with no time of an evaluation in it (e.g. [0.1, 2] when t_max < 0.1) is NaN: not measured
    tasks.append(Task("compare", pipeline.compare_maps, {"windows": windows}, deps=tuple(evals), nan_ok=("max_*",)))
    return tasks


def _label(name: str) -> str:
    return name.removeprefix("eval-")


def report(study_file: Path, out_dir: Path) -> WorkflowReport:
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rep = WorkflowReport()
    with h5py.File(study_file, "r") as f:
        tasks = f["tasks"]
        evals = sorted(n for n in tasks if n.startswith("eval-"))
        train = {n: tasks[n] for n in tasks if n.startswith("train-")}
        attrs = {n: _params(tasks[n]) for n in evals}
        groups: dict[str, list[str]] = {}
        for n in evals:
            a = attrs[n]
            groups.setdefault(_point_key(a["couplings"]), []).append(n)
        rows = []
        for n in evals:
            a = attrs[n]
            rows.append([_label(n), a["map_name"], _dim_of(a, tasks[n]), a["N"], _point_key(a["couplings"])])
        first = attrs[evals[0]] if evals else {}
        computed = [["model", first.get("model", "?")], ["chain length N", first.get("N", "?")],
                    ["observable", "C(t) = <Z_1 Z_2>(t) after a quench from |0...0>, exact: free fermions or ED"],
                    ["time window", f"[0, {float(tasks[evals[0]]['times'][-1]):g}]" if evals else "?"],
                    ["coupling points", "; ".join(sorted(groups))]]
        for n, g in sorted(train.items()):
            p = _params(g)
            computed.append([n, f"n0 = {p['n0']} (D = {2**p['n0']}), blocks to {p['n_final']} sites, exact targets to "
                                f"{p.get('exact_max_n') or p['n_final']}, T = {p['T']:g}, K = {p['K']}, "
                                f"{p['steps']} steps, consistency {p.get('consistency', 'joint')}"
                                + (f" in environments {', '.join(map(str, p['environments']))}"
                                   if len(p.get('environments', ())) else "")])
        rep.tables.append(Table(COMPUTED, ["item", "value"], computed))

        for key, names in sorted(groups.items()):
            N = attrs[names[0]]["N"]
            t_edge, exact_n = None, None
            for n in names:  # when the small solver's edge is first felt: its error against the exact N sites
                if attrs[n]["map_name"] == "exact_block":
                    exact_n, over = attrs[n]["n_final"], tasks[n]["abs_err"][()] > 1e-3
                    t_edge = float(tasks[n]["times"][()][np.argmax(over)]) if over.any() else None
            fig, (ax_c, ax_e) = plt.subplots(1, 2, figsize=(12, 4.2))
            exact_drawn = False
            for n in names:
                g = tasks[n]
                t = g["times"][()]
                if not exact_drawn:
                    ax_c.plot(t, g["exact"][()], "k-", lw=2.5, label=f"exact, N = {N}")
                    exact_drawn = True
                ax_c.plot(t, g["approx"][()], "--", lw=1.2, label=_label(n))
                ax_e.semilogy(t[1:], np.maximum(g["abs_err"][()][1:], 1e-16), lw=1.2, label=_label(n))
            for ax in (ax_c, ax_e):
                if t_edge is not None:
                    ax.axvline(t_edge, color="grey", ls=":", lw=1,
                               label=f"the {exact_n}-site chain is off by 1e-3")
                ax.set_xlabel("t")
                ax.legend(fontsize=6)
            ax_c.set_ylabel(r"$C(t)=\langle Z_1 Z_2\rangle(t)$")
            ax_e.set_ylabel(r"$|$error of $C(t)|$")
            ax_c.set_title(f"C(t), N = {N}, {key}")
            ax_e.set_title(f"|error| of C(t), N = {N}, {key}")
            fig.tight_layout()
            path = out_dir / f"olrg_curves{_file_key(key)}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            rep.figures.append(path)

        c = tasks["compare"]
        labels = [s.decode() if isinstance(s, bytes) else str(s) for s in c["labels"][()]]
        cols = [k for k in c if k.startswith("max_abs_err_t")]
        widest = max(cols, key=lambda k: float(k.removeprefix("max_abs_err_t")))
        err = {lab: float(c[widest][i]) for i, lab in enumerate(labels)}
        table_rows = []
        for i, lab in enumerate(labels):
            a = attrs[lab]
            seconds = float(c["train_seconds"][i]) + float(tasks[lab]["eval_seconds"][()])
            table_rows.append([_label(lab), _dim_of(a, tasks[lab]), *[sig3(float(c[k][i])) for k in cols],
                               sig3(seconds), _verdict(lab, a, err, labels, attrs)])
        head = ["map", "D / chi", *[f"max |err| [0, {k.removeprefix('max_abs_err_t')}]" for k in cols],
                "seconds (train + eval)", f"against TEBD at chi = D on [0, {widest.removeprefix('max_abs_err_t')}]"]
        rep.tables.append(Table("OLRG maps against the exact C(t)", head, table_rows))

        _error_vs_d(plt, rep, out_dir, labels, attrs, tasks, widest, err)
        rep.tables.append(Table("Time to accuracy (wall-clock seconds of one task each, this machine)",
                                ["map", "max |err|", "OLRG seconds", "smallest TEBD chi at least as accurate",
                                 "TEBD seconds"], _time_to_accuracy(labels, attrs, tasks, err, c)))
    return rep


def _params(g: Any) -> dict[str, Any]:
    import json

    return json.loads(g.attrs["params"])


def _point_key(couplings: dict[str, float]) -> str:
    return ", ".join(f"{k} = {v:g}" for k, v in sorted(couplings.items()))


def _file_key(key: str) -> str:
    return "_" + "".join(ch for ch in key.replace(" = ", "").replace(", ", "_") if ch.isalnum() or ch in "._-")


def _dim_of(a: dict[str, Any], g: Any) -> int:
    return int(g["chi"][()]) if a["map_name"] == "tebd" else 2 ** int(a["n0"])


def _tebd_peer(lab: str, a: dict[str, Any], labels: list[str], attrs: dict[str, dict[str, Any]]) -> str | None:
    """The TEBD evaluation at the same point with chi equal to this map's D."""
    for other in labels:
        b = attrs[other]
        if b["map_name"] == "tebd" and b["couplings"] == a["couplings"] and \
                int(b["map_options"].get("chi", 2 ** b["n0"])) == 2 ** int(a["n0"]):
            return other
    return None


def _verdict(lab: str, a: dict[str, Any], err: dict[str, float], labels: list[str],
             attrs: dict[str, dict[str, Any]]) -> str:
    if a["map_name"] in ("tebd", "exact_block"):
        return ""
    peer = _tebd_peer(lab, a, labels, attrs)
    if peer is None:
        return "no TEBD at chi = D"
    ratio = err[lab] / max(err[peer], 1e-300)
    word = "below" if ratio < 1 else "above"
    return f"{ratio:.3g}x TEBD ({word}{'; within 1/10' if ratio <= 0.1 else ''})"


def _error_vs_d(plt: Any, rep: WorkflowReport, out_dir: Path, labels: list[str], attrs: dict[str, dict[str, Any]],
                tasks: Any, widest: str, err: dict[str, float]) -> None:
    """Max |error| versus D per map kind and point: drawn only when some series has two D or more."""
    series: dict[str, list[tuple[int, float]]] = {}
    for lab in labels:
        a = attrs[lab]
        if a["map_name"] == "exact_block":
            continue
        name = _label(lab).rsplit("-D", 1)[0] if a["map_name"] != "tebd" else "tebd"
        series.setdefault(f"{name}, {_point_key(a['couplings'])}", []).append((_dim_of(a, tasks[lab]), err[lab]))
    multi = {k: sorted(v) for k, v in series.items() if len({d for d, _ in v}) >= 2}
    if not multi:
        return
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for k, v in sorted(multi.items()):
        ax.loglog([d for d, _ in v], [max(e, 1e-16) for _, e in v], "o-", label=k)
    ax.set_xlabel("D (OLRG) / chi (TEBD)")
    ax.set_ylabel(f"max |error| of C(t) on [0, {widest.removeprefix('max_abs_err_t')}]")
    ax.set_title("error versus kept dimension")
    ax.legend(fontsize=6)
    fig.tight_layout()
    path = out_dir / "olrg_error_vs_D.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    rep.figures.append(path)


def _time_to_accuracy(labels: list[str], attrs: dict[str, dict[str, Any]], tasks: Any, err: dict[str, float],
                      c: Any) -> list[list[Any]]:
    rows = []
    train_s = {lab: float(c["train_seconds"][i]) for i, lab in enumerate(labels)}
    for lab in labels:
        a = attrs[lab]
        if a["map_name"] in ("tebd", "exact_block"):
            continue
        ours = train_s[lab] + float(tasks[lab]["eval_seconds"][()])
        peers = sorted((int(tasks[o]["chi"][()]), o) for o in labels
                       if attrs[o]["map_name"] == "tebd" and attrs[o]["couplings"] == a["couplings"])
        hit = next(((chi, o) for chi, o in peers if err[o] <= err[lab]), None)
        rows.append([_label(lab), sig3(err[lab]), sig3(ours),
                     hit[0] if hit else ("none of " + ", ".join(str(ch) for ch, _ in peers) if peers
                                         else "no TEBD in this study"),
                     sig3(float(tasks[hit[1]]["eval_seconds"][()])) if hit else ""])
    return rows
