"""NVML's per-process memory (cadbench.measure.nvml): found by UUID under a remapped CUDA_VISIBLE_DEVICES, sampled
as a peak, and null with its reason whenever NVML cannot say. Checked through the fake CUDA layer."""

import pytest
import torch

import cadbench.measure.nvml as nvml_module
from cadbench.measure.cuda import measure_cuda_steps
from cadbench.measure.nvml import ProcessMemorySampler, bare_uuid
from cadbench_fakecuda import GiB, MiB, FakeCudaConfig, gpus, install_for_test

CONTEXT = 300 * MiB
STRANGER = [4242, 7 * GiB]  # another process NVML lists on every GPU


def remapped(monkeypatch, visible="3", nvml="ok"):
    """Four physical GPUs; this process sees only physical GPU 3 (or what `visible` says), as its device 0."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    return install_for_test(monkeypatch, FakeCudaConfig(gpus=gpus(4, other_processes=[STRANGER]),
                                                        context_bytes=CONTEXT, nvml=nvml))


def one_step_of(fake, nbytes):
    return lambda: fake.run_step(persistent=0, transient=nbytes, seconds=0.01)


def check_nvml_finds_the_remapped_device(fake) -> None:
    measured = measure_cuda_steps(one_step_of(fake, 1 * GiB), warmup=1, steps=2, device=torch.device("cuda", 0))
    assert fake.devices[0].physical == 3
    assert measured.nvml.reason is None, measured.nvml.reason
    assert measured.nvml.end_bytes == measured.nvml.peak_bytes == CONTEXT + 1 * GiB
    assert {detail for name, detail in fake.log if name == "nvml.processes"} == {3}


def test_nvml_is_matched_by_uuid_so_torch_device_0_is_found_as_physical_gpu_3(monkeypatch):
    check_nvml_finds_the_remapped_device(remapped(monkeypatch))


def test_a_uuid_prefix_in_cuda_visible_devices_is_followed_too(monkeypatch):
    fake = remapped(monkeypatch, visible="GPU-00000003")
    check_nvml_finds_the_remapped_device(fake)


def test_the_nvml_check_catches_a_lookup_by_torch_index(monkeypatch):
    fake = remapped(monkeypatch)
    monkeypatch.setattr(nvml_module, "find_device",
                        lambda pynvml, uuid: pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device()))
    with pytest.raises(AssertionError):
        check_nvml_finds_the_remapped_device(fake)


def test_the_peak_is_the_largest_sample_and_the_end_value_the_last(monkeypatch):
    fake = remapped(monkeypatch)
    sizes = iter([1 * GiB, 4 * GiB, 2 * GiB])

    def step():
        fake.release_cache()  # the allocator gives its cache back (as after a failed cudaMalloc and a retry)
        fake.run_step(transient=next(sizes), seconds=0.01)

    measured = measure_cuda_steps(step, warmup=0, steps=3, device=torch.device("cuda"))
    assert measured.nvml.peak_bytes == CONTEXT + 4 * GiB  # what the second step left reserved
    assert measured.nvml.end_bytes == CONTEXT + 2 * GiB  # what the last one left
    assert measured.nvml.samples == 4


@pytest.mark.parametrize("mode, reason", [
    ("missing", "pynvml (the nvidia-ml-py package) is not installed"),
    ("init_fails", "NVML could not start: NVMLError_DriverNotLoaded: Driver Not Loaded"),
    ("process_list_refused", "NVML refused the process list: NVMLError_NoPermission: Insufficient Permissions"),
    ("process_hidden", "NVML lists no process"),
    ("memory_unavailable", "NVML lists this process but not its memory"),
])
def test_nvml_missing_or_refusing_gives_null_with_the_reason(monkeypatch, mode, reason):
    fake = remapped(monkeypatch, nvml=mode)
    measured = measure_cuda_steps(one_step_of(fake, GiB), warmup=1, steps=2, device=torch.device("cuda"))
    assert measured.nvml.end_bytes is None and measured.nvml.peak_bytes is None
    assert reason in measured.nvml.reason
    assert measured.peak_allocated_bytes == GiB  # the CUDA figures do not depend on NVML
    assert fake.nvml_open == 0  # NVML is shut down whenever it was started


def test_a_uuid_nvml_does_not_know_is_a_null_with_the_uuid_named(monkeypatch):
    remapped(monkeypatch)
    with ProcessMemorySampler("ffffffff-0000-0000-0000-000000000000") as sampler:
        sampler.sample()
    reading = sampler.reading()
    assert reading.end_bytes is None and "GPU-ffffffff-0000-0000-0000-000000000000" in reading.reason


@pytest.mark.parametrize("written", [
    "GPU-00000003-1111-2222-3333-000000abc003", b"GPU-00000003-1111-2222-3333-000000abc003",
    "00000003-1111-2222-3333-000000ABC003", "MIG-00000003-1111-2222-3333-000000abc003",
    "GPU-00000003-1111-2222-3333-000000abc003\0",
])
def test_uuids_are_compared_without_prefix_case_or_encoding(written):
    assert bare_uuid(written) == "00000003-1111-2222-3333-000000abc003"
