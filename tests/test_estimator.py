"""The GPU-free estimator at test scale: exact against real CPU replays, its shortcuts exact, its errors one line.

Full-size checks (the paper's headline figures, shortcuts proven on vit_b) are in test_estimator_fullsize.py.
"""

import importlib
import importlib.util
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from cadbench.backbones import build_sam
from cadbench.errors import CadbenchError
from cadbench.estimator import MemoryEstimate, estimate_cell, estimate_setup, fit_table, largest_fitting_batch
from cadbench.estimator.cuda_runtime import allocator_bytes, step_workspace_bytes
from cadbench.methods import BUILTIN_METHODS, Method
from cadbench.training.protocol import build_optimizer
from cadbench.datasets.batch import random_batch
from cadbench.training.plan import Trainee
from cadbench.training.setup import TrainingSetup, make_training_setup
from cadbench.vocabulary.cell import Cell

METHODS = tuple(BUILTIN_METHODS)
ROW_KEYS = {"peak_memory_bytes", "flops_per_step", "breakdown_parameters_bytes", "breakdown_gradients_bytes",
            "breakdown_optimizer_states_bytes", "breakdown_activations_bytes", "breakdown_temporaries_bytes",
            "reserved_memory_bytes", "fragmentation_ratio", "oom_capacity_bytes", "alloc_conf"}


def _setup(method: str, batch_size: int = 2, precision: str = "fp32", prompts_per_image: str | int = "image",
           backbone: str = "test_scale"):
    return lambda: make_training_setup(Cell(method, backbone, batch_size, precision,
                                            prompts_per_image=prompts_per_image))


_needs_sam2 = pytest.mark.skipif(importlib.util.find_spec("sam2") is None,
                                 reason='the sam2 extra is not installed: SAM2_BUILD_CUDA=0 pip install '
                                        '--no-build-isolation "cadbench[sam2]"')
# SAM 2 (the test-scale SAM 2, built by Meta's builder on the CPU for the real replay, on the meta device and then
# fake for the estimate: cadbench.families.sam2): the methods defined on it.
_needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="the peft extra is not installed")
SAM2_CELLS = [pytest.param(method, precision, "sam2_test_scale",
                           marks=[_needs_sam2, _needs_peft] if method == "peft" else _needs_sam2)
              for method, precision in [("decoder_only", "fp32"), ("full", "fp32"), ("full", "bf16"), ("lora", "fp32"),
                                        ("peft", "fp32"), ("cad", "fp32"), ("sam_adapter", "fp32")]]


@pytest.mark.parametrize("method, precision, backbone",
                         [(m, "fp32", "test_scale") for m in METHODS] + [("sam_adapter", "bf16", "test_scale")]
                         + SAM2_CELLS)
def test_estimate_equals_the_tracker_on_a_real_cpu_run(method, precision, backbone):
    """The estimator's exactness test: same step, same seed, same steps; fake tensors vs real ones."""
    fake = estimate_setup(_setup(method, precision=precision, backbone=backbone))
    real = estimate_setup(_setup(method, precision=precision, backbone=backbone), fake=False)
    assert fake.replayed_peak_bytes == real.replayed_peak_bytes
    assert fake.peak_bytes == real.peak_bytes
    assert fake.breakdown == real.breakdown
    if backbone == "test_scale":
        assert fake.flops_per_step == real.flops_per_step > 0
    else:
        # Hiera's and SAM 2's decoder attention call scaled_dot_product_attention, whose values the real CPU replay
        # computes outside the counted dispatch (cuda_sdpa), so only the fake replay counts their FLOPs.
        assert fake.flops_per_step > real.flops_per_step > 0
    # (The running totals can differ transiently: FakeTensorMode gives ConvTranspose2d's weight gradient other
    # strides than the CPU kernel, so AccumulateGrad copies it instead of stealing it. It never reaches the peak.)


@pytest.mark.parametrize("method, backbone", [(m, "test_scale") for m in METHODS]
                         + [pytest.param(m, "sam2_test_scale", marks=_needs_sam2) for m in ("decoder_only", "full")])
def test_estimate_equals_the_tracker_on_a_real_cpu_run_with_several_objects_per_image(method, backbone):
    """--prompts-per-image 5: five boxes and object masks per image, decoded in one call per image; fake = real."""
    fake = estimate_setup(_setup(method, prompts_per_image=5, backbone=backbone))
    real = estimate_setup(_setup(method, prompts_per_image=5, backbone=backbone), fake=False)
    assert fake.peak_bytes == real.peak_bytes
    assert fake.breakdown == real.breakdown
    if backbone == "test_scale":
        assert fake.flops_per_step == real.flops_per_step > 0
    else:  # (only the fake replay counts scaled_dot_product_attention's FLOPs: see the test above)
        assert fake.flops_per_step > real.flops_per_step > 0
    # five decodes per image, not one
    assert fake.flops_per_step > estimate_setup(_setup(method, backbone=backbone)).flops_per_step


def test_estimate_cell_replays_the_cells_objects_per_image():
    """The shared warm replay (estimator.cells) swaps in a batch with the cell's N objects, equal to a fresh one."""
    cell = Cell("decoder_only", "test_scale", 2, prompts_per_image=7)
    fresh = estimate_setup(_setup("decoder_only", prompts_per_image=7))
    assert estimate_cell(cell).peak_bytes == fresh.peak_bytes > estimate_cell(Cell("decoder_only", "test_scale",
                                                                                    2)).peak_bytes


def test_a_setup_built_before_the_replay_is_counted_too():
    built_outside = make_training_setup(Cell("sam_adapter", "test_scale", 2))
    assert estimate_setup(lambda: built_outside, fake=False) == estimate_setup(_setup("sam_adapter"), fake=False)


@pytest.mark.parametrize("method", METHODS)
def test_op_cache_replays_exactly_what_fake_tensor_mode_does(method):
    assert estimate_setup(_setup(method)) == estimate_setup(_setup(method), cache_ops=False)


IMPORT_TIME_TENSORS = """import torch
TABLE = torch.ones(4096)  # 16 KiB, made when the module is first imported
PRODUCT = torch.ones(64, 64) @ torch.ones(64, 64)  # FLOPs at import time
"""


def test_a_module_first_imported_during_a_replay_is_no_part_of_it(tmp_path, monkeypatch):
    """A module's top-level code (peft's `scale=torch.tensor(1)` defaults) runs once per process, wherever it is first
    imported: a replay that imports it counts the same bytes and FLOPs as one that finds it imported, and leaves plain
    tensors in it, not fake ones."""
    name = "cadbench_test_import_time_tensors"
    (tmp_path / f"{name}.py").write_text(IMPORT_TIME_TENSORS)
    monkeypatch.syspath_prepend(str(tmp_path))

    def make():
        importlib.import_module(name)
        return make_training_setup(Cell("decoder_only", "test_scale", 2))

    try:
        first = estimate_setup(make)  # the fake replay imports the module
        assert type(sys.modules[name].TABLE) is torch.Tensor and type(sys.modules[name].PRODUCT) is torch.Tensor
        assert first == estimate_setup(make) == estimate_setup(_setup("decoder_only"))
        sys.modules.pop(name)
        real = estimate_setup(make, fake=False)  # the real replay imports it again
        assert (real.replayed_peak_bytes, real.flops_per_step) == (first.replayed_peak_bytes, first.flops_per_step)
    finally:
        sys.modules.pop(name, None)


def test_a_replay_started_by_a_module_being_imported_counts_its_step(tmp_path, monkeypatch):
    """Only imports that start inside the replay are left out, not one under way around it (here the replay's own
    import of another module makes it look for imports in progress)."""
    name, imported_inside = "cadbench_test_estimates_when_imported", "cadbench_test_imported_inside"
    (tmp_path / f"{imported_inside}.py").write_text(IMPORT_TIME_TENSORS)
    (tmp_path / f"{name}.py").write_text(
        "import importlib\n"
        "from cadbench.estimator import estimate_setup\n"
        "from cadbench.training.setup import make_training_setup\n"
        "from cadbench.vocabulary.cell import Cell\n"
        f"ESTIMATE = estimate_setup(lambda: importlib.import_module({imported_inside!r}) and "
        "make_training_setup(Cell('decoder_only', 'test_scale', 2)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert importlib.import_module(name).ESTIMATE == estimate_setup(_setup("decoder_only"))
    finally:
        sys.modules.pop(name, None)
        sys.modules.pop(imported_inside, None)


def assert_same_estimate(reused: MemoryEstimate, fresh: MemoryEstimate) -> None:
    """Equal in everything but the timeline's first points: after a step at another batch size, the gradients
    freed by zero_grad can be laid out differently (same total) and leave in another order. The caching-allocator
    simulation runs on the history of a fresh run at the batch size (allocation_trace), so it is equal too."""
    assert (reused.peak_bytes, reused.replayed_peak_bytes, reused.breakdown, reused.flops_per_step) == \
        (fresh.peak_bytes, fresh.replayed_peak_bytes, fresh.breakdown, fresh.flops_per_step)
    assert (reused.reserved_bytes, reused.allocator_budget_bytes, reused.allocator) == \
        (fresh.reserved_bytes, fresh.allocator_budget_bytes, fresh.allocator)
    assert reused.top_activation_modules == fresh.top_activation_modules and reused.notes == fresh.notes
    assert max(live for _, live in reused.timeline) == max(live for _, live in fresh.timeline)


@pytest.mark.parametrize("method", METHODS)
def test_cells_reusing_one_warm_replay_equal_fresh_replays(method):
    """estimate_cell warms up once at batch size 1 and swaps batches; a fresh replay builds and warms up at B."""
    for batch_size in (2, 1):  # B=2 after the warm-up at 1, then B=1 after a step at 2
        fresh = estimate_setup(_setup(method, batch_size))
        assert_same_estimate(estimate_cell(Cell(method, "test_scale", batch_size)), fresh)


def test_breakdown_roles_sum_to_the_peak_and_match_the_model():
    kept = {}

    def make():
        kept["setup"] = make_training_setup(Cell("cad", "test_scale", 2))
        return kept["setup"]

    estimate = estimate_setup(make)
    breakdown, setup = estimate.breakdown, kept["setup"]
    assert breakdown.total == estimate.peak_bytes
    assert breakdown.parameters == sum(allocator_bytes(4 * p.numel()) for p in setup.module.parameters())
    stepped = [p for p in setup.module.parameters() if p in setup.optimizer.state]
    # AdamW keeps exp_avg and exp_avg_sq on the device; its step counters stay on the host (not capturable, not
    # fused) and are not counted. Parameters that never get a gradient (the IoU head, unused by the shared loss)
    # get no state at all.
    assert breakdown.optimizer_states == 2 * sum(allocator_bytes(4 * p.numel()) for p in stepped)
    assert all(state["step"].device.type == "cpu" and state["step"].dim() == 0
               for state in setup.optimizer.state.values())
    unstepped = {name for name, p in setup.module.named_parameters()
                 if p.requires_grad and p not in setup.optimizer.state}
    assert unstepped and all(name.startswith("sam.mask_decoder.iou_prediction_head.") for name in unstepped)
    assert breakdown.temporaries >= estimate.workspace_bytes == step_workspace_bytes()
    assert estimate.top_activation_modules and estimate.top_activation_modules[0][0].startswith("adapter.")


def test_timeline_and_row_fields():
    estimate = estimate_cell(Cell("sam_adapter", "test_scale", 2))
    phases = [phase for phase, _ in estimate.timeline]
    assert 2 < len(estimate.timeline) <= 500
    assert max(live for _, live in estimate.timeline) == estimate.peak_bytes
    assert set(phases) == {"forward", "backward", "optimizer"} and phases[-1] == "optimizer"
    row = estimate.as_row_fields()
    assert set(row) == ROW_KEYS and row["peak_memory_bytes"] == estimate.peak_bytes
    assert sum(value for key, value in row.items() if key.startswith("breakdown_")) == estimate.peak_bytes
    assert isinstance(estimate, MemoryEstimate) and any("cuDNN" in note for note in estimate.notes)


def test_flops_equal_flop_counter_mode():
    setup = make_training_setup(Cell("cad", "test_scale", 2))
    setup.step()
    with FlopCounterMode(display=False) as counter:
        setup.step()
    assert estimate_setup(_setup("cad")).flops_per_step == counter.get_total_flops()


def test_bf16_needs_less_than_fp32_at_test_scale():
    for method in METHODS:
        bf16, fp32 = estimate_cell(Cell(method, "test_scale", 2, "bf16")), estimate_cell(Cell(method, "test_scale", 2))
        assert bf16.peak_bytes < fp32.peak_bytes


@torch.library.custom_op("cadbench_test::no_fake_impl", mutates_args=())
def _no_fake_impl(x: torch.Tensor) -> torch.Tensor:
    return x.clone()


class _UsesOpWithoutFakeImpl(Method):
    name = "uses_op_without_fake_impl"
    summary = "test method: an op with a CPU kernel but no fake implementation"

    def image_embeddings(self, images):
        with torch.no_grad():
            embeddings = self.sam.image_encoder(self.normalize(images))
        return _no_fake_impl(embeddings)


class _ReadsValues(Method):
    name = "reads_values"
    summary = "test method: a data-dependent op"

    def image_embeddings(self, images):
        with torch.no_grad():
            embeddings = self.sam.image_encoder(self.normalize(images))
        return embeddings * int((embeddings > 0).sum())


@pytest.mark.parametrize("method_class, op", [(_UsesOpWithoutFakeImpl, "cadbench_test.no_fake_impl.default"),
                                               (_ReadsValues, "aten._local_scalar_dense.default")])
def test_step_that_cannot_run_on_fake_tensors_is_a_one_line_error(method_class, op):
    def make():
        built = build_sam("test_scale")
        method = method_class(built.sam)
        trainee = Trainee(method, build_optimizer(method.trainable_parameters()), built)
        return TrainingSetup(trainee, random_batch(built.spec.image_size, 1), "fp32")

    make().step()  # it does run for real
    with pytest.raises(CadbenchError) as error:
        estimate_setup(make)
    message = str(error.value)
    assert "\n" not in message and op in message and method_class.name in message


def test_bad_arguments():
    with pytest.raises(CadbenchError, match="unknown method"):
        estimate_cell(Cell("nope", "test_scale", 1))
    with pytest.raises(CadbenchError, match="unknown backbone"):
        estimate_cell(Cell("cad", "vit_x", 1))
    with pytest.raises(CadbenchError, match="unknown precision"):
        estimate_cell(Cell("cad", "test_scale", 1, "fp8"))
    with pytest.raises(CadbenchError, match="batch size"):
        estimate_cell(Cell("cad", "test_scale", 0))
    with pytest.raises(ValueError):
        estimate_setup(_setup("cad"), steps=1)


def test_fit_is_monotone_in_capacity_and_zero_below_the_parameters():
    """A batch size fits when its simulated OOM line (allocator budget + CUDA context) is within the capacity."""
    peak = {b: estimate_cell(Cell("cad", "test_scale", b)).allocator_budget_bytes for b in (1, 2, 3, 4)}
    assert list(peak.values()) == sorted(peak.values())
    context = 10**6
    capacities = [peak[1] + context - 1, peak[1] + context, peak[3] + context, peak[4] + context - 1, 10**12]
    largest = [largest_fitting_batch(Cell("cad", "test_scale", 1), c, cuda_context_bytes=context, max_batch=8)
               for c in capacities]
    assert largest == [0, 1, 3, 3, 8]
    assert largest == sorted(largest)
    parameters = estimate_cell(Cell("cad", "test_scale", 1)).breakdown.parameters
    assert largest_fitting_batch(Cell("cad", "test_scale", 1), parameters, cuda_context_bytes=0) == 0
    rows = fit_table([Cell("decoder_only", "test_scale", 1), Cell("cad", "test_scale", 1)], [peak[2] + context],
                     cuda_context_bytes=context,
                     max_batch=8)
    assert [(row.cell.method, row.largest_batch) for row in rows][1] == ("cad", 2)
    assert rows[0].largest_batch >= 2 and rows[0].as_dict()["capacity_bytes"] == peak[2] + context


def test_the_estimator_refuses_batch_sizes_beyond_its_stated_limit_in_one_line():
    from cadbench.estimator.cells import MAX_BATCH_SIZE, check_estimable

    check_estimable(Cell("cad", "test_scale", MAX_BATCH_SIZE))
    with pytest.raises(CadbenchError, match=f"batch size {MAX_BATCH_SIZE + 1} is above {MAX_BATCH_SIZE}") as error:
        estimate_cell(Cell("cad", "vit_h", MAX_BATCH_SIZE + 1))  # refused before anything is replayed
    assert "\n" not in str(error.value)
