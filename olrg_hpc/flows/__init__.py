"""Trivializing normalizing flows for phi^4 (JAX + flax.linen), learned directly or from coarser lattices.

References: Albandea et al., "Learning Trivializing Flows in a phi^4 theory from coarser lattices",
arXiv:2310.03381, and "Learning Trivializing Flows", arXiv:2302.08408; Albergo et al., "Introduction to
normalizing flows for lattice field theory", arXiv:2101.08176. Conventions: docs/phi4-hmc.md ("Actions and
conversions") and the module docstrings (layers: invertible layers; model: compositions, priors and the flow
spec; coarse: coarse-lattice priors; priors: the flow study's prior kinds; train: reverse-KL training, sharding,
checkpoints; mcmc: independent MH and flow-HMC; pipeline: the flow study's task functions, imported on their own).
"""

from olrg_hpc.flows.coarse import CoarsePrior, EnsemblePrior, deinterleave, interleave, transfer_params
from olrg_hpc.flows.layers import (
    AffineCoupling,
    ConvNet,
    FreeFieldLinear,
    FreeFieldScaling,
    GlobalRescaling,
    SitewiseOddMap,
    checkerboard_mask,
)
from olrg_hpc.flows.mcmc import (
    FlowedAction,
    FlowHMCResult,
    IMHResult,
    MultiMHResult,
    flow_hmc,
    flow_imh,
    flow_multi_mh,
    map_to_target,
)
from olrg_hpc.flows.model import (
    Flow,
    FlowSpec,
    GaussianPrior,
    albandea_flow,
    count_params,
    flow_log_prob,
    init_flow,
    make_flow,
    sample_flow,
    tutorial_flow,
    z2_flow,
)
from olrg_hpc.flows.train import (
    TrainingDivergedError,
    TrainResult,
    TrainState,
    effective_sample_size,
    evaluate,
    imh_acceptance,
    load_checkpoint,
    make_mesh,
    make_optimizer,
    save_checkpoint,
    train,
)

__all__ = [
    "AffineCoupling",
    "CoarsePrior",
    "ConvNet",
    "EnsemblePrior",
    "Flow",
    "FlowHMCResult",
    "FlowSpec",
    "FlowedAction",
    "FreeFieldLinear",
    "FreeFieldScaling",
    "GaussianPrior",
    "GlobalRescaling",
    "IMHResult",
    "SitewiseOddMap",
    "TrainResult",
    "TrainState",
    "TrainingDivergedError",
    "albandea_flow",
    "checkerboard_mask",
    "count_params",
    "deinterleave",
    "effective_sample_size",
    "evaluate",
    "flow_hmc",
    "flow_imh",
    "flow_multi_mh",
    "MultiMHResult",
    "flow_log_prob",
    "imh_acceptance",
    "init_flow",
    "interleave",
    "load_checkpoint",
    "make_flow",
    "make_mesh",
    "make_optimizer",
    "map_to_target",
    "sample_flow",
    "save_checkpoint",
    "train",
    "transfer_params",
    "tutorial_flow",
    "z2_flow",
]
