"""olrg-hpc: Operator Learning RG and trivializing flows for phi^4, run as Dask/SLURM workflows.

Layout: physics in ``olrg_hpc.spins``, ``olrg_hpc.lattice``, ``olrg_hpc.olrg``, ``olrg_hpc.flows`` (no Dask
or SLURM there); configs in ``olrg_hpc.config``; the HDF5 result store in ``olrg_hpc.store``; the task
graph runner in ``olrg_hpc.runner``; clusters in ``olrg_hpc.cluster``; the command line in ``olrg_hpc.cli``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("olrg-hpc")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0+src"

__all__ = ["__version__"]
