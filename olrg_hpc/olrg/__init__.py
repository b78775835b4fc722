"""Operator Learning Renormalization Group (docs/conventions.md section 1; Luo, Luo, Melko, arXiv:2403.03199).

Modules: :mod:`.relevant` (relevant-operator sets, site growth), :mod:`.maps` (identity, NRG, DMRG-style,
learned linear isometry, neural Operator Matrix Map), :mod:`.loss` (TOBC loss), :mod:`.train` (optax training,
data-parallel sharding, HDF5 checkpoints), :mod:`.evaluate` (quench dynamics of the final block vs exact).
"""

from __future__ import annotations

from .evaluate import block_expectation, error_curve, exact_curve, fixed_map_isometries, grow_and_map, olrg_curve
from .loss import (
    LossConfig,
    OrderBlock,
    TOBCBatch,
    expm_herm,
    make_batch,
    olrg_loss,
    order_weights,
    scale_chis,
    tobc_chi,
)
from .maps import (
    DMRGMap,
    IdentityMap,
    LinearIsometryMap,
    NRGMap,
    OperatorMap,
    OperatorMatrixMap,
    compress,
    decouple,
    make_map,
    qr_isometry,
    time_averaged_rho,
)
from .relevant import RelevantSet, grow_exact, grow_site, hamiltonian, initial_set, term_specs, to_jax
from .train import TrainConfig, Trainer, TrainState, load_checkpoint, make_optimizer, save_checkpoint

__all__ = [
    "RelevantSet",
    "initial_set",
    "grow_site",
    "grow_exact",
    "hamiltonian",
    "term_specs",
    "to_jax",
    "OperatorMap",
    "IdentityMap",
    "NRGMap",
    "DMRGMap",
    "LinearIsometryMap",
    "OperatorMatrixMap",
    "compress",
    "decouple",
    "make_map",
    "qr_isometry",
    "time_averaged_rho",
    "LossConfig",
    "OrderBlock",
    "TOBCBatch",
    "expm_herm",
    "make_batch",
    "olrg_loss",
    "order_weights",
    "scale_chis",
    "tobc_chi",
    "TrainConfig",
    "Trainer",
    "TrainState",
    "load_checkpoint",
    "make_optimizer",
    "save_checkpoint",
    "block_expectation",
    "error_curve",
    "exact_curve",
    "fixed_map_isometries",
    "grow_and_map",
    "olrg_curve",
]
