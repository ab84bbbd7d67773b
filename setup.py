"""Ship the models as package data: ``models/`` (top level in the repository, beside the code, as
every model card and the README name it) is copied into the built package as ``cusep/models``,
so wheels and non-editable installs carry the embedded default model and detector. Editable
installs read ``models/`` in place (:func:`cusep.checkpoint.default_registry` looks in both)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithModels(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "cusep" / "models"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(ROOT / "models", target)


setup(cmdclass={"build_py": BuildWithModels})
