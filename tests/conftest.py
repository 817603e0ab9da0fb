import os
from pathlib import Path

# One thread per test process and per process it starts (cell processes and Slurm jobs inherit the variable):
# pytest-xdist already runs one worker per core, and the test-scale SAM is too small for intra-op threads to pay
# off. With two threads, a fine-tune of 18 test-scale steps took 22 s of CPU (31 s wall) on a busy 2-core machine;
# with one, 8 s (13 s wall). Two workers of two threads each on two cores were slower still.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Likewise one estimate process at a time (cadbench.harness.processes.default_jobs): a second one would only add its
# imports and a cold op cache on a core another worker is using. Tests of the parallel path pass --jobs themselves.
os.environ.setdefault("CADBENCH_JOBS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from cadbench.methods import BUILTIN_METHODS  # noqa: E402
from cadbench.datasets.batch import random_batch  # noqa: E402
from cadbench.training.setup import prepare  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # in case torch was imported before this file

# Every built-in method that trains is tested by every per-method training test; zero_shot, which does not train, has
# its own (tests/test_methods_zero_shot.py) and is in every estimator test that walks BUILTIN_METHODS.
METHODS = tuple(name for name, method in BUILTIN_METHODS.items() if method.trains)
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


def pytest_collection_modifyitems(config, items):
    """The order in which `--dist loadfile` hands files to the workers (pyproject's addopts turn off xdist's own
    reordering, `--no-loadscope-reorder`): the memory gate first, since its one test replays the whole default grid
    (about 3 minutes) and, handed out last (xdist's reordering by test count undid an earlier sort that put it first),
    left the other worker idle for most of that; then the files with the most tests, as xdist itself orders them."""
    from collections import Counter

    tests_per_file = Counter(item.path for item in items)
    items.sort(key=lambda item: (item.get_closest_marker("memory_gate") is None, -tests_per_file[item.path],
                                 str(item.path)))


# Files whose full-size estimates are cells of the memory gate's default grid: with `--dist loadfile` they run on the
# gate's worker, after it, so they read its finished estimates and warm replays (the estimator's per-process caches)
# instead of replaying those cells again on the other worker. Without the gate (the README's command) they are one
# work unit like any file.
WITH_THE_GATE = ("test_memory_gate.py", "test_estimator_fullsize.py", "test_estimator_reserved.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class FilesWithTheGateTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "the memory gate's estimates" if Path(path).name in WITH_THE_GATE else path

    return FilesWithTheGateTogether(config, log)
