"""The malloc tunables of a cell process that runs on the CPU (cadbench.measure.cpu_allocator): set by the launcher for
CPU cells alone, never over the user's own, and said in the row's `device` column. Their effect on a step's time is
measured by benchmarks/bench_cpu_allocator.py, not here."""

import pytest
import torch

from cadbench.harness.launchers import local
from cadbench.harness.options import RunContext, RunOptions
from cadbench.measure import cpu_allocator
from cadbench.measure.cpu_allocator import TUNABLES, cell_process_environment, describe_cpu, short_cpu_description
from cadbench.measure.device import describe_device
from cadbench.vocabulary.cell import Cell


@pytest.fixture
def glibc(monkeypatch):
    monkeypatch.setattr(cpu_allocator.platform, "libc_ver", lambda: ("glibc", "2.36"))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)


def test_a_cpu_cell_process_gets_the_tunables_unless_the_user_set_their_own(glibc, monkeypatch):
    assert cell_process_environment() == {"GLIBC_TUNABLES": TUNABLES}
    assert "glibc.malloc.mmap_threshold=" in TUNABLES and "glibc.malloc.trim_threshold=" in TUNABLES
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert cell_process_environment() == {}  # the user's are kept as they are
    monkeypatch.setattr(cpu_allocator.platform, "libc_ver", lambda: ("", ""))
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert cell_process_environment() == {}  # not glibc (macOS, musl): nothing to say


@pytest.mark.parametrize("mode, tuned", [("cpu", True), ("cuda", False), ("estimate", False)])
def test_the_launcher_starts_only_cpu_cells_with_them(glibc, monkeypatch, mode, tuned):
    seen = {}

    def run_cell_process(argv, env, on_start=None):
        seen.update(env)
        return 1, "stopped by the test"

    monkeypatch.setattr(local, "run_cell_process", run_cell_process)
    row = local.run_in_fresh_process(Cell("decoder_only", "test_scale", 1, "fp32"), mode, RunOptions(),
                                     RunContext(), {})
    assert row["status"] == "error"
    assert (seen.get("GLIBC_TUNABLES") == TUNABLES) is tuned
    assert seen["PYTHONUNBUFFERED"] == "1"


def test_the_row_says_which_tunables_a_cpu_step_ran_with(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", TUNABLES)
    assert describe_device(torch.device("cpu")).columns()["device"] == f"cpu (GLIBC_TUNABLES={TUNABLES})"
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert describe_cpu() == "cpu"


def test_a_table_names_the_tunables_a_cpu_step_ran_with_without_their_value(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", TUNABLES)
    assert short_cpu_description(describe_cpu()) == "cpu (GLIBC_TUNABLES)"
    monkeypatch.delenv("GLIBC_TUNABLES")
    assert short_cpu_description(describe_cpu()) == "cpu"
    assert short_cpu_description("NVIDIA Fake H100 (80GB)") == "NVIDIA Fake H100 (80GB)"  # a GPU's name, whole
