"""The prior kinds of the flow study: one object per kind, in one registry (:data:`KINDS`).

A flow at a fine point ``(L, beta)`` maps draws of its prior to fields. Kinds differ in five things, and each
:class:`PriorKind` states all five:

* **ensemble** (``ensemble_at``): the stored HMC ensemble its prior draws from, at the coarse point
  ``(L/2, beta_coarse)`` (``"coarse"``), at ``(L, beta_prior)`` (``"beta_prior"``), or none;
* **the flow below** (``below``, ``pretrain``, ``refines``): whether the flow starts from a flow trained at
  ``L/2`` (``"required"``: always; ``"optional"``: when the study's ladder has one; ``"none"``), which kind's
  training at ``L/2`` serves as its pretraining when the ladder has no rung there, and whether that flow's
  parameters are transferred (:func:`~olrg_hpc.flows.coarse.transfer_params`) or the flow below becomes the
  first, refining level of this one (:class:`~olrg_hpc.flows.coarse.RefineFlow`, :func:`refine_init`);
* **flow overrides** (:meth:`PriorKind.flow`): the study's flow is the Gaussian flow's; a prior whose draws are
  correlated already keeps no free-field layer (``free_field``), and one built on the ``2 x 2`` cell gets
  couplings with heads per sublattice (``cell``);
* **the prior itself** (:meth:`PriorKind.prior`): built from the lattice size, the ensemble's draws and the
  noise width (``noise``: the kind reads ``prior_sigma``);
* **cost charge**: a kind with an ensemble charges its HMC seconds and its reuse to flow-MH
  (:func:`olrg_hpc.flows.pipeline.flow_imh_task`, ``members_per_draw`` of its prior), and only a kind without
  one runs multiple-proposal flow-MH (``multi_proposal``).

Kinds (arXiv:2310.03381 for the coarse priors; conventions of :mod:`olrg_hpc.flows.coarse`):

========================  ==================================================================================
``gaussian``              N(0, 1), fresh parameters
``coarse``                four configurations of the L/2 ensemble, interleaved (:class:`CoarsePrior`)
``coarse_bilinear``       one L/2 configuration plus Gaussian noise about its bilinear interpolation
``coarse_noise``          one L/2 configuration plus zero-mean noise sublattices (:class:`RefinePrior`)
``same_L``                one configuration of an ensemble at the same L and ``beta_prior`` (:class:`EnsemblePrior`)
``warm``                  N(0, 1); parameters of a flow trained at L/2 (Gaussian pretraining or the warm rung)
``multilevel``            N(0, 1); the flow at L/2 refined to L (:class:`RefineFlow`) and trained end to end
========================  ==================================================================================

Adding a kind is one entry of :data:`KINDS` (and a prior class in :mod:`olrg_hpc.flows.coarse` if it needs a
new one); the study's graph, its config validation and its report loop over the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from olrg_hpc import checkpoint
from olrg_hpc.flows.coarse import (
    CoarsePrior,
    EnsemblePrior,
    RefineFlow,
    RefinePrior,
    refine_sigma,
    transfer_params,
)
from olrg_hpc.flows.model import Flow, FlowSpec, GaussianPrior, Prior, Refine, init_flow, sample_flow
from olrg_hpc.lattice.ensemble import action_for

__all__ = ["EnsembleDraws", "PriorKind", "KINDS", "kind", "params_from_tree", "refine_init"]


@dataclass(frozen=True)
class EnsembleDraws:
    """A stored HMC ensemble as a prior sees it: the prior point's tutorial-convention ``action``, its
    ``configs`` ``(N, l, l)`` in that action's tutorial convention, and ``scale = c_prior / c_fine``, the factor
    that puts them in the fine flow's tutorial units (:mod:`olrg_hpc.flows.coarse`)."""

    action: Any
    configs: np.ndarray
    scale: float

    @classmethod
    def of(cls, gathered: Mapping[str, Any], prior_point: Mapping[str, float],
           point: Mapping[str, float]) -> EnsembleDraws:
        """From a gathered ensemble (configurations stored in the prior point's convention, ``chi = c phi_tut``)."""
        act_p, c_p = action_for(prior_point)
        _, c_f = action_for(point)
        return cls(act_p, np.asarray(gathered["configs"], np.float64) / c_p, c_p / c_f)


def _gaussian(L: int, draws: EnsembleDraws | None, sigma: float | None) -> Prior:
    return GaussianPrior((L, L), "float32")


def _interleaved(L: int, draws: EnsembleDraws, sigma: float | None) -> Prior:
    return CoarsePrior(draws.action, jnp.asarray(draws.configs, jnp.float32), draws.scale)


def _one_configuration(interpolate: bool) -> Callable[[int, EnsembleDraws, float | None], Prior]:
    def build(L: int, draws: EnsembleDraws, sigma: float | None) -> Prior:
        width = refine_sigma(draws.configs, draws.scale, interpolate) if sigma is None else float(sigma)
        return RefinePrior(draws.action, jnp.asarray(draws.configs, jnp.float32), draws.scale, width, interpolate)
    return build


def _same_L(L: int, draws: EnsembleDraws, sigma: float | None) -> Prior:
    return EnsemblePrior(draws.action, jnp.asarray(draws.configs, jnp.float32), draws.scale)


@dataclass(frozen=True)
class PriorKind:
    """One prior kind of the flow study (module docstring)."""

    name: str
    description: str
    build: Callable[[int, Any, float | None], Prior]
    ensemble_at: Literal["coarse", "beta_prior"] | None = None
    below: Literal["none", "optional", "required"] = "none"
    pretrain: str | None = None
    refines: bool = False
    free_field: bool = True
    cell: bool = False
    noise: bool = False

    @property
    def multi_proposal(self) -> bool:
        """Whether multiple-proposal flow-MH runs with it (its cost model counts one ensemble draw per step)."""
        return self.ensemble_at is None

    def ensemble_shape(self, L: int) -> tuple[int, int]:
        """The lattice of the configurations its prior draws from."""
        return (L // 2, L // 2) if self.ensemble_at == "coarse" else (L, L)

    def flow(self, template: FlowSpec, below: FlowSpec | None = None, scale: float = 1.0) -> FlowSpec:
        """This kind's flow from the study's (the Gaussian flow's) ``template``; a refining kind nests ``below``,
        the flow at ``L/2``, with field factor ``scale``."""
        update: dict[str, Any] = {}
        if not self.free_field:
            update["free_field"] = False
        if self.cell:
            update["sublattice"] = True
        if self.refines:
            if below is None:
                raise ValueError(f"the {self.name} prior refines a flow at L/2: give it")
            update["refine"] = Refine(coarse=below, scale=scale)
        return template.model_copy(update=update)

    def prior(self, L: int, draws: EnsembleDraws | None = None, sigma: float | None = None) -> Prior:
        """The prior at ``L`` (``draws``: the ensemble, for a kind with one; ``sigma``: the noise width of a
        ``noise`` kind, default :func:`~olrg_hpc.flows.coarse.refine_sigma`)."""
        if self.ensemble_at is None:
            return self.build(L, None, None)
        if draws is None:
            raise ValueError(f"the {self.name} prior draws from an HMC ensemble: give it")
        need = self.ensemble_shape(L)
        if draws.configs.shape[-2:] != need:
            raise ValueError(f"{self.name} prior configurations are {draws.configs.shape[-2:]}, need {need}")
        return self.build(L, draws, sigma if self.noise else None)

    def initial_params(self, model: Flow, L: int, key: jax.Array, below: Mapping[str, Any] | None = None) -> Any:
        """Parameters the training at ``L`` starts from: fresh (:func:`~olrg_hpc.flows.model.init_flow`) without
        a flow below; with one (``below``: its training result), its parameters refined (:func:`refine_init`)
        or transferred unchanged (:func:`~olrg_hpc.flows.coarse.transfer_params`)."""
        if below is None:
            if self.below == "required":
                raise ValueError(f"the {self.name} prior starts from a flow trained at L/2: give it")
            return init_flow(model, key, (L, L), jnp.float32)
        if self.below == "none":
            raise ValueError(f"the {self.name} prior starts from fresh parameters, not from a flow below")
        if self.refines:
            return refine_init(model, below, key, L)
        return transfer_params(params_from_tree(model, (L, L), below["params"]), jnp.float32)


_ENSEMBLE_CELL = {"ensemble_at": "coarse", "below": "optional", "free_field": False, "cell": True}

#: every prior kind, in the order reports list them (the Gaussian flow, the reference, first)
KINDS: dict[str, PriorKind] = {k.name: k for k in (
    PriorKind("gaussian", "N(0, 1) prior, fresh parameters", _gaussian),
    PriorKind("coarse", "four L/2 configurations interleaved", _interleaved, pretrain="coarse", **_ENSEMBLE_CELL),
    PriorKind("coarse_bilinear", "one L/2 configuration + noise about its bilinear interpolation",
              _one_configuration(True), pretrain="coarse_bilinear", noise=True, **_ENSEMBLE_CELL),
    PriorKind("coarse_noise", "one L/2 configuration + zero-mean noise sublattices", _one_configuration(False),
              pretrain="coarse_noise", noise=True, **_ENSEMBLE_CELL),
    PriorKind("same_L", "one configuration at the same L and beta_prior", _same_L, ensemble_at="beta_prior",
              free_field=False),
    PriorKind("warm", "N(0, 1) prior, parameters of a flow trained at L/2", _gaussian, below="required",
              pretrain="gaussian"),
    PriorKind("multilevel", "N(0, 1) prior, the flow at L/2 refined to L and trained end to end", _gaussian,
              below="required", pretrain="gaussian", refines=True, free_field=False, cell=True),
)}


def kind(name: str) -> PriorKind:
    """The registered kind ``name`` (``ValueError`` naming the known ones otherwise)."""
    try:
        return KINDS[str(name)]
    except KeyError:
        raise ValueError(f"unknown prior kind {name!r} ({', '.join(KINDS)})") from None


def params_from_tree(flow: Flow, shape: tuple[int, int], stored: Mapping[str, Any], dtype: Any = jnp.float32) -> Any:
    """Flow parameters from stored leaves (a training task result's ``params`` group, written with
    :func:`olrg_hpc.checkpoint.leaves`), checked against the flow's own parameter tree (count and shapes) and cast
    to ``dtype``."""
    try:
        return jax.tree.map(jnp.asarray, checkpoint.from_leaves(stored, init_flow(flow, 0, shape, dtype)))
    except ValueError as exc:
        raise ValueError(f"stored flow parameters do not fit the flow ({exc})") from None


def refine_init(model: Flow, below: Mapping[str, Any], key: jax.Array, L: int, n_samples: int = 1024) -> Any:
    """Initial parameters of a refining flow at ``L`` (first layer a :class:`~olrg_hpc.flows.coarse.RefineFlow`)
    from ``below``, the training result of the flow it refines (at ``L/2``, Gaussian prior): that flow's trained
    parameters as the coarse flow. When ``below`` refines a flow itself (the ladder), its own refinement level,
    noise widths and couplings, is copied too: along a line of constant physics each level refines by the same
    factor 2, so the level below is the natural start. Otherwise (the smallest rung) the couplings are fresh and
    the widths are :func:`~olrg_hpc.flows.coarse.refine_sigma` of ``n_samples`` of the coarse flow's samples
    (bilinear: half the rms nearest-neighbour difference)."""
    refine = model.layers[0]
    if not isinstance(refine, RefineFlow):
        raise ValueError("a refining flow starts with a RefineFlow layer")
    k_init, k_sample = jax.random.split(key)
    params = init_flow(model, k_init, (L, L), jnp.float32)
    coarse = params_from_tree(refine.coarse, (L // 2, L // 2), below["params"])
    tree = params["params"]
    if isinstance(refine.coarse.layers[0], RefineFlow):
        tree.update({name: p for name, p in coarse["params"].items() if name != "layers_0"})
        log_sigma = coarse["params"]["layers_0"]["log_sigma"]
    else:
        phi_c, _ = sample_flow(refine.coarse, coarse, GaussianPrior((L // 2, L // 2)), k_sample, n_samples)
        log_sigma = jnp.full((3,), np.log(refine_sigma(np.asarray(phi_c), refine.scale, refine.interpolate)))
    tree["layers_0"] = {"coarse": coarse["params"], "log_sigma": jnp.asarray(log_sigma, jnp.float32)}
    return params
