"""Launchers decide WHERE the cells of a sweep run, never how they are measured: each takes the unfinished cells and
yields their rows as they finish; the sweep's process alone appends them to `--out` (through the result store,
which holds the folder's lock), so rows are persisted in whatever order cells finish, none lost or written twice.

    available_launchers()              the launcher names: local, gpus, slurm
    get_launcher(name)                 a launcher class (an unknown name is a one-line CadbenchError)
    launcher_for(config)               the launcher a typed config asks for
    LocalConfig                        each device cell in a fresh process, one after another (the default)
    GpusConfig(gpus=(0, 1, 3))         up to one cell per listed GPU at a time, each process pinned to its GPU
    SlurmConfig(partition=...)         the cells as a Slurm array job through submitit; waits, or detaches

Each config is a frozen dataclass validated when it is made; its launcher's `check()` refuses, before anything
runs, what only the machine can tell (a GPU that does not exist, Slurm missing, an unknown partition).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cadbench._lazy import lazy_exports
from cadbench.errors import unknown_name_error

if TYPE_CHECKING:
    from cadbench.harness.launchers.base import Launcher

# name -> (module, class); modules load only when their launcher is used
_LAUNCHERS = {
    "local": ("cadbench.harness.launchers.local", "LocalLauncher"),
    "gpus": ("cadbench.harness.launchers.gpus", "GpusLauncher"),
    "slurm": ("cadbench.harness.launchers.slurm.launcher", "SlurmLauncher"),
}
LAUNCHER_NAMES: tuple[str, ...] = tuple(_LAUNCHERS)


def available_launchers() -> tuple[str, ...]:
    return LAUNCHER_NAMES


def get_launcher(name: str) -> "type[Launcher]":
    if name not in _LAUNCHERS:
        raise unknown_name_error("launcher", name, _LAUNCHERS)
    module, attribute = _LAUNCHERS[name]
    return getattr(importlib.import_module(module), attribute)


def launcher_for(config: Any) -> "Launcher":
    """The launcher of a config (LocalConfig, GpusConfig, SlurmConfig), or of a launcher's name with its defaults."""
    if isinstance(config, str):
        launcher_class = get_launcher(config)
        return launcher_class(launcher_class.config_class())
    return get_launcher(config.NAME)(config)


_EXPORTS = {"LocalConfig": "config", "GpusConfig": "config", "SlurmConfig": "slurm.config",
            "CellRun": "base", "Launcher": "base"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = ["LAUNCHER_NAMES", "available_launchers", "get_launcher", "launcher_for", *sorted(_EXPORTS)]
