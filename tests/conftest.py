import pytest
import torch

from cadbench.methods import BUILTIN_METHODS
from cadbench.datasets.batch import random_batch
from cadbench.training.setup import prepare

METHODS = tuple(BUILTIN_METHODS)  # every built-in method is tested by every per-method test


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
