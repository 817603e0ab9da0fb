"""cadbench: benchmark and memory-profile fine-tuning methods for Meta's Segment Anything.

`cadbench.run(...)` sweeps a grid and returns a pandas DataFrame; `cadbench.load_results(path)` reads one back.
"""

import importlib.abc
import importlib.util
import sys
from pathlib import Path

from cadbench.version import __version__

__all__ = ["__version__", "load_results", "run"]


class _SourceTreeSubpackages(importlib.abc.MetaPathFinder):
    """Run from a source checkout (e.g. `python -m cadbench` in the repository root, which puts the checkout's
    `cadbench/` first on sys.path), map `cadbench.methods` and `cadbench.datasets` to the sibling `methods/` and
    `datasets/` folders, as the installed package does."""

    def __init__(self, locations: dict[str, Path]) -> None:
        self.locations = locations

    def find_spec(self, fullname, path=None, target=None):
        location = self.locations.get(fullname)
        if location is None:
            return None
        return importlib.util.spec_from_file_location(fullname, location / "__init__.py",
                                                      submodule_search_locations=[str(location)])


def _map_source_tree() -> None:
    here = Path(__file__).resolve().parent
    root = here.parent
    if (here / "methods").is_dir() or not (root / "pyproject.toml").is_file():
        return  # installed: the subpackages are where they belong
    locations = {f"cadbench.{name}": root / name for name in ("methods", "datasets")
                 if (root / name / "__init__.py").is_file()}
    if locations:
        sys.meta_path.append(_SourceTreeSubpackages(locations))


_map_source_tree()


def __getattr__(name: str):
    # Lazy, so that `import cadbench` (and the cell subprocesses' start-up) does not import the whole harness.
    if name == "run":
        from cadbench.api import run

        return run
    if name == "load_results":
        from cadbench.harness.results.documents import load_results

        return load_results
    raise AttributeError(f"module 'cadbench' has no attribute {name!r}")
