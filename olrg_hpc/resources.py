"""Files the package ships besides its code: the SLURM job templates and the cluster profiles.

Users find and edit them at the repository root, ``slurm/*.sbatch`` and ``configs/clusters/*.yaml``. A wheel
(``pip install .``, not editable) carries copies of them inside the package, ``olrg_hpc/_shipped/slurm/`` and
``olrg_hpc/_shipped/clusters/``, made at build time by ``setup.py`` from :data:`SHIPPED`, so an installed
olrg-hpc can ``validate``, ``run`` and ``submit`` from any directory. A source checkout or an editable install
has no copies and reads the repository's files. This module imports nothing but the standard library:
``setup.py`` reads :data:`SHIPPED` from it before the package is installed.
"""

from __future__ import annotations

from pathlib import Path

#: name -> (folder at the repository root, the files of it that are shipped)
SHIPPED: dict[str, tuple[str, str]] = {"slurm": ("slurm", "*.sbatch"), "clusters": ("configs/clusters", "*.yaml")}

#: where a wheel keeps the copies, relative to the package
PACKAGED = "_shipped"


def shipped_dir(name: str) -> Path:
    """The folder holding the shipped files ``name`` (a key of :data:`SHIPPED`): the package's copies in an
    installed wheel, the repository's folder in a source checkout."""
    package = Path(__file__).resolve().parent
    packaged = package / PACKAGED / name
    return packaged if packaged.is_dir() else package.parent / SHIPPED[name][0]
