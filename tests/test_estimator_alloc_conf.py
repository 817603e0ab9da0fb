"""The caching allocator's settings: PyTorch's grammar and checks (c10/core/AllocatorConfig.cpp), one-line errors."""

from dataclasses import replace

import pytest

from cadbench.errors import CadbenchError
from cadbench.estimator.alloc_conf import AllocatorConfig, environment_text, resolve

MiB = 1 << 20


def test_defaults_are_pytorchs():
    config = AllocatorConfig.parse("")
    assert config == AllocatorConfig() and config.label == "default" and config.simulated
    assert config.max_split_size == 2**64 - 1 and config.max_non_split_rounding == 20 * MiB
    assert config.large_segment_size == 20 * MiB and not config.expandable_segments
    assert all(config.divisions_for(size) == 0 for size in (1, MiB, 2**40))


def test_simulated_settings_parse_with_whitespace_ignored():
    config = AllocatorConfig.parse(" max_split_size_mb: 128, expandable_segments:True ,"
                                   "max_non_split_rounding_mb:64,large_segment_size_mb:32")
    assert (config.max_split_size, config.expandable_segments) == (128 * MiB, True)
    assert (config.max_non_split_rounding, config.large_segment_size) == (64 * MiB, 32 * MiB)
    assert config.text == "max_split_size_mb:128,expandable_segments:True,max_non_split_rounding_mb:64," \
                          "large_segment_size_mb:32"


def test_roundup_power2_divisions_fill_intervals_as_pytorch_does():
    """parseRoundUpPower2Divisions: each bound sets its interval [2^i MiB, 2^(i+1) MiB); the first bound's value also
    covers everything below it, '>' everything after the last bound, and intervals between listed bounds keep 0
    (plain rounding)."""
    config = AllocatorConfig.parse("roundup_power2_divisions:[64:8,256:4,1024:2,>:1]")
    sizes_mib = (1, 64, 100, 128, 256, 600, 1024, 4096)
    assert [config.divisions_for(mib * MiB) for mib in sizes_mib] == [8, 8, 8, 0, 4, 0, 2, 1]
    assert AllocatorConfig.parse("roundup_power2_divisions:4").divisions_for(10 * 2**30) == 4


def test_settings_without_effect_on_device_blocks_are_accepted_and_some_are_not_simulated():
    assert AllocatorConfig.parse("pinned_use_cuda_host_register:True,release_lock_on_cudamalloc:True").simulated
    config = AllocatorConfig.parse("backend:cudaMallocAsync,per_process_memory_fraction:0.8")
    assert config.not_simulated == ("backend:cudaMallocAsync", "per_process_memory_fraction")


def test_a_garbage_collection_threshold_without_a_memory_fraction_is_simulated_as_the_defaults_with_a_note():
    """PyTorch collects only when a per-process memory fraction is set (DeviceCachingAllocator::malloc: `if
    (set_fraction && garbage_collection_threshold() > 0.0)`), so the threshold alone changes nothing."""
    alone = AllocatorConfig.parse("garbage_collection_threshold:0.6")
    assert alone.simulated and replace(alone, text="") == AllocatorConfig()
    assert alone.label == "garbage_collection_threshold:0.6"
    assert "changes nothing" in alone.notes[0] and not AllocatorConfig().notes
    with_fraction = AllocatorConfig.parse("per_process_memory_fraction:0.9,garbage_collection_threshold:0.6")
    assert with_fraction.not_simulated == ("per_process_memory_fraction", "garbage_collection_threshold")
    assert not with_fraction.notes


@pytest.mark.parametrize("text, culprit", [
    ("max_split_size_mb:10", "max_split_size_mb: must be at least 20"),
    ("max_non_split_rounding_mb:5", "max_non_split_rounding_mb: must be at least 20"),
    ("large_segment_size_mb:10", "large_segment_size_mb: must be at least 11"),
    ("expandable_segments:true", "expandable_segments: expected True or False"),
    ("roundup_power2_divisions:3", "roundup_power2_divisions: the division count must be a power of 2"),
    ("roundup_power2_divisions:[100:4]", "roundup_power2_divisions: an interval bound must be a power of 2"),
    ("garbage_collection_threshold:1.5", "garbage_collection_threshold: must lie in (0.0, 1.0)"),
    ("max_split_size_mb", "max_split_size_mb: its value is missing"),
    ("expandable_segment:True", "'expandable_segment' is not one PyTorch knows"),
    ("backend:cuda", "backend: must be native or cudaMallocAsync"),
])
def test_bad_settings_are_refused_in_one_line_naming_the_key(text, culprit):
    with pytest.raises(CadbenchError) as raised:
        AllocatorConfig.parse(text)
    assert culprit in str(raised.value) and "\n" not in str(raised.value)


def test_the_environment_is_read_as_pytorch_reads_it():
    assert environment_text({}) is None
    assert environment_text({"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}) == "expandable_segments:True"
    both = {"PYTORCH_ALLOC_CONF": "max_split_size_mb:64", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    assert environment_text(both) == "max_split_size_mb:64"  # AcceleratorAllocatorConfig looks here first
    assert resolve(None, {"PYTORCH_CUDA_ALLOC_CONF": " expandable_segments : True "}) == "expandable_segments:True"
    assert resolve("", both) == ""  # given explicitly: PyTorch's defaults
    with pytest.raises(CadbenchError, match="^PYTORCH_CUDA_ALLOC_CONF: allocator setting max_split_size_mb"):
        resolve(None, {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:1"})
    with pytest.raises(CadbenchError, match="^--alloc-conf: allocator setting"):
        resolve("max_split_size_mb:1", {})
