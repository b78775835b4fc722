"""The prior-kind registry and the flow spec: each kind builds its prior from what it declares, adjusts the study's
flow as it says, and starts from the flow below as it says; one FlowSpec holds the architecture's defaults."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pydantic import ValidationError

from olrg_hpc import checkpoint
from olrg_hpc.flows.coarse import CoarsePrior, EnsemblePrior, RefineFlow, RefinePrior, refine_sigma
from olrg_hpc.flows.model import FlowSpec, GaussianPrior, count_params, init_flow, make_flow, z2_flow
from olrg_hpc.flows.priors import KINDS, EnsembleDraws, kind
from olrg_hpc.lattice.ensemble import action_for

FINE = {"L": 8, "beta": 0.55, "lam": 0.5}
COARSE = {"L": 4, "beta": 0.5, "lam": 0.5}


def _draws(point: dict, n: int = 6, seed: int = 0) -> EnsembleDraws:
    """A made-up ensemble at ``point`` (configurations in the point's convention, as a gathered ensemble stores
    them), for the fine point ``FINE``."""
    L = point["L"]
    configs = np.random.default_rng(seed).normal(size=(n, L, L)).astype(np.float32)
    return EnsembleDraws.of({"configs": configs}, point, FINE)


def test_ensemble_draws_are_in_the_fine_flows_units() -> None:
    """chi = c phi_tut with c = sqrt(2 / beta): the stored configurations divided by the prior point's c, and the
    factor c_prior / c_fine that carries them to the fine point's tutorial units."""
    d = _draws(COARSE)
    stored = np.random.default_rng(0).normal(size=(6, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(d.configs, stored / np.sqrt(2 / 0.5), rtol=1e-7)
    assert d.scale == pytest.approx(np.sqrt(2 / 0.5) / np.sqrt(2 / 0.55), rel=1e-12)
    assert d.action == action_for(COARSE)[0]


def test_each_kind_builds_its_prior() -> None:
    """The prior class, its ensemble's lattice and the noise width each kind declares; sigma reaches only the
    kinds with noise (default: refine_sigma of the ensemble); a kind without an ensemble needs none."""
    coarse, same = _draws(COARSE), _draws({**FINE, "beta": 0.5})
    assert isinstance(KINDS["gaussian"].prior(8), GaussianPrior) and KINDS["warm"].prior(8).shape == (8, 8)
    assert isinstance(KINDS["coarse"].prior(8, coarse), CoarsePrior)
    bil = KINDS["coarse_bilinear"].prior(8, coarse)
    assert isinstance(bil, RefinePrior) and bil.interpolate
    assert bil.sigma == pytest.approx(refine_sigma(coarse.configs, coarse.scale, True), rel=1e-12)
    assert KINDS["coarse_noise"].prior(8, coarse, sigma=0.3).sigma == 0.3
    assert not KINDS["coarse_noise"].prior(8, coarse).interpolate
    assert isinstance(KINDS["same_L"].prior(8, same, sigma=0.3), EnsemblePrior)  # no noise: sigma not used
    for k in KINDS.values():
        assert k.prior(8, coarse if k.ensemble_at == "coarse" else same).shape == (8, 8)
        assert k.multi_proposal == (k.ensemble_at is None)
    with pytest.raises(ValueError, match=r"coarse prior configurations are \(8, 8\), need \(4, 4\)"):
        KINDS["coarse"].prior(8, same)
    with pytest.raises(ValueError, match="the same_L prior draws from an HMC ensemble"):
        KINDS["same_L"].prior(8)
    with pytest.raises(ValueError, match="unknown prior kind 'bilinear'"):
        kind("bilinear")


def test_each_kind_adjusts_the_studys_flow() -> None:
    """From the study's (Gaussian) flow: ensemble priors drop the free-field layer, priors on the 2 x 2 cell add
    heads per sublattice, the refining kind nests the flow below with its field factor; nothing else changes."""
    template = FlowSpec(n_layers=6, hidden=(8,), free_field=True, pointwise=2)
    flows = {k.name: k.flow(template, below=template, scale=1.1) for k in KINDS.values()}
    assert flows["gaussian"] == flows["warm"] == template
    assert flows["same_L"] == template.model_copy(update={"free_field": False})
    for name in ("coarse", "coarse_bilinear", "coarse_noise"):
        assert flows[name] == template.model_copy(update={"free_field": False, "sublattice": True})
    ml = flows["multilevel"]
    assert ml.refine is not None and ml.refine.coarse == template and ml.refine.scale == 1.1
    assert (ml.free_field, ml.sublattice, ml.n_layers, ml.pointwise) == (False, True, 6, 2)
    with pytest.raises(ValueError, match="the multilevel prior refines a flow at L/2"):
        KINDS["multilevel"].flow(template)


def test_each_kind_starts_from_the_flow_below_as_it_says() -> None:
    """No flow below: fresh parameters (init_flow with the same key); transfer: the flow below's parameters
    unchanged; a kind that needs a flow below refuses to start without one, and one that has none refuses one."""
    spec = FlowSpec(n_layers=2, hidden=())
    model = make_flow(spec)
    key = jax.random.key(3)
    fresh = KINDS["gaussian"].initial_params(model, 8, key)
    jax.tree.map(np.testing.assert_array_equal, fresh, init_flow(model, key, (8, 8), jnp.float32))
    shifted = jax.tree.map(lambda p: np.asarray(p) + 0.25, fresh)
    below = {"params": checkpoint.leaves(shifted)}  # as a training task stores them
    for name in ("warm", "coarse"):
        moved = KINDS[name].initial_params(model, 8, key, below)
        jax.tree.map(np.testing.assert_array_equal, moved, shifted)
    with pytest.raises(ValueError, match="the warm prior starts from a flow trained at L/2"):
        KINDS["warm"].initial_params(model, 8, key)
    with pytest.raises(ValueError, match="the same_L prior starts from fresh parameters"):
        KINDS["same_L"].initial_params(model, 8, key, below)


def test_flow_spec_holds_the_only_defaults() -> None:
    """FlowSpec() is the flow a study builds without a flow block: 4 Z2 couplings with one hidden layer of 8
    channels (kernel 3, no bias: 9 x 8 + 8 x 9 x 2 weights each) and the global rescaling (1); the layer builders
    take no architecture defaults; a spec survives its JSON dump (the task parameter), nested refinement too."""
    assert count_params(jax.eval_shape(lambda: init_flow(make_flow(FlowSpec()), 0, (8, 8)))) == 4 * (72 + 144) + 1
    with pytest.raises(TypeError):
        z2_flow()  # type: ignore[call-arg]
    nested = FlowSpec(sublattice=True, refine={"coarse": {"free_field": True, "pointwise": 1}, "scale": 1.05})
    assert FlowSpec.model_validate(nested.model_dump(mode="json")) == nested
    model = make_flow(nested.model_dump(mode="json"))
    assert isinstance(model.layers[0], RefineFlow) and model.layers[0].scale == 1.05
    for bad, msg in (({"kernel_size": 4}, "kernel_size must be odd"), ({"kind": "tutorial", "pointwise": 1},
                     "pointwise needs kind z2"), ({"n_layer": 3}, "Extra inputs are not permitted")):
        with pytest.raises(ValidationError, match=msg):
            FlowSpec.model_validate(bad)


def test_the_study_takes_its_kinds_and_flow_from_the_library() -> None:
    """The study's variants are the registry's names, and its flow block is a FlowSpec with FlowSpec's defaults."""
    from typing import get_args

    from workflows import flow_study

    assert get_args(flow_study.Variant) == tuple(KINDS)
    params = flow_study.Params.model_validate({"points": [{"L": 8, "beta": 0.5}]})
    assert params.flow == FlowSpec() and isinstance(params.flow, FlowSpec)
