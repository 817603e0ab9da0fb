"""The CUDA measurement protocol (cadbench.measure.cuda), checked on CPU through the fake CUDA layer.

Each check is a function run on the real code, and again on a deliberately broken copy (a mutant made from the real
source), which it must catch: a check that cannot fail proves nothing.
"""

import ast
import itertools
import sys
import types

import pytest
import torch

import cadbench.measure.cuda as cuda_module
from cadbench_fakecuda import GiB, MiB, FakeCudaConfig, FakeCudaError, gpus, install_for_test

WARMUP, STEPS = 2, 3
DURATIONS = [0.9, 0.8, 0.10, 0.30, 0.20]  # seconds per step: 2 warm-up steps, then the 3 timed ones
OPTIMIZER, ACTIVATIONS, AUTOTUNE = 1 * GiB, 2 * GiB, 4 * GiB  # first step keeps OPTIMIZER; AUTOTUNE is one-off
CONTEXT = 500 * MiB


@pytest.fixture
def fake(monkeypatch):
    return install_for_test(monkeypatch, FakeCudaConfig(gpus=gpus(1), context_bytes=CONTEXT))


def step_on(fake):
    """A training step as the fake GPU sees it: the first one allocates the optimizer states (kept) and a large
    one-off transient; every step holds ACTIVATIONS while it runs."""
    count = itertools.count()

    def step():
        n = next(count)
        fake.run_step(persistent=OPTIMIZER if n == 0 else 0,
                      transient=ACTIVATIONS + (AUTOTUNE if n == 0 else 0), seconds=DURATIONS[n])

    return step


def measure(fake, module=cuda_module):
    return module.measure_cuda_steps(step_on(fake), WARMUP, STEPS, torch.device("cuda"))


def check_warm_up_precedes_the_reset(fake, measured) -> None:
    names = fake.names()
    launches = [i for i, name in enumerate(names) if name == "launch"]
    reset = names.index("reset_peak_memory_stats")
    assert len(launches) == WARMUP + STEPS
    assert all(i < reset for i in launches[:WARMUP]), "every warm-up step must run before reset_peak_memory_stats"
    assert all(i > reset for i in launches[WARMUP:]), "every timed step must run after reset_peak_memory_stats"
    # the peak covers the steady timed steps (optimizer states + activations), not the first step's one-off
    assert measured.peak_allocated_bytes == OPTIMIZER + ACTIVATIONS


def check_each_step_between_its_own_events_then_synchronised(fake, measured) -> None:
    log = fake.log
    reset = fake.names().index("reset_peak_memory_stats")
    timed = [(name, detail) for name, detail in log[reset:] if name in ("launch", "event.record")]
    assert [name for name, _ in timed] == ["event.record", "launch", "event.record"] * STEPS, \
        "each timed step must sit between its own pair of events"
    pairs = [(timed[3 * n][1], timed[3 * n + 2][1]) for n in range(STEPS)]
    assert len({event for pair in pairs for event in pair}) == 2 * STEPS, "each step needs its own two events"
    records = [(i, event) for i, (name, event) in enumerate(log) if name == "event.record"]
    last_record = records[-1][0]
    reads = [i for i, (name, _) in enumerate(log)
             if name in ("max_memory_allocated", "max_memory_reserved", "event.elapsed_time")]
    assert reads and min(reads) > last_record
    assert "synchronize" in [name for name, _ in log[last_record:min(reads)]], \
        "the device must be synchronised after the last step and before anything is read"
    assert [pair for name, pair in log if name == "event.elapsed_time"] == [list(pair) for pair in pairs]
    assert measured.times.seconds == pytest.approx(DURATIONS[WARMUP:])


def mutant(module: types.ModuleType, edit) -> types.ModuleType:
    """A copy of `module` whose `measure_cuda_steps` body was changed by `edit(body)` (a list of statements)."""
    tree = ast.parse(open(module.__file__, encoding="utf-8").read())
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef)
                    and node.name == "measure_cuda_steps")
    edit(function.body)
    copy = types.ModuleType(f"{module.__name__}_mutant")
    sys.modules[copy.__name__] = copy  # dataclasses look their module up while the class is made
    try:
        exec(compile(ast.fix_missing_locations(tree), f"<mutant of {module.__file__}>", "exec"), copy.__dict__)
    finally:
        del sys.modules[copy.__name__]
    return copy


def statement_index(body, predicate) -> int:
    matches = [i for i, statement in enumerate(body) if predicate(ast.unparse(statement))]
    assert len(matches) == 1, "the mutant no longer applies to measure_cuda_steps: update it with the code"
    return matches[0]


def reset_before_warm_up(body) -> None:
    reset = statement_index(body, lambda text: text.startswith("torch.cuda.reset_peak_memory_stats"))
    warm_up = statement_index(body, lambda text: text.startswith("for _ in range(warmup)"))
    body.insert(warm_up, body.pop(reset))


def no_synchronize_after_the_steps(body) -> None:
    with_block = statement_index(body, lambda text: text.startswith("with ProcessMemorySampler"))
    inner = body[with_block].body
    inner.pop(statement_index(inner, lambda text: text.startswith("torch.cuda.synchronize")))


def one_pair_of_events_for_all_steps(body) -> None:
    """Times the whole loop with the first step's events (a plausible 'optimisation' that breaks per-step times)."""
    with_block = statement_index(body, lambda text: text.startswith("with ProcessMemorySampler"))
    inner = body[with_block].body
    loop = inner[statement_index(inner, lambda text: text.startswith("for start, end in events"))]
    loop.body = [statement for statement in loop.body if "record" not in ast.unparse(statement)]
    inner.insert(0, ast.parse("events[0][0].record(stream)").body[0])
    inner.insert(2, ast.parse("events[0][1].record(stream)").body[0])


def test_warm_up_runs_before_the_peak_is_reset_so_its_one_off_allocations_are_not_counted(fake):
    measured = measure(fake)
    check_warm_up_precedes_the_reset(fake, measured)
    # reserved memory keeps what the caching allocator took during warm-up (faithful to CUDA): it is not reset
    assert measured.peak_reserved_bytes == OPTIMIZER + ACTIVATIONS + AUTOTUNE


def test_each_timed_step_sits_between_its_own_events_and_the_device_is_synchronised_before_reading(fake):
    check_each_step_between_its_own_events_then_synchronised(fake, measure(fake))


def test_the_protocol_check_catches_a_reset_made_before_the_warm_up(monkeypatch):
    broken = install_for_test(monkeypatch, FakeCudaConfig(gpus=gpus(1)))
    measured = measure(broken, mutant(cuda_module, reset_before_warm_up))
    with pytest.raises(AssertionError):
        check_warm_up_precedes_the_reset(broken, measured)


def test_the_protocol_check_catches_a_missing_synchronisation_before_reading(monkeypatch):
    broken = install_for_test(monkeypatch, FakeCudaConfig(gpus=gpus(1)))
    with pytest.raises(RuntimeError, match="not ready"):  # events read before the device finished them
        measure(broken, mutant(cuda_module, no_synchronize_after_the_steps))


def test_the_protocol_check_catches_steps_that_share_one_pair_of_events(monkeypatch):
    broken = install_for_test(monkeypatch, FakeCudaConfig(gpus=gpus(1)))
    try:
        measured = measure(broken, mutant(cuda_module, one_pair_of_events_for_all_steps))
    except RuntimeError:
        return  # events never recorded: caught by the fake itself
    with pytest.raises(AssertionError):
        check_each_step_between_its_own_events_then_synchronised(broken, measured)


def test_nvml_peak_and_end_value_are_reported_beside_cudas_peaks(fake):
    measured = measure(fake)
    process = CONTEXT + OPTIMIZER + ACTIVATIONS + AUTOTUNE  # NVML: the context plus everything reserved
    assert (measured.nvml.end_bytes, measured.nvml.peak_bytes, measured.nvml.reason) == (process, process, None)
    assert measured.nvml.samples == STEPS + 1  # after each timed step, and once after the final synchronisation
    names = fake.names()
    assert names.count("nvml.processes") == STEPS + 1
    assert names.index("nvml.processes") > names.index("reset_peak_memory_stats")


def test_a_step_that_is_not_on_a_cuda_device_is_refused():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        cuda_module.measure_cuda_steps(lambda: None, 0, 1, torch.device("cpu"))


def test_the_fake_fails_loudly_on_cuda_calls_it_does_not_model(fake):
    import pynvml

    with pytest.raises(FakeCudaError, match="torch.cuda.memory_allocated is not modelled"):
        torch.cuda.memory_allocated()
    with pytest.raises(FakeCudaError, match="torch.cuda.memory.memory_stats is not modelled"):
        torch.cuda.memory.memory_stats()
    with pytest.raises(FakeCudaError, match="multi_processor_count is not modelled"):
        torch.cuda.get_device_properties(0).multi_processor_count
    with pytest.raises(FakeCudaError, match="pynvml.nvmlDeviceGetMemoryInfo is not modelled"):
        pynvml.nvmlDeviceGetMemoryInfo(None)
    try:
        torch.cuda.Stream()
    except Exception:  # noqa: BLE001 — the point: code under test catching Exception cannot hide a gap
        pytest.fail("an unmodelled call must not be an Exception that `except Exception` swallows")
    except FakeCudaError:
        pass
