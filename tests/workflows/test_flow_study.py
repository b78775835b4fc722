"""flow_study: the graph, one-line rejection of bad parameters, the library steps at toy size, and a reduced study
through the command line on a LocalCluster, checked against plain HMC (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from olrg_hpc import store
from olrg_hpc.config import load_study
from olrg_hpc.errors import UserError
from olrg_hpc.flows import pipeline
from olrg_hpc.flows.coarse import refine_sigma
from olrg_hpc.flows.model import GaussianPrior, make_flow, sample_flow
from olrg_hpc.flows.priors import KINDS, EnsembleDraws, params_from_tree, refine_init
from olrg_hpc.jaxtiming import compile_clock
from olrg_hpc.lattice.ensemble import action_for, hmc_ensemble
from olrg_hpc.tasks import NonFiniteResult, check_finite
from workflows import flow_study, get_workflow

EXE = [sys.executable, "-m", "olrg_hpc.cli"]

STUDY = """\
study: flow-test
workflow: flow_study
seed: 3
params:
{params}
"""


def _params(**extra: object) -> flow_study.Params:
    return flow_study.Params.model_validate(
        {"points": [{"L": 8, "beta": 0.5, "beta_coarse": 0.45}, {"L": 12, "beta": 0.55}], **extra})


class TestGraph:
    def test_shape_and_dependencies(self) -> None:
        by = {t.name: t for t in flow_study.build(_params())}
        # per L: 2 ensembles, gather, pretrain, 3 trainings, 3 flow-MH, 1 flow-HMC, 1 HMC; one compare
        assert len(by) == 2 * 12 + 1
        assert by["train-coarse-L8"].deps == ("gather-L4-beta0.45",)
        assert by["gather-L4-beta0.45"].deps == ("ens-L4-beta0.45-r0", "ens-L4-beta0.45-r1")
        assert by["train-warm-L8"].deps == ("pretrain-gaussian-L4-beta0.45",)
        assert by["pretrain-gaussian-L6-beta0.55"].params["point"] == {"L": 6, "beta": 0.55, "lam": 0.5}
        assert set(by["imh-coarse-L12"].deps) == {"train-coarse-L12", "gather-L6-beta0.55"}
        assert by["fhmc-gaussian-L8"].deps == ("train-gaussian-L8", "hmc-L8")  # starts from HMC's configurations
        assert by["fhmc-gaussian-L8"].params["start"] == "hmc"
        assert len(by["compare"].deps) == 2 * 5 and "hmc-L12" in by["compare"].deps
        prior = {t.name: t for t in flow_study.build(_params(flow_hmc={"start": "prior"}))}
        assert prior["fhmc-gaussian-L8"].deps == ("train-gaussian-L8",)

    def test_multiple_proposal_runs_draw_as_many_proposals(self) -> None:
        """imh.candidates [1, 64]: the plain chain keeps its task name and arguments and an imh64 task per kind
        without a prior ensemble and L runs n_steps and n_therm / 63, rounded up, with the same flow and inputs;
        compare sees both. The coarse kind (an HMC ensemble prior, whose cost model counts one step per proposal)
        gets none."""
        imh = {"n_steps": 16000, "n_therm": 200}
        plain = {t.name: t for t in flow_study.build(_params(imh=imh))}
        both = {t.name: t for t in flow_study.build(_params(imh={**imh, "candidates": [1, 64]}))}
        assert set(both) - set(plain) == {f"imh64-{v}-L{ell}" for v in ("gaussian", "warm") for ell in (8, 12)}
        assert both["imh-warm-L8"].params == plain["imh-warm-L8"].params
        assert plain["imh-warm-L8"].params["candidates"] == 1
        multi = both["imh64-warm-L12"]
        assert multi.params["candidates"] == 64 and multi.params["n_steps"] == 254 and multi.params["n_therm"] == 4
        single = both["imh-warm-L12"]
        assert multi.deps == single.deps and multi.params["flow"] == single.params["flow"]
        assert multi.params["inputs"] == single.params["inputs"] == {"flow": "train-warm-L12"}
        assert {"imh64-warm-L12", "imh-warm-L12"} <= set(both["compare"].deps)

    def test_free_field_layer_only_after_a_gaussian_prior(self) -> None:
        """Trainings and samplers of one variant share its flow; the coarse-ensemble variants never get the layer."""
        by = {t.name: t for t in flow_study.build(_params(flow={"free_field": True}, flow_hmc={"variants": ["coarse"]},
                                                          variants=["gaussian", "coarse", "coarse_noise", "warm"]))}
        with_layer = {n: by[n].params["flow"]["free_field"] for n in by if "flow" in by[n].params}
        assert {n for n, f in with_layer.items() if not f} == {
            f"{k}-{v}-L{ell}" for k in ("train", "imh") for v in ("coarse", "coarse_noise") for ell in (8, 12)} | {
            "fhmc-coarse-L8", "fhmc-coarse-L12"}
        assert with_layer["pretrain-gaussian-L4-beta0.45"] and with_layer["train-warm-L12"]
        assert with_layer["imh-gaussian-L8"]

    def test_pointwise_maps_in_every_flow(self) -> None:
        """flow.pointwise reaches every kind's training and sampler tasks; 0 (the default) everywhere otherwise."""
        variants = ["gaussian", "coarse_bilinear", "warm"]
        on = {t.name: t for t in flow_study.build(_params(variants=variants, flow={"pointwise": 2}))}
        flows = {n: t.params["flow"] for n, t in on.items() if "flow" in t.params}
        assert flows and all(f["pointwise"] == 2 for f in flows.values())
        off = {t.name: t for t in flow_study.build(_params(variants=variants))}
        assert all(t.params["flow"]["pointwise"] == 0 for t in off.values() if "flow" in t.params)

    def test_sublattice_heads_after_a_prior_on_the_cell(self) -> None:
        """Heads per sublattice go into the flows of the coarse-lattice priors (built on the 2 x 2 cell), not into
        the others; flow.sublattice: true gives them to every flow."""
        variants = ["gaussian", "coarse", "coarse_bilinear", "same_L", "warm"]
        pts = [{"L": 8, "beta": 0.5, "beta_coarse": 0.45, "beta_prior": 0.45}]
        by = {t.name: t for t in flow_study.build(_params(points=pts, variants=variants))}
        flows = {n: by[n].params["flow"] for n in by if "flow" in by[n].params}
        assert {n for n, f in flows.items() if f["sublattice"]} == {
            f"{k}-{v}-L8" for k in ("train", "imh") for v in ("coarse", "coarse_bilinear")}
        on = flow_study.build(_params(points=pts, variants=variants, flow={"sublattice": True}))
        assert all(t.params["flow"]["sublattice"] for t in on if "flow" in t.params)

    def test_equal_training_compute(self) -> None:
        by = {t.name: t for t in flow_study.build(_params())}
        steps = by["train-gaussian-L8"].params["steps"]
        assert by["train-coarse-L8"].params["steps"] == steps
        assert by["pretrain-gaussian-L4-beta0.45"].params["steps"] + by["train-warm-L8"].params["steps"] == steps
        assert len({by[n].params["batch_size"] for n in by if "train" in n}) == 1

    def test_warm_ladder(self) -> None:
        """A warm flow starts from the warm flow of the study's point at (L/2, beta_coarse) (whatever the order of the
        points); without that point, or with ladder off, from a fresh pretraining at L/2."""
        pts = [{"L": 32, "beta": 0.66, "beta_coarse": 0.634}, {"L": 8, "beta": 0.576},
               {"L": 16, "beta": 0.634, "beta_coarse": 0.576}, {"L": 64, "beta": 0.674, "beta_coarse": 0.65}]
        by = {t.name: t for t in flow_study.build(_params(points=pts, variants=["gaussian", "warm"]))}
        assert by["train-warm-L8"].deps == ("pretrain-gaussian-L4-beta0.576",)
        assert by["train-warm-L16"].deps == ("train-warm-L8",)
        assert by["train-warm-L32"].deps == ("train-warm-L16",)
        assert by["train-warm-L64"].deps == ("pretrain-gaussian-L32-beta0.65",)  # no study point at beta 0.65
        assert not any(n.startswith("pretrain-gaussian-L8") or n.startswith("pretrain-gaussian-L16") for n in by)
        n_fine = by["train-warm-L8"].params["steps"]
        assert all(by[f"train-warm-L{ell}"].params["steps"] == n_fine for ell in (16, 32, 64))
        gaussian = [n for n in by if n.startswith("train-gaussian")]
        assert gaussian == [f"train-gaussian-L{ell}" for ell in (8, 16, 32, 64)]  # points built in order of L
        off = {t.name: t for t in flow_study.build(_params(points=pts, variants=["warm"], training={"ladder": False},
                                                           flow_hmc={"variants": ["warm"]}))}
        assert off["train-warm-L16"].deps == ("pretrain-gaussian-L8-beta0.576",)

    def test_coarse_prior_ladder(self) -> None:
        """A coarse-prior flow starts from the same variant's flow at the study's point (L/2, beta_coarse) and trains
        the fine share of the steps there; the smallest rung, and every rung with ladder off, trains all of them
        from scratch. same_L has no ladder."""
        pts = [{"L": 8, "beta": 0.576}, {"L": 16, "beta": 0.634, "beta_coarse": 0.576, "beta_prior": 0.61},
               {"L": 32, "beta": 0.66, "beta_coarse": 0.634}]
        variants = ["coarse_bilinear", "coarse"]
        by = {t.name: t for t in flow_study.build(_params(points=pts, variants=[*variants, "warm"],
                                                          flow_hmc={"variants": []}))}
        steps, n_fine = by["train-coarse-L8"].params["steps"], by["train-warm-L16"].params["steps"]
        for v in variants:
            assert by[f"train-{v}-L8"].deps == ("gather-L4-beta0.576",)
            assert by[f"train-{v}-L16"].deps == ("gather-L8-beta0.576", f"train-{v}-L8")
            assert by[f"train-{v}-L32"].deps == ("gather-L16-beta0.634", f"train-{v}-L16")
            assert by[f"train-{v}-L8"].params["steps"] == steps
            assert by[f"train-{v}-L16"].params["steps"] == by[f"train-{v}-L32"].params["steps"] == n_fine < steps
            assert set(by[f"imh-{v}-L32"].deps) == {f"train-{v}-L32", "gather-L16-beta0.634"}
        same = {t.name: t for t in flow_study.build(_params(points=pts[1:2], variants=["same_L"],
                                                            flow_hmc={"variants": []}))}
        assert same["train-same_L-L16"].deps == ("gather-L16-beta0.61",)
        off = {t.name: t for t in flow_study.build(_params(points=pts, variants=variants, training={"ladder": False},
                                                           flow_hmc={"variants": []}))}
        assert off["train-coarse-L32"].deps == ("gather-L16-beta0.634",)
        assert off["train-coarse-L32"].params["steps"] == steps

    def test_pretrain_rungs_give_every_flow_the_same_steps(self) -> None:
        """With rung 'pretrain', a warm or coarse-prior flow at L starts from its own training at (L/2, beta_coarse)
        for the coarse share of the steps, with that point's prior (a coarse-prior one: the study's point there, whose
        beta_coarse gives the ensemble), so that coarse + fine steps equal the Gaussian flow's. The study's flows at
        L/2 are left as they are; without a point at L/2 a coarse-prior flow trains from scratch."""
        pts = [{"L": 16, "beta": 0.634, "beta_coarse": 0.576}, {"L": 32, "beta": 0.66, "beta_coarse": 0.634}]
        training = {"rung": "pretrain", "warm_fraction": 0.25, "steps": 2000}
        by = {t.name: t for t in flow_study.build(_params(points=pts, variants=["gaussian", "warm", "coarse_bilinear"],
                                                          training=training, flow_hmc={"variants": []}))}
        steps = by["train-gaussian-L32"].params["steps"]
        pre = by["pretrain-coarse_bilinear-L16-beta0.634"]
        assert pre.deps == ("gather-L8-beta0.576",)
        assert pre.params["point"]["L"] == 16 and pre.params["prior_point"] == {"L": 8, "beta": 0.576, "lam": 0.5}
        assert by["train-coarse_bilinear-L32"].deps == ("gather-L16-beta0.634", pre.name)
        assert by["train-warm-L32"].deps == ("pretrain-gaussian-L16-beta0.634",)
        for v, first in (("coarse_bilinear", pre), ("warm", by["pretrain-gaussian-L16-beta0.634"])):
            assert first.params["steps"] == steps // 4
            assert first.params["steps"] + by[f"train-{v}-L32"].params["steps"] == steps
        assert by["train-coarse_bilinear-L16"].params["steps"] == steps  # the smallest rung trains from scratch
        assert by["train-coarse_bilinear-L16"].deps == ("gather-L8-beta0.576",)
        assert "pretrain-coarse_bilinear-L8-beta0.576" not in by

    def test_multilevel_ladder(self) -> None:
        """A multilevel flow at L refines the study's multilevel flow at (L/2, beta_coarse) (its flow spec nested
        under "refine", field factor sqrt(beta / beta_coarse)); the smallest rung refines the Gaussian pretraining at
        L/2, the same task the warm flow starts from. Every rung trains the fine share of the steps; its couplings
        have heads and no free-field layer; the sampler has the training's flow. Ladder off: each refines a fresh
        pretraining."""
        pts = [{"L": 32, "beta": 0.66, "beta_coarse": 0.634}, {"L": 8, "beta": 0.576},
               {"L": 16, "beta": 0.634, "beta_coarse": 0.576}]
        variants = ["gaussian", "warm", "multilevel"]
        tasks = flow_study.build(_params(points=pts, variants=variants, flow={"free_field": True}))
        by = {t.name: t for t in tasks}
        assert len(by) == len(tasks)  # the shared pretraining is one task
        assert by["train-multilevel-L8"].deps == by["train-warm-L8"].deps == ("pretrain-gaussian-L4-beta0.576",)
        assert by["train-multilevel-L16"].deps == ("train-multilevel-L8",)
        assert by["train-multilevel-L32"].deps == ("train-multilevel-L16",)
        flows = {ell: by[f"train-multilevel-L{ell}"].params["flow"] for ell in (8, 16, 32)}
        assert flows[8]["refine"]["coarse"] == by["pretrain-gaussian-L4-beta0.576"].params["flow"]
        assert flows[8]["refine"]["coarse"]["free_field"]
        for ell, coarse_beta, beta in ((16, 0.576, 0.634), (32, 0.634, 0.66)):
            assert flows[ell]["refine"]["coarse"] == flows[ell // 2]
            assert flows[ell]["refine"]["scale"] == pytest.approx((beta / coarse_beta) ** 0.5)
        assert by["train-multilevel-L16"].params["inputs"] == {"below": "train-multilevel-L8"}
        assert all(f["sublattice"] and not f["free_field"] for f in flows.values())
        assert by["imh-multilevel-L32"].params["flow"] == flows[32]
        n_coarse, n_fine = _params(points=pts).training.warm_split()
        assert by["pretrain-gaussian-L4-beta0.576"].params["steps"] == n_coarse
        assert all(by[f"train-multilevel-L{ell}"].params["steps"] == n_fine for ell in (8, 16, 32))
        off = {t.name: t for t in flow_study.build(_params(points=pts, variants=["multilevel"],
                                                           training={"ladder": False}, flow_hmc={"variants": []}))}
        assert off["train-multilevel-L32"].deps == ("pretrain-gaussian-L16-beta0.634",)
        pre = off["pretrain-gaussian-L16-beta0.634"]
        assert off["train-multilevel-L32"].params["flow"]["refine"]["coarse"] == pre.params["flow"]

    def test_tuned_md_steps_reach_the_hmc_tasks(self) -> None:
        """tune_acceptance reaches plain HMC and flow-HMC, each its own; unset, the fixed n_steps are used."""
        tuned = {t.name: t for t in flow_study.build(_params(hmc={"tune_acceptance": 0.8},
                                                             flow_hmc={"tune_acceptance": 0.7}))}
        assert tuned["hmc-L8"].params["tune_acceptance"] == 0.8
        assert tuned["fhmc-gaussian-L12"].params["tune_acceptance"] == 0.7
        plain = {t.name: t for t in flow_study.build(_params())}
        assert plain["hmc-L8"].params["tune_acceptance"] is None
        assert plain["fhmc-gaussian-L12"].params["tune_acceptance"] is None

    def test_one_configuration_priors(self) -> None:
        """coarse_bilinear / coarse_noise read the gathered ensemble (training and sampling) and get prior_sigma."""
        p = _params(variants=["gaussian", "coarse_bilinear", "coarse_noise"], prior_sigma=0.3)
        by = {t.name: t for t in flow_study.build(p)}
        for v in ("coarse_bilinear", "coarse_noise"):
            assert by[f"train-{v}-L8"].deps == ("gather-L4-beta0.45",)
            assert set(by[f"imh-{v}-L8"].deps) == {f"train-{v}-L8", "gather-L4-beta0.45"}
            for n in (f"train-{v}-L8", f"imh-{v}-L8"):
                assert by[n].params["prior_sigma"] == 0.3
                assert by[n].params["prior_point"] == {"L": 4, "beta": 0.45, "lam": 0.5}
        default = {t.name: t for t in flow_study.build(_params(variants=["gaussian", "coarse_noise"]))}
        assert "prior_sigma" not in default["train-coarse_noise-L8"].params  # from the ensemble

    def test_same_L_prior_and_shared_ensembles(self) -> None:
        """same_L draws from an ensemble at (L, beta_prior); an ensemble point two variants need is run once (here
        (8, 0.45): the same_L prior at L = 8 and the coarse prior of L = 16), and same_L gets no free-field layer."""
        pts = [{"L": 8, "beta": 0.5, "beta_coarse": 0.45, "beta_prior": 0.45},
               {"L": 16, "beta": 0.55, "beta_coarse": 0.45, "beta_prior": 0.5}]
        by = {t.name: t for t in flow_study.build(_params(points=pts, variants=["gaussian", "coarse", "same_L"],
                                                          flow={"free_field": True}))}
        assert sorted(n for n in by if n.startswith("gather-")) == [
            "gather-L16-beta0.5", "gather-L4-beta0.45", "gather-L8-beta0.45"]
        assert sum(n.startswith("ens-") for n in by) == 3 * 2  # three ensemble points, two replicas each
        assert by["ens-L16-beta0.5-r1"].params["point"] == {"L": 16, "beta": 0.5, "lam": 0.5}
        assert by["train-same_L-L8"].deps == by["train-coarse-L16"].deps == ("gather-L8-beta0.45",)
        assert set(by["imh-same_L-L16"].deps) == {"train-same_L-L16", "gather-L16-beta0.5"}
        for n in ("train-same_L-L16", "imh-same_L-L16"):
            assert by[n].params["prior_point"] == {"L": 16, "beta": 0.5, "lam": 0.5}
            assert not by[n].params["flow"]["free_field"]
        assert by["train-coarse-L16"].params["prior_point"] == {"L": 8, "beta": 0.45, "lam": 0.5}

    def test_gaussian_only_needs_no_ensembles(self) -> None:
        names = [t.name for t in flow_study.build(_params(variants=["gaussian"]))]
        assert not any(n.startswith(("ens-", "gather-", "pretrain-")) for n in names)
        assert {"imh-gaussian-L8", "fhmc-gaussian-L12", "hmc-L8", "compare"} <= set(names)


@pytest.mark.parametrize(("params", "where"), [
    ("  points: [{L: 7, beta: 0.5}]", "params.points.0: Value error, L must be even"),
    ("  points: [{L: 8, beta: 0.5}, {L: 8, beta: 0.6}]", "params.points: each L at most once"),
    ("  points: [{L: 8, beta: 0.5}]\n  variants: [coarse]", "params.flow_hmc: variants: 'gaussian' is not trained"),
    ("  points: [{L: 8, beta: 0.5}]\n  training: {steps: 1001, metrics_every: 100}",
     "params.training: steps (1001) must be a multiple of metrics_every"),
    ("  points: [{L: 8, beta: 0.5}]\n  flow: {n_layer: 4}", "params.flow.n_layer: unknown key (did you mean n_layers?"),
    ("  points: [{L: 8, beta: -1}]", "params.points.0.beta"),
    ("  points: [{L: 8, beta: 0.5}]\n  prior_sigma: 0", "params.prior_sigma"),
    ("  points: [{L: 8, beta: 0.5}]\n  variants: [gaussian, coarse_bilinar]", "params.variants.1"),
    ("  points: [{L: 8, beta: 0.5}]\n  hmc: {tune_acceptance: 1.5}", "params.hmc.tune_acceptance"),
    ("  points: [{L: 8, beta: 0.5}]\n  training: {ladder: maybe}", "params.training.ladder"),
    ("  points: [{L: 8, beta: 0.5}]\n  training: {ladder: false, rung: pretrain}",
     "params.training: Value error, rung 'pretrain' needs ladder: true"),
    ("  points: [{L: 8, beta: 0.5}]\n  training: {rung: first}", "params.training.rung"),
    ("  points: [{L: 8, beta: 0.5}]\n  flow_hmc: {n_chains: 16}\n  hmc: {n_chains: 8}",
     "params.hmc: Value error, n_chains (8) is below flow_hmc.n_chains (16)"),
    ("  points: [{L: 8, beta: 0.5}]\n  flow_hmc: {start: hot}", "params.flow_hmc.start"),
    ("  points: [{L: 8, beta: 0.5}]\n  imh: {block: 0}", "params.imh.block"),
    ("  points: [{L: 8, beta: 0.5}]\n  imh: {candidates: [1, 64, 1]}",
     "params.imh.candidates: Value error, distinct counts of at least 1 (got [1, 64, 1])"),
    ("  points: [{L: 8, beta: 0.5}]\n  imh: {candidates: [0]}",
     "params.imh.candidates: Value error, distinct counts of at least 1 (got [0])"),
    ("  points: [{L: 8, beta: 0.5, beta_prior: 0.4}, {L: 16, beta: 0.6}]\n  variants: [gaussian, same_L]",
     "points[1] (L = 16): the same_L variant needs beta_prior"),
    ("  points: [{L: 8, beta: 0.5}]\n  flow: {kind: tutorial, free_field: true}",
     "params.flow: Value error, free_field needs kind z2 (got kind 'tutorial')"),
    ("  points: [{L: 8, beta: 0.5}]\n  flow: {kind: tutorial, pointwise: 2}",
     "params.flow: Value error, pointwise needs kind z2 (got kind 'tutorial')"),
    ("  points: [{L: 8, beta: 0.5}]\n  flow: {pointwise: -1}", "params.flow.pointwise"),
    ("  points: [{L: 8, beta: 0.5}]\n  variants: [gaussian, multilevel]\n  training: {rung: pretrain}",
     "params.training: Value error, the multilevel variant refines the study's flow at L/2"),
    ("  points: [{L: 8, beta: 0.5}, {L: 6, beta: 0.5}]\n  variants: [gaussian, multilevel]",
     "params.variants: Value error, points[1] (L = 6): the multilevel variant needs L divisible by 4"),
])
def test_bad_params_are_one_line(tmp_path: Path, params: str, where: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(STUDY.format(params=params))
    with pytest.raises(UserError) as err:
        load_study(cfg, get_workflow)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{cfg}: ")
    assert where.replace("Value error, ", "") in msg, msg


def test_bad_params_through_the_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(STUDY.format(params="  points: [{L: 7, beta: 0.5}]"))
    out = subprocess.run([*EXE, "validate", str(cfg)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "bad.yaml: params.points.0: L must be even" in out.stderr


# ------------------------------------------------------------------------------------------------ library steps
TINY_FLOW = {"kind": "z2", "n_layers": 2, "hidden": [], "kernel_size": 3}  # the 37-parameter model
FINE = {"L": 4, "beta": 0.5, "lam": 0.5}
COARSE = {"L": 2, "beta": 0.45, "lam": 0.5}
TRAIN = {"flow": TINY_FLOW, "batch_size": 16, "lr": 1e-2, "cosine": False, "metrics_every": 2, "metrics_batch": 64}
ENS = {"prior_ensemble": "gather"}  # the roles of the dependencies in these calls
SAMPLE = {"flow": "train", "prior_ensemble": "gather"}


def _through_shard(tmp_path: Path, name: str, result: dict) -> dict:
    """What a dependent task receives: the result written to a shard and read back."""
    path = tmp_path / f"{name}.h5"
    store.write_shard(path, result, {})
    return store.read_shard(path)


def test_compile_clock_separates_compilation() -> None:
    f = jax.jit(lambda x: jnp.sin(x) @ jnp.cos(x).T)
    x = jnp.ones((3, 3)) * 0.4321
    with compile_clock() as first:
        jax.block_until_ready(f(x))
    with compile_clock() as second:
        jax.block_until_ready(f(x))
    assert first["compile_s"] > 0 and second["compile_s"] == 0
    assert first["run_s"] == pytest.approx(first["wall_s"] - first["compile_s"])


def test_compile_clock_counts_its_own_thread_only() -> None:
    """Two tasks in two threads of one worker: a compilation in the other thread is not taken off this thread's
    clock (a shared counter made a task's run seconds read 0), and a compilation in the other thread's block is."""
    import threading

    other: dict[str, float] = {}

    def compile_elsewhere() -> None:
        with compile_clock() as clock:
            jax.block_until_ready(jax.jit(lambda x: jnp.tanh(x) * 2.5 + jnp.cos(x))(jnp.ones(5)))
        other.update(clock)

    with compile_clock() as mine:
        worker = threading.Thread(target=compile_elsewhere)
        worker.start()
        worker.join()
    assert other["compile_s"] > 0 and mine["compile_s"] == 0 and mine["run_s"] == mine["wall_s"]


def test_library_steps_at_toy_size(tmp_path: Path) -> None:
    ens = {f"ens-r{r}": _through_shard(tmp_path, f"ens{r}", hmc_ensemble(
        COARSE, n_chains=2, n_therm=5, n_traj=10, meas_every=1, tau=1.0, n_steps=4, integrator="leapfrog",
        seed=r + 1, replica=r)) for r in range(2)}
    gather = _through_shard(tmp_path, "gather", pipeline.gather_coarse_ensemble(ens))
    assert gather["configs"].shape == (40, 2, 2) and gather["configs"].dtype == np.float32

    pre = _through_shard(tmp_path, "pre", pipeline.train_flow_task(COARSE, "gaussian", steps=4, seed=1, **TRAIN))
    # the parameters as checkpoint leaves, which the flow's own tree reads back
    assert sorted(pre["params"]) == [f"{i:05d}" for i in range(len(pre["params"]))]
    back = params_from_tree(make_flow(TINY_FLOW), (COARSE["L"],) * 2, pre["params"])
    assert back["params"]["layers_2"]["log_scale"].shape == ()
    np.testing.assert_array_equal(pre["metric_step"], [0, 2, 4])
    warm = pipeline.train_flow_task(FINE, "warm", steps=2, seed=2, deps={"pretrain": pre}, inputs={"below": "pretrain"},
                                    **TRAIN)
    np.testing.assert_array_equal(warm["metric_step"], [4, 6])  # continues the coarse training's axes
    assert warm["metric_seconds"][0] >= pre["metric_seconds"][-1] - 1e-9
    assert warm["total_train_seconds"] == pytest.approx(pre["train_seconds"] + warm["train_seconds"])
    assert pre["work_offset"] == 0 and warm["work_offset"] == pytest.approx(4 * (COARSE["L"] / FINE["L"]) ** 2)

    trained = _through_shard(tmp_path, "coarse", pipeline.train_flow_task(
        FINE, "coarse", steps=2, seed=3, prior_point=COARSE, deps={"gather": gather}, inputs=ENS, **TRAIN))
    assert trained["n_params"] == 37 and np.all(np.isfinite(trained["loss"]))
    # the prior's ensemble is part of what the flow cost: its seconds axis starts at the ensemble's HMC seconds
    assert trained["seconds_offset"] == trained["metric_seconds"][0] == pytest.approx(gather["run_seconds"])
    assert trained["total_train_seconds"] == pytest.approx(gather["run_seconds"] + trained["train_seconds"])
    # a rung of the coarse-prior ladder: starts from the flow below (here one at the same L, which the library
    # does not check) and continues its axes; its seconds add this prior's ensemble to everything below
    rung = pipeline.train_flow_task(FINE, "coarse", steps=2, seed=6, prior_point=COARSE,
                                    deps={"gather": gather, "below": trained}, inputs={**ENS, "below": "below"},
                                    **TRAIN)
    np.testing.assert_array_equal(rung["metric_step"], [2, 4])
    # two Adam steps (each at most about lr per parameter) from the flow below, not a fresh initialisation
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.max(np.abs(np.asarray(a) - np.asarray(b))),
                                         dict(rung["params"]), dict(trained["params"])))
    assert max(moved) <= 2.02 * TRAIN["lr"]
    assert rung["seconds_offset"] == pytest.approx(trained["total_train_seconds"] + gather["run_seconds"])
    assert rung["metric_seconds"][0] == pytest.approx(rung["seconds_offset"])
    assert rung["work_offset"] == pytest.approx(2.0)  # the flow below trained 2 steps at the same L here
    imh = pipeline.flow_imh_task(FINE, "coarse", TINY_FLOW, n_chains=4, n_steps=30, n_therm=5, seed=4,
                                 prior_point=COARSE, deps={"train": trained, "gather": gather}, inputs=SAMPLE)
    kept = 30 - (imh["therm_steps"] - 5)  # thermalisation follows tau_int (test_thermalisation_follows_tau_int)
    assert imh["M"].shape == imh["accepted"].shape == (kept, 4) and 0 < imh["acceptance"] < 1
    with pytest.raises(ValueError, match="candidates > 1 needs a prior without an HMC ensemble, not the coarse"):
        pipeline.flow_imh_task(FINE, "coarse", TINY_FLOW, n_chains=4, n_steps=30, n_therm=5, seed=4, candidates=4,
                               prior_point=COARSE, deps={"train": trained, "gather": gather}, inputs=SAMPLE)
    # the coarse prior draws 4 of the N independent configurations per proposal: c_prior = 4 x the ensemble's HMC
    # seconds (both replicas) / N per proposal (module docstring, "Prior reuse and cost")
    n_ind = imh["prior_independent_configs"]
    assert 0 < n_ind <= 40 and imh["prior_reuse"] == pytest.approx(4 * 4 * 35 / n_ind)
    hmc_s = ens["ens-r0"]["run_seconds"] + ens["ens-r1"]["run_seconds"]
    assert gather["run_seconds"] == pytest.approx(hmc_s) and hmc_s > 0
    assert imh["prior_seconds_per_sample"] == pytest.approx(4 * hmc_s / n_ind)
    # n proposals and N configurations: variance ~ V (1/n + 4/N); at the cheapest N an independent sample costs
    # 2 tau (sqrt(c_flow) + sqrt(c_prior))^2, more than one fresh draw per proposal (c_flow + c_prior)
    two_tau = 2 * imh["summary"]["tau_int_M2"]
    c_f, c_p = imh["flow_seconds_per_sample"], imh["prior_seconds_per_sample"]
    assert c_f > 0 and imh["seconds_per_sample"] == pytest.approx((np.sqrt(c_f) + np.sqrt(c_p)) ** 2)
    assert imh["seconds_per_sample"] > c_f + c_p
    assert imh["cost_per_independent"] == pytest.approx(imh["seconds_per_sample"] * two_tau)
    assert imh["flow_cost_per_independent"] == pytest.approx(c_f * two_tau)
    hmc = pipeline.hmc_task(FINE, n_chains=2, n_therm=5, n_traj=20, meas_every=1, tau=1.0, n_steps=5,
                            integrator="leapfrog", seed=5)
    assert hmc["n_steps"] == 5 and "tuning_steps" not in hmc
    tuned = pipeline.hmc_task(FINE, n_chains=2, n_therm=5, n_traj=20, meas_every=1, tau=1.0, n_steps=5,
                              integrator="leapfrog", seed=5, tune_acceptance=0.8)
    pilots = dict(zip(tuned["tuning_steps"], tuned["tuning_acceptance"], strict=True))
    assert pilots[tuned["n_steps"]] >= 0.8 and tuned["tune_seconds"] > 0
    fh = pipeline.flow_hmc_task(FINE, "coarse", TINY_FLOW, n_chains=2, n_traj=10, n_therm=2, tau=1.0, n_steps=3,
                                integrator="leapfrog", seed=6, prior_point=COARSE, tune_acceptance=0.8,
                                deps={"train": trained, "gather": gather}, inputs=SAMPLE)
    assert dict(zip(fh["tuning_steps"], fh["tuning_acceptance"], strict=True))[fh["n_steps"]] >= 0.8
    assert fh["start"] == "prior"
    # start "hmc": F^-1 of HMC's final configurations; trajectories of length 1e-4 barely move them, so every
    # chain's first |M| is that of its HMC configuration (a start from F or from prior draws misses by O(0.1))
    hmc = _through_shard(tmp_path, "hmc", hmc)
    assert hmc["final_configs"].shape == (2, 4, 4)
    fh = pipeline.flow_hmc_task(FINE, "coarse", TINY_FLOW, n_chains=2, n_traj=10, n_therm=0, tau=1e-4, n_steps=1,
                                integrator="leapfrog", seed=6, prior_point=COARSE, start="hmc",
                                deps={"train": trained, "gather": gather, "hmc": hmc},
                                inputs={**SAMPLE, "hmc_start": "hmc"})
    assert fh["start"] == "hmc" and fh["acceptance"] == 1.0
    np.testing.assert_allclose(fh["M"][0], hmc["final_configs"].mean(axis=(1, 2)), atol=1e-3)
    with pytest.raises(ValueError, match="needs 3 configurations of 4x4, the HMC run holds 2"):
        pipeline.flow_hmc_task(FINE, "coarse", TINY_FLOW, n_chains=3, n_traj=10, n_therm=0, tau=1.0, n_steps=1,
                               integrator="leapfrog", seed=6, start="hmc", deps={"train": trained, "hmc": hmc},
                               inputs={"flow": "train", "hmc_start": "hmc"})
    table = pipeline.compare_samplers({"imh-coarse-L4": imh, "hmc-L4": hmc})
    assert list(table["method"]) == ["HMC", "flow-MH"]
    assert table["pull_chi2"][0] == 0.0 and np.isfinite(table["pull_chi2"][1])

    bil = pipeline.train_flow_task(FINE, "coarse_bilinear", steps=2, seed=3, prior_point=COARSE,
                                   deps={"gather": gather}, inputs=ENS, **TRAIN)
    assert np.all(np.isfinite(bil["loss"])) and bil["variant"] == "coarse_bilinear"

    # same_L: an ensemble at the fine L and a smaller beta; a coarse ensemble is refused by shape
    near = {**FINE, "beta": 0.45}
    same_gather = pipeline.gather_coarse_ensemble({"r0": _through_shard(tmp_path, "ens_same", hmc_ensemble(
        near, n_chains=2, n_therm=5, n_traj=10, meas_every=1, tau=1.0, n_steps=4, integrator="leapfrog", seed=7,
        replica=0))})
    same = pipeline.train_flow_task(FINE, "same_L", steps=2, seed=3, prior_point=near, deps={"gather": same_gather},
                                    inputs=ENS, **TRAIN)
    assert np.all(np.isfinite(same["loss"])) and same["variant"] == "same_L"
    imh = pipeline.flow_imh_task(FINE, "same_L", TINY_FLOW, n_chains=4, n_steps=30, n_therm=5, seed=4,
                                 prior_point=near, deps={"train": same, "gather": same_gather}, inputs=SAMPLE)
    assert 0 < imh["acceptance"] <= 1
    # 4 x 35 proposals from 20 configurations of 2 chains x 10 trajectories, at most 20 of them independent
    assert imh["prior_independent_configs"] <= 20 and imh["prior_reuse"] >= 4 * 35 / 20
    assert imh["prior_seconds_per_sample"] == pytest.approx(
        same_gather["run_seconds"] / imh["prior_independent_configs"])  # one configuration per draw
    # identity: with the prior at the target point itself, log r = -S exactly (scale 1), so log w = 0
    prior = KINDS["same_L"].prior(4, EnsembleDraws.of(same_gather, FINE, FINE))
    z = prior.sample(jax.random.key(0), 8)
    np.testing.assert_allclose(prior.log_prob(z), -action_for(FINE)[0].action(z), rtol=1e-6)
    with pytest.raises(ValueError, match=r"same_L prior configurations are \(2, 2\), need \(4, 4\)"):
        pipeline.train_flow_task(FINE, "same_L", steps=2, seed=3, prior_point=near, deps={"gather": gather},
                                 inputs=ENS, **TRAIN)

    with pytest.raises(ValueError, match="free_field needs kind z2"):  # not dropped silently
        make_flow({"kind": "tutorial", "free_field": True})
    with pytest.raises(ValueError, match="pointwise needs kind z2"):
        make_flow({"kind": "tutorial", "pointwise": 1})
    with pytest.raises(ValueError, match="do not fit the flow"):  # parameters of another architecture
        params_from_tree(make_flow({"kind": "z2", "n_layers": 4, "hidden": []}), (4, 4), trained["params"])
    with pytest.raises(ValueError, match="the warm prior starts from a flow trained at L/2"):  # a role is missing
        pipeline.train_flow_task(FINE, "warm", steps=2, seed=2, deps={"pretrain": pre}, **TRAIN)
    with pytest.raises(ValueError, match="the below dependency 'nope' is not among"):
        pipeline.train_flow_task(FINE, "warm", steps=2, seed=2, deps={"pretrain": pre}, inputs={"below": "nope"},
                                 **TRAIN)


def test_free_field_flow_trains_and_transfers_through_shards(tmp_path: Path) -> None:
    """A z2 flow with the trainable free-field layer first: its two scalar parameters survive the HDF5 shard, and
    the warm start at the finer L reads them back (same tree, 37 + 2 parameters)."""
    train = {**TRAIN, "flow": {**TINY_FLOW, "free_field": True}}
    pre = _through_shard(tmp_path, "pre", pipeline.train_flow_task(COARSE, "gaussian", steps=2, seed=1, **train))
    stored = params_from_tree(make_flow(train["flow"]), (2, 2), pre["params"])["params"]
    assert pre["n_params"] == 39 and stored["layers_0"]["log_m2"].shape == ()
    warm = pipeline.train_flow_task(FINE, "warm", steps=2, seed=2, deps={"pretrain": pre}, inputs={"below": "pretrain"},
                                    **train)
    assert warm["n_params"] == 39 and np.all(np.isfinite(warm["loss"]))


def test_multilevel_flow_refines_the_flow_below_through_shards(tmp_path: Path) -> None:
    """The multilevel variant at toy size, through HDF5 shards: 2 -> 4 refines the Gaussian pretraining (its
    parameters as the coarse flow, noise widths from refine_sigma of its samples, fresh couplings), 4 -> 8 refines
    that multilevel flow (its widths and couplings copied too); axes continue; flow-MH runs on the nested flow."""
    pre = _through_shard(tmp_path, "pre", pipeline.train_flow_task(COARSE, "gaussian", steps=2, seed=1, **TRAIN))
    train = {k: v for k, v in TRAIN.items() if k != "flow"}
    flow4 = {**TINY_FLOW, "sublattice": True, "refine": {"coarse": TINY_FLOW, "scale": 1.05}}
    key = jax.random.key(4)
    init4 = refine_init(make_flow(flow4), pre, key, 4)["params"]
    coarse_model = make_flow(TINY_FLOW)
    pre_params = params_from_tree(coarse_model, (2, 2), pre["params"])
    jax.tree.map(np.testing.assert_array_equal, init4["layers_0"]["coarse"], pre_params["params"])
    phi_c, _ = sample_flow(coarse_model, pre_params,
                                    GaussianPrior((2, 2)), jax.random.split(key)[1], 1024)
    sigma = refine_sigma(np.asarray(phi_c), 1.05, True)
    np.testing.assert_allclose(np.exp(init4["layers_0"]["log_sigma"]), [sigma] * 3, rtol=1e-6)
    ml4 = _through_shard(tmp_path, "ml4", pipeline.train_flow_task(FINE, "multilevel", steps=2, seed=2, flow=flow4,
                                                                   deps={"pre": pre}, inputs={"below": "pre"},
                                                                   **train))
    assert ml4["n_params"] == 37 + 3 + (2 * 4 * 9 + 1) and np.all(np.isfinite(ml4["loss"]))
    np.testing.assert_array_equal(ml4["metric_step"], [2, 4])  # continues the pretraining's axes

    fine8 = {"L": 8, "beta": 0.55, "lam": 0.5}
    flow8 = {**TINY_FLOW, "sublattice": True, "refine": {"coarse": flow4, "scale": (0.55 / 0.5) ** 0.5}}
    init8 = refine_init(make_flow(flow8), ml4, key, 8)["params"]
    below = params_from_tree(make_flow(flow4), (4, 4), ml4["params"])["params"]
    for name in ("layers_1", "layers_2", "layers_3"):  # the ladder: couplings and rescaling from the rung below
        jax.tree.map(np.testing.assert_array_equal, init8[name], dict(below[name]))
    np.testing.assert_array_equal(init8["layers_0"]["log_sigma"], below["layers_0"]["log_sigma"])  # its widths too
    jax.tree.map(np.testing.assert_array_equal, init8["layers_0"]["coarse"], dict(below))
    ml8 = _through_shard(tmp_path, "ml8", pipeline.train_flow_task(fine8, "multilevel", steps=2, seed=3, flow=flow8,
                                                                   deps={"ml4": ml4}, inputs={"below": "ml4"},
                                                                   **train))
    assert ml8["step_offset"] == 4 and ml8["work_offset"] == pytest.approx((2 + 2 * 0.25) * 0.25)
    imh = pipeline.flow_imh_task(fine8, "multilevel", flow8, n_chains=4, n_steps=20, n_therm=2, seed=5,
                                 deps={"ml8": ml8}, inputs={"flow": "ml8"})
    assert 0 <= imh["acceptance"] <= 1 and np.all(np.isfinite(imh["M"])) and "prior_reuse" not in imh
    multi = pipeline.flow_imh_task(fine8, "multilevel", flow8, n_chains=4, n_steps=20, n_therm=2, seed=5,
                                   candidates=4, deps={"ml8": ml8}, inputs={"flow": "ml8"})
    assert multi["method"] == "flow-MH x4" and multi["candidates"] == 4 and 0 <= multi["acceptance"] <= 1
    n = 20 - (multi["therm_steps"] - 2)
    assert all(multi[k].shape == (n, 4) and np.all(np.isfinite(multi[k])) for k in ("abs_M", "M2", "M4", "phi2"))
    assert multi["accepted"].shape == (n, 4) and "M" not in multi
    assert multi["summary"]["tau_int_M2_series"] > 0 and multi["summary"]["chi2"] > 0


# ------------------------------------------------------------------------------------------------ reduced study
REDUCED = """\
  lam: 0.5
  points: [{L: 6, beta: 0.5, beta_coarse: 0.45}]
  flow: {kind: z2, n_layers: 4, hidden: [8], free_field: true}
  ensembles: {replicas: 2, n_chains: 8, n_therm: 50, n_traj: 200, meas_every: 2}
  training: {steps: 800, batch_size: 64, lr: 0.005, metrics_every: 200, metrics_batch: 512}
  imh: {n_chains: 16, n_steps: 5000, n_therm: 50, candidates: [1, 8]}
  flow_hmc: {variants: [gaussian], n_chains: 8, n_traj: 300, n_therm: 20}
  hmc: {n_chains: 8, n_traj: 1500, n_therm: 100}"""


@pytest.mark.slow
def test_reduced_study_through_the_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "flow.yaml"
    cfg.write_text(STUDY.format(params=REDUCED))
    prof = tmp_path / "local.yaml"
    prof.write_text("kind: local\nn_workers: 2\nthreads_per_worker: 1\ndashboard_address: ':0'\n")
    out = subprocess.run([*EXE, "run", str(cfg), "--cluster", str(prof), "--output", "st", "--no-progress"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    assert "15 computed, 0 failed" in out.stderr
    assert "Samplers" in out.stdout and "Flow training" in out.stdout
    report = tmp_path / "st" / "report"
    for fig in ("flow_training.png", "observables.png"):
        assert (report / fig).stat().st_size > 0

    with h5py.File(tmp_path / "st" / "study.h5", "r") as f:
        t = f["tasks"]
        for v in ("gaussian", "coarse", "warm"):
            g = t[f"train-{v}-L6"]
            assert "params" in g and g["acceptance"].shape == g["ess"].shape == g["metric_seconds"].shape
            assert np.all(np.diff(g["metric_seconds"][()]) > 0)
        assert t["train-gaussian-L6"]["metric_step"][()].tolist() == [0, 200, 400, 600, 800]
        assert t["train-warm-L6"]["metric_step"][()].tolist() == [400, 600, 800]  # after 400 steps at L = 3
        gauss = t["train-gaussian-L6"]
        assert gauss["acceptance"][-1] > gauss["acceptance"][0]  # it learns
        hmc = t["hmc-L6/summary"]
        assert abs(hmc["exp_minus_dH"][()] - 1) < 4 * hmc["exp_minus_dH_err"][()]
        c = t["compare"]
        methods = [m.decode() for m in c["method"][()]]
        assert sorted(methods) == ["HMC", "flow-HMC", "flow-MH", "flow-MH", "flow-MH", "flow-MH x8", "flow-MH x8"]
        assert np.all(c["acceptance"][()] > 0.03)
        # every sampler is exact: |M|, chi2 and the Binder cumulant agree with HMC within combined errors, and every
        # run is long enough for its errors to mean something (100 tau_int per chain, 5 of thermalisation); the
        # multiple-proposal runs (8 candidates, 715 steps: as many proposals) are held to the same standard.
        # Margins, three seeds of this config with 3000 flow-MH steps: flow-MH gaussian / warm 900-1600 tau_int per
        # chain (acceptance 0.5-0.6 with the free-field layer; 15-50 at 1500 steps without it), flow-HMC 230-250,
        # the coarse flow-MH (acceptance 0.10-0.13, no free-field layer after a coarse prior) 108-280, hence 5000
        # steps here. |pull| reached 3.2 in those runs (all samplers share HMC's fluctuation); 4 leaves room for it.
        long_enough = (c["chain_over_tau"][()] >= pipeline.MIN_CHAIN_TAUS) & (
            c["therm_over_tau"][()] >= pipeline.MIN_THERM_TAUS)
        assert long_enough.all(), (methods, c["chain_over_tau"][()])
        # the study's `reliable` flag also limits prior reuse: the coarse flow-MH draws 4 x 16 x 5050 configurations
        # from an ensemble of 1600 (2 x 8 chains x 100 stored), so it alone is flagged, the rest are reliable
        coarse = (c["method"][()].astype(str) == "flow-MH") & (c["variant"][()].astype(str) == "coarse")
        assert coarse.sum() == 1 and c["prior_reuse"][()][coarse][0] > 4 * 16 * 5050 / 1600
        np.testing.assert_array_equal(c["reliable"][()].astype(bool), ~coarse)
        for obs in ("abs_M", "chi2", "binder"):
            pulls = c[f"pull_{obs}"][()]
            assert np.all(np.abs(pulls) < 4), (obs, methods, pulls)


def _fake_sampler(method: str, variant: str, L: int, tau: float, rng: np.random.Generator) -> dict:
    summary = {k: float(rng.uniform(0.1, 1)) for k in ("abs_M", "chi2", "binder", "phi2")}
    summary.update({f"{k}_err": 0.01 for k in ("abs_M", "chi2", "binder", "phi2")}, tau_int_M2=tau, tau_int_M2_err=0.1)
    return {"method": method, "variant": variant, "L": L, "acceptance": 0.5, "seconds_per_sample": 1e-4 * L,
            "cost_per_independent": 2e-4 * L * tau, "train_seconds": 1.0, "run_seconds": 1.0, "summary": summary,
            "chain_over_tau": 4000 / tau, "therm_over_tau": 100 / tau}


def test_compare_flags_runs_too_short_for_their_tau_int() -> None:
    """4000 samples per chain and 100 thermalisation steps: reliable at tau_int = 8 (500 / 12.5 tau), not at
    tau_int = 120 (33 / 0.8 tau: flow-MH of a poorly trained flow), the thresholds of the module docstring."""
    rng = np.random.default_rng(1)
    c = pipeline.compare_samplers({"hmc": _fake_sampler("HMC", "", 16, 8.0, rng),
                                   "imh": _fake_sampler("flow-MH", "warm", 16, 120.0, rng)})
    assert c["labels"].tolist() == ["hmc", "imh"] and c["reliable"].tolist() == [True, False]
    np.testing.assert_allclose(c["chain_over_tau"], [500.0, 4000 / 120])
    np.testing.assert_allclose(c["cost_over_hmc"], [1.0, 120 / 8.0])  # same s/sample: the ratio of the tau_int
    reused = _fake_sampler("flow-MH", "same_L", 16, 8.0, rng) | {"prior_reuse": 1.5}  # long enough, but the chain
    c = pipeline.compare_samplers({"hmc": _fake_sampler("HMC", "", 16, 8.0, rng), "same": reused})  # outran its prior
    assert c["reliable"].tolist() == [True, False] and c["prior_reuse"].tolist() == [0.0, 1.5]


def test_cost_over_hmc_is_per_L() -> None:
    """Each sampler's cost is divided by the HMC run at its own L; without one the ratio is NaN."""
    rng = np.random.default_rng(2)
    c = pipeline.compare_samplers({"a-hmc8": _fake_sampler("HMC", "", 8, 4.0, rng),
                                   "b-hmc16": _fake_sampler("HMC", "", 16, 8.0, rng),
                                   "c-fhmc16": _fake_sampler("flow-HMC", "warm", 16, 2.0, rng),
                                   "d-imh32": _fake_sampler("flow-MH", "warm", 32, 3.0, rng)})
    np.testing.assert_allclose(c["cost_over_hmc"][:3], [1.0, 1.0, 0.25])
    assert np.isnan(c["cost_over_hmc"][3]) and np.isnan(c["pull_chi2"][3])
    # the study's compare task declares those as "not measured", so such a result is stored; the others are not
    compare = {t.name: t for t in flow_study.build(_params())}["compare"]
    check_finite(c, compare.nan_ok)
    with pytest.raises(NonFiniteResult, match="result 'chi2' holds 1 NaN"):
        check_finite({**c, "chi2": np.where(np.isnan(c["cost_over_hmc"]), np.nan, c["chi2"])}, compare.nan_ok)


def test_report_with_several_L(tmp_path: Path) -> None:
    """The report (fabricated study file, two L) opens with what was computed and a verdict per sampler, draws
    tau_int and cost versus L, and gives numbers to three significant digits or with their errors."""
    rng = np.random.default_rng(0)
    samplers = {f"{m}-{v}-L{ell}": _fake_sampler(m, v, ell, 0.5 * ell, rng)
                for ell in (8, 16) for m, v in (("HMC", ""), ("flow-MH", "coarse"), ("flow-HMC", "gaussian"))}
    for res in samplers.values():  # every flow sampler at HMC's values, but chi2 of the coarse one at L = 8
        res["summary"].update({k: samplers[f"HMC--L{res['L']}"]["summary"][k] for k in ("abs_M", "chi2", "binder")})
    samplers["flow-MH-coarse-L8"]["summary"]["chi2"] += 0.05  # 0.05 / (0.01 sqrt 2): 3.5 sigma
    samplers["flow-MH-coarse-L8"]["cost_per_independent"] = 0.5 * samplers["HMC--L8"]["cost_per_independent"]
    study = tmp_path / "study.h5"
    with h5py.File(study, "w") as f:
        t = f.create_group("tasks")
        store._write_value(t, "compare", pipeline.compare_samplers(samplers))
        for ell, beta in ((8, 0.576), (16, 0.634)):
            t.create_group(f"hmc-L{ell}").attrs["params"] = json.dumps(
                {"point": {"L": ell, "beta": beta, "lam": 0.5}, "n_chains": 8, "n_traj": 1000})
            for v, acc in (("coarse", [0.1, 0.5]), ("gaussian", [0.0, 0.3])):
                store._write_value(t, f"train-{v}-L{ell}", {
                    "variant": v, "L": ell, "n_params": 37, "batch_size": 64, "compile_seconds": 1.0,
                    "metric_step": np.array([0, 10]), "metric_seconds": np.array([0.0, 1.0]), "step_offset": 0,
                    "acceptance": np.array(acc), "ess": np.array([0.05, 0.3])})
                t[f"train-{v}-L{ell}"].attrs["params"] = json.dumps(
                    {"point": {"L": ell, "beta": beta, "lam": 0.5}, "variant": v, "steps": 10, "batch_size": 64,
                     "flow": {"kind": "z2", "n_layers": 2, "hidden": [], "kernel_size": 3},
                     **({"prior_point": {"L": ell // 2, "beta": 0.5, "lam": 0.5}} if v == "coarse" else {})})
    rep = flow_study.report(study, tmp_path)
    assert sorted(p.name for p in rep.figures) == ["cost_vs_L.png", "flow_training.png", "observables.png"]
    computed = {r[0]: r[1] for r in rep.tables[0].rows}
    assert rep.tables[0].title == "What was computed" and computed["lam"] == "0.5"
    assert computed["L = 16"] == "beta = 0.634; prior ensembles at L = 8, beta = 0.5"
    assert computed["flow coarse-L8"].startswith("four L/2 configurations interleaved; z2, 2 couplings")
    assert "wall-clock" in computed["costs"]
    verdict = {(r[0], r[1]): r for r in rep.tables[1].rows}
    assert rep.tables[1].title.startswith("Verdict per sampler")
    assert verdict[(8, "flow-MH (coarse)")][4] == "disagrees: max |pull| 3.5 sigma (chi2)"
    assert verdict[(8, "flow-MH (coarse)")][6] == "0.5 x HMC: met"
    assert verdict[(16, "flow-HMC (gaussian)")][4] == "agrees: max |pull| 0.0 sigma (<|M|>)"
    assert verdict[(8, "HMC")][4] == "reference"
    head = next(t for t in rep.tables if t.title.startswith("Head start"))
    assert [r[:5] for r in head.rows] == [[8, "coarse", "0.3", 10, 10], [16, "coarse", "0.3", 10, 10]]
    assert head.rows[0][9] == "missed"  # the whole of the Gaussian flow's steps: fraction 1
    samplers_table = rep.tables[-1]
    assert len(samplers_table.rows) == 6 and samplers_table.rows[0][0] == "HMC" and samplers_table.rows[0][1] == 8
    assert samplers_table.rows[0][-1] == "1000 / 25.0"  # tau_int = 4: long enough, no "too short"
    assert samplers_table.rows[0][3] == "4.00(10)"  # tau_int with its error
    assert all(not isinstance(c, float) for table in rep.tables for row in table.rows for c in row)


def test_value_error_and_agreement() -> None:
    """Numbers with errors: the error to two significant digits, the value to its decimal place; the agreement
    verdict names the worst pull against the 2 and 3 sigma thresholds."""
    assert flow_study.value_error(3.0394, 0.0481) == "3.039(48)"
    assert flow_study.value_error(0.17612, 0.00153) == "0.1761(15)"
    assert flow_study.value_error(1234.5, 56) == "1234(56)"  # rounds half to even
    assert flow_study.value_error(12345.0, 567.0) == "12340(570)"
    assert flow_study.value_error(2.5, 0.0) == "2.5" and flow_study.value_error(2.5, float("nan")) == "2.5"
    assert flow_study.sig3(0.000121151) == "0.000121" and flow_study.sig3(float("inf")) == "-"
    assert flow_study.agreement({"chi2": -1.94, "U": 0.3}) == "agrees: max |pull| 1.9 sigma (chi2)"
    assert flow_study.agreement({"chi2": 0.1, "U": 2.6}).startswith("tension (2-3 sigma): max |pull| 2.6")
    assert flow_study.agreement({"chi2": float("nan")}) == "no HMC at this L"


def test_head_start_counts_steps_to_the_gaussian_acceptance() -> None:
    """Issue #6's criterion on made-up curves: the Gaussian flow ends at acceptance 0.4 after 1000 steps; the
    coarse-prior flow first reaches it at step 400 (fraction 0.4), the warm flow (300 pretraining steps at L/2,
    work 75 steps here) at step 600 = 300 fine steps (step fraction 0.6, work fraction 0.375); a flow that never
    reaches it says so."""
    steps = np.arange(0, 1001, 100)
    gauss = {"variant": b"gaussian", "L": 16, "metric_step": steps, "acceptance": np.linspace(0, 0.4, 11),
             "metric_seconds": steps / 10.0, "step_offset": 0, "work_offset": 0.0}
    coarse = dict(gauss, variant="coarse", acceptance=np.minimum(steps / 1000.0, 0.9))
    warm = dict(gauss, variant="warm", metric_step=np.arange(300, 1001, 100), step_offset=300, work_offset=75.0,
                acceptance=np.array([0.1, 0.2, 0.3, 0.41, 0.5, 0.5, 0.5, 0.5]), metric_seconds=np.arange(8.0) + 20)
    rows = flow_study.head_start_rows({"g": gauss, "c": coarse, "w": warm})
    assert rows[0][:9] == [16, "coarse", pytest.approx(0.4), 1000, 400, 400, pytest.approx(0.4), pytest.approx(0.4),
                           pytest.approx(0.4)]
    assert rows[1][:9] == [16, "warm", pytest.approx(0.4), 1000, 600, 300, pytest.approx(0.6), pytest.approx(0.375),
                           pytest.approx(23.0 / 100.0)]
    slow = dict(coarse, acceptance=np.full(11, 0.2))
    assert flow_study.head_start_rows({"g": gauss, "c": slow})[0][4:9] == ["not reached", "-", "-", "-", "-"]
    assert flow_study.first_reaching(steps, np.zeros(11), 0.1) is None
    old = {k: v for k, v in warm.items() if k != "work_offset"}  # a study file from before work_offset was stored
    assert flow_study.head_start_rows({"g": gauss, "w": old})[0][6:9] == [pytest.approx(0.6), "-",
                                                                          pytest.approx(0.23)]
    # Var(log w): the Gaussian flow ends at 2.0; the coarse flow is at or below it from step 300 on, lower is better
    gauss["logw_var"] = np.linspace(12.0, 2.0, 11)
    coarse["logw_var"] = np.array([9.0, 5.0, 2.5, 2.0, 1.5, 1, 1, 1, 1, 1, 1])
    rows = flow_study.head_start_rows({"g": gauss, "c": coarse, "w": warm})
    assert rows[0][9:] == [pytest.approx(2.0), 300, pytest.approx(0.3), pytest.approx(0.3),
                           pytest.approx(0.3)]  # seconds = steps / 10
    assert rows[1][9:] == [pytest.approx(2.0), "-", "-", "-", "-"]  # no logw_var stored (an older study file)
    warm["logw_var"] = np.array([3.0, 2.5, 1.9, 1.0, 1.0, 1.0, 1.0, 1.0])  # reaches 2.0 at step 500, 22 s
    assert flow_study.head_start_rows({"g": gauss, "w": warm})[0][9:] == [
        pytest.approx(2.0), 500, pytest.approx(0.5), pytest.approx(0.275), pytest.approx(22.0 / 100.0)]
    slow["logw_var"] = np.full(11, 3.0)
    assert flow_study.head_start_rows({"g": gauss, "c": slow})[0][9:] == [pytest.approx(2.0), "not reached", "-",
                                                                          "-", "-"]


def test_thermalisation_follows_tau_int() -> None:
    """A chain with tau_int ~ 20 (AR(1), rho = 0.95) and 10 configured thermalisation steps loses about 5 tau_int
    more from its start; an uncorrelated chain loses nothing; at most half a chain is ever dropped."""
    rng = np.random.default_rng(3)
    clock = {"run_s": 1.0, "compile_s": 0.0, "wall_s": 1.0}

    def ar1(n: int, rho: float) -> np.ndarray:
        x = np.zeros((n, 8))
        x[0] = rng.normal(size=8)
        for i in range(1, n):
            x[i] = rho * x[i - 1] + np.sqrt(1 - rho**2) * rng.normal(size=8)
        return 0.3 + 0.05 * x

    M = ar1(4000, 0.95)
    out = pipeline._chain_result(pipeline._series(M, M**2), 16, clock, 10, 8, 0.5)
    tau = out["summary"]["tau_int_M2"]
    assert 10 < tau < 40  # (1 + rho) / (2 (1 - rho)) = 19.5 for M; M^2 of a shifted AR(1) is close
    assert out["therm_steps"] > 10 and out["therm_over_tau"] >= pipeline.MIN_THERM_TAUS
    # a start that is white but five times wider hides the correlation: tau_int of the whole chain is short, and
    # grows once that start is dropped; the rule must hold for the tau_int reported (one round left 3.97 tau_int)
    mixed = np.concatenate([0.3 + 0.25 * rng.normal(size=(50, 8)), M[50:]])
    again = pipeline._chain_result(pipeline._series(mixed, mixed**2), 16, clock, 10, 8, 0.5)
    assert again["therm_steps"] > 60 and again["therm_over_tau"] >= pipeline.MIN_THERM_TAUS
    assert out["M"].shape[0] == 4000 - (out["therm_steps"] - 10)
    white = pipeline._chain_result(pipeline._series(rng.normal(size=(4000, 8)), np.ones((4000, 8))), 16, clock, 10, 8,
                                   0.5)
    assert white["therm_steps"] == 10 and white["M"].shape[0] == 4000
    short = pipeline._chain_result(pipeline._series(M[:60], M[:60] ** 2), 16, clock, 0, 8, 0.5)
    assert short["M"].shape[0] == 30  # never more than half
    assert out["seconds_per_sample"] == pytest.approx(1.0 / (4010 * 8))  # every step run counts in the cost
    # an accept/reject history is cut like the chain: rejections only in the dropped steps -> acceptance 1
    hist = np.arange(4000)[:, None] >= out["therm_steps"] - 10
    cut = pipeline._chain_result(pipeline._series(M, M**2), 16, clock, 10, 8, np.broadcast_to(hist, M.shape))
    assert cut["acceptance"] == 1.0 and cut["accepted"].shape == out["M"].shape and "accepted" not in out


def test_effective_tau_int_of_estimates() -> None:
    """Per-step estimates (Rao-Blackwellised): tau_int_M2 is n err^2 / (2 Var(M^2)) with Var(M^2) = <M^4> -
    <M^2>^2, so that it is the Gamma method's own tau_int for a plain chain (the same data read as estimates:
    within 3%, the sampling error of Var(M^2) from 32000 values), and halves when every value is the average of
    two independent ones, which halves the variance of each estimate but not that of M^2 (within 6%, the
    sampling error of two Gamma-method errors); run length and thermalisation use the estimates' own tau_int."""
    rng = np.random.default_rng(8)
    clock = {"run_s": 1.0, "compile_s": 0.0, "wall_s": 1.0}
    M, phi2 = rng.normal(size=(4000, 8)), np.ones((4000, 8))
    plain = pipeline._chain_result(pipeline._series(M, phi2), 16, clock, 10, 8, 0.5)
    same = pipeline._chain_result(pipeline._series(M, phi2), 16, clock, 10, 8, 0.5, estimates=True)
    assert same["summary"]["tau_int_M2_series"] == plain["summary"]["tau_int_M2"]
    assert same["summary"]["tau_int_M2"] == pytest.approx(plain["summary"]["tau_int_M2"], rel=0.03)
    assert same["M2"].shape == same["M4"].shape == (4000, 8) and "M2" not in plain
    M_b = rng.normal(size=(4000, 8))  # a second independent draw per step: estimates <.> = (f(M) + f(M_b)) / 2
    series = {"abs_M": (np.abs(M) + np.abs(M_b)) / 2, "M2": (M**2 + M_b**2) / 2, "M4": (M**4 + M_b**4) / 2,
              "phi2": phi2}
    rb = pipeline._chain_result(series, 16, clock, 10, 8, 0.5, estimates=True)
    assert rb["summary"]["tau_int_M2"] == pytest.approx(0.25, rel=0.06)
    assert rb["summary"]["tau_int_M2_series"] == pytest.approx(0.5, rel=0.06)
    assert rb["cost_per_independent"] == pytest.approx(rb["seconds_per_sample"] * 0.5, rel=0.06)
    assert rb["chain_over_tau"] == pytest.approx(4000 / rb["summary"]["tau_int_M2_series"])
