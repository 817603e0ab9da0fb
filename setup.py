"""Package discovery (everything else is in pyproject.toml).

The harness lives in `cadbench/`; built-in methods and datasets live in the top-level `methods/` and `datasets/`
folders but install as `cadbench.methods` and `cadbench.datasets`: a top-level `datasets` package would shadow
Hugging Face's. Declarative `packages.find` cannot search a folder under another package's name, so the packages are
found here, never listed by hand: a new subpackage is picked up without an edit.
"""

from setuptools import find_packages, setup

MAPPED_FOLDERS = ("methods", "datasets")  # folder -> installed as cadbench.<folder>

packages = find_packages(include=["cadbench", "cadbench.*"])
for folder in MAPPED_FOLDERS:
    packages += [f"cadbench.{folder}"] + [f"cadbench.{folder}.{sub}" for sub in find_packages(folder)]

setup(packages=packages, package_dir={"cadbench": "cadbench",
                                      **{f"cadbench.{folder}": folder for folder in MAPPED_FOLDERS}})
