"""Build hook: a wheel carries the SLURM job templates and the cluster profiles (olrg_hpc/resources.py).

Everything else about the package is in pyproject.toml.
"""

import runpy
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
RESOURCES = runpy.run_path(str(ROOT / "olrg_hpc" / "resources.py"))


class BuildPyWithShippedFiles(build_py):
    """build_py, then copy each folder of ``resources.SHIPPED`` into ``olrg_hpc/_shipped/<name>/`` of the build
    (not for an editable install, which reads the repository's files)."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for name, (folder, pattern) in RESOURCES["SHIPPED"].items():
            files = sorted((ROOT / folder).glob(pattern))
            if not files:
                raise FileNotFoundError(f"{ROOT / folder}: no {pattern} to ship")
            target = Path(self.build_lib) / "olrg_hpc" / RESOURCES["PACKAGED"] / name
            self.mkpath(str(target))
            for f in files:
                self.copy_file(str(f), str(target / f.name))


setup(cmdclass={"build_py": BuildPyWithShippedFiles})
