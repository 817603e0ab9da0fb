import os
from pathlib import Path

import pytest
import torch

from cadbench.methods import BUILTIN_METHODS
from cadbench.datasets.batch import random_batch
from cadbench.training.setup import prepare

METHODS = tuple(BUILTIN_METHODS)  # every built-in method is tested by every per-method test
PLUGINS = Path(__file__).parent / "plugins"  # the misbehaving test methods (raising, oom, crashing, slow, ...)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)


@pytest.fixture(params=METHODS)
def method_name(request) -> str:
    return request.param


@pytest.fixture
def trainee(method_name):
    return prepare(method_name, "test_scale")


@pytest.fixture
def batch():
    return random_batch(image_size=128, batch_size=2, seed=1)


def _forget_registered_methods() -> None:
    from cadbench import registry

    registry.available_methods.cache_clear()
    registry.resolve_method.cache_clear()


@pytest.fixture
def plugin_methods(monkeypatch):
    """The test methods of tests/plugins registered by entry point, in this process and in every process it starts
    (a cell process finds them through PYTHONPATH); the registry forgets them again afterwards."""
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")])))
    _forget_registered_methods()
    yield
    _forget_registered_methods()
