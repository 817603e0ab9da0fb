"""The input resolution as a grid dimension (`--image-size`): the resized encoder, the cell's key, the estimator's
exactness at a non-native size, the command line's refusals and the advisor naming the size it chose."""

import json

import pytest
import torch

from cadbench.backbones import build_sam, resize_input
from cadbench.errors import CadbenchError
from cadbench.estimator import estimate_cell, estimate_setup
from cadbench.estimator.advisor import advise
from cadbench.estimator.alloc_conf import AllocatorConfig
from cadbench.harness.grid import expand_grid, make_cell
from cadbench.methods import BUILTIN_METHODS
from cadbench.params import count_parameters
from cadbench.registry import build_method
from cadbench.training.setup import make_training_setup
from cadbench.vocabulary.cell import Cell, cell_key
from tests.helpers.cadbench_in_process import cadbench_main

NATIVE = 128  # the test-scale SAM's input side: an 8 x 8 token grid, windows of 4, blocks 1 and 3 global
DEFAULT_ALLOCATOR = AllocatorConfig.parse("")


def _global_tables(sam) -> int:
    return sum(block.attn.rel_pos_h.numel() + block.attn.rel_pos_w.numel()
               for block in sam.image_encoder.blocks if block.window_size == 0)


@pytest.mark.parametrize("size", [64, 96, 256])
def test_metas_forward_runs_at_a_resized_input_and_every_size_attribute_follows(size):
    sam = build_sam("test_scale", image_size=size).sam
    grid = size // 16
    encoder, prompt = sam.image_encoder, sam.prompt_encoder
    assert encoder.img_size == size and encoder.pos_embed.shape == (1, grid, grid, 64)
    assert prompt.image_embedding_size == (grid, grid) and prompt.input_image_size == (size, size)
    assert prompt.mask_input_size == (4 * grid, 4 * grid)
    for block in encoder.blocks:  # global blocks see the whole grid; windowed ones keep their window of 4
        side = grid if block.window_size == 0 else block.window_size
        assert block.attn.rel_pos_h.shape == block.attn.rel_pos_w.shape == (2 * side - 1, 16)
    images = torch.randn(1, 3, size, size)
    with torch.no_grad():
        embeddings = encoder(images)
        sparse, dense = prompt(points=None, boxes=torch.tensor([[0.0, 0.0, size - 1.0, size - 1.0]]), masks=None)
        low_res, _ = sam.mask_decoder(embeddings, prompt.get_dense_pe(), sparse, dense, multimask_output=False)
    assert embeddings.shape == (1, 32, grid, grid) and low_res.shape == (1, 1, 4 * grid, 4 * grid)


def test_the_tables_are_resampled_along_the_token_grid_and_nothing_else():
    sam = build_sam("test_scale").sam
    encoder = sam.image_encoder
    with torch.no_grad():  # the position embedding varies only across columns; a table only along its channels
        encoder.pos_embed.copy_(torch.arange(8.0).view(1, 1, 8, 1).expand(1, 8, 8, 64))
        encoder.blocks[1].attn.rel_pos_h.copy_(torch.arange(16.0).expand(15, 16))
        encoder.blocks[0].attn.rel_pos_h.copy_(torch.randn(7, 16))
    windowed = encoder.blocks[0].attn.rel_pos_h.clone()
    resize_input(sam, 256)
    table = encoder.pos_embed
    assert table.shape == (1, 16, 16, 64) and table.is_contiguous()
    assert torch.equal(table, table[:, :1].expand_as(table))  # still constant down the rows
    columns = table[0, 0, :, 0]
    assert torch.all(columns[1:] >= columns[:-1]) and columns[0] == 0 and columns[-1] == 7  # bilinear, in range
    assert torch.allclose(encoder.blocks[1].attn.rel_pos_h, torch.arange(16.0).expand(31, 16), atol=1e-5)
    assert torch.equal(encoder.blocks[0].attn.rel_pos_h, windowed)  # a windowed block keeps its table


def test_parameter_counts_change_exactly_by_the_resized_tables():
    native, small = build_sam("test_scale").sam, build_sam("test_scale", image_size=64).sam
    count = lambda sam: sum(parameter.numel() for parameter in sam.parameters())  # noqa: E731
    pos = lambda sam: sam.image_encoder.pos_embed.numel()  # noqa: E731
    assert count(native) - count(small) == (pos(native) - pos(small)) + (_global_tables(native) - _global_tables(small))
    assert count(native) - count(small) == (64 - 16) * 64 + 2 * 2 * (15 - 7) * 16
    # full size, on the meta device: vit_b at 512 px has a 32 x 32 grid instead of 64 x 64
    assert (count_parameters("lora", "vit_b").total_params - count_parameters("lora", "vit_b", 512).total_params
            == (64 * 64 - 32 * 32) * 768 + 4 * 2 * (127 - 63) * 64)


@pytest.mark.parametrize("method", ["cad", "sam_adapter"])
def test_the_adapters_that_depend_on_the_grid_use_the_new_one(method):
    size = 256
    sam = build_sam("test_scale", image_size=size).sam
    adapter = build_method(method, sam)
    setup = make_training_setup(Cell(method, "test_scale", 2, image_size=size))
    assert setup.batch.images.shape[-1] == size == setup.trainee.image_size
    embeddings = setup.trainee.method.image_embeddings(setup.batch.images)
    assert embeddings.shape[-2:] == (size // 16, size // 16)
    if method == "cad":
        assert adapter.adapter.grid == size // 16
    loss = setup.step()
    assert torch.isfinite(loss)


def test_a_cell_at_the_native_size_keeps_todays_key_and_others_name_their_size():
    assert make_cell("cad", "vit_b", 4, image_size=1024) == Cell("cad", "vit_b", 4)
    assert make_cell("cad", "vit_b", 4, image_size=1024).key == "cad/vit_b/4/fp32"
    assert make_cell("cad", "test_scale", 4, image_size=1024).key == "cad/test_scale/4/fp32/image_size=1024"
    small = make_cell("lora", "vit_b", 4, method_options="rank=16", image_size=512)
    assert small.key == "lora:rank=16/vit_b/4/fp32/image_size=512" and cell_key(small.as_dict()) == small.key
    assert small.further_labels() == ["512 px"]
    old_row = {"method": "cad", "backbone": "vit_b", "batch_size": 4, "precision": "fp32"}  # written before sizes
    assert cell_key(old_row) == "cad/vit_b/4/fp32" and Cell.from_row(old_row).image_size == 0
    assert Cell.from_row({**small.as_dict(), "image_size": 512.0}) == small  # a CSV column read as floats
    cells = expand_grid(["cad"], ["vit_b"], [1], image_sizes=[512, 1024])
    assert [cell.image_size for cell in cells] == [512, 0]


@pytest.mark.parametrize("size", [0, -16, 500, 2064, 4096])
def test_a_size_that_breaks_the_rule_is_refused_by_the_grid(size):
    with pytest.raises(CadbenchError, match=r"--image-size .*multiple of 16 .*at most 2048"):
        expand_grid(["cad"], ["vit_b"], [1], image_sizes=[512, size])


@pytest.mark.parametrize("text", ["500", "0", "4096", "512,abc"])
def test_the_command_line_refuses_a_bad_size_in_one_line_before_anything_runs(text, tmp_path):
    out = tmp_path / "out"
    result = cadbench_main("estimate", "--backbone", "test_scale", "--image-size", text, "--out", out)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "--image-size" in line and "multiple of 16 (the patch size) and at most 2048" in line
    assert not out.exists()
    listed = cadbench_main("list", "--backbone", "test_scale", "--image-size", text)
    assert listed.returncode == 2 and "--image-size" in listed.stderr


def test_list_shows_the_counts_at_each_size():
    result = cadbench_main("list", "--backbone", "test_scale", "--methods", "lora", "--image-size", "64,128",
                           "--json")
    counts = {entry["image_px"]: entry["total_params"] for entry in json.loads(result.stdout)}
    assert counts[128] - counts[64] == (64 - 16) * 64 + 2 * 2 * (15 - 7) * 16


@pytest.mark.parametrize("method, levers", [(method, {}) for method in BUILTIN_METHODS] + [
    ("cad", {"lean_encoder": "on"}), ("sam_adapter", {"checkpointing": "encoder"})])
def test_the_fake_replay_equals_the_real_cpu_tracker_at_a_non_native_size(method, levers):
    """The estimator's exactness test (test_estimator.py) at 64 px: the resized encoder, batch and prompts, and the
    levers that replace the encoder's attention (the lean encoder's, checkpointing's) on the resized tables."""
    make = lambda: make_training_setup(Cell(method, "test_scale", 2, image_size=64, **levers))  # noqa: E731
    fake, real = estimate_setup(make), estimate_setup(make, fake=False)
    assert fake.replayed_peak_bytes == real.replayed_peak_bytes
    assert fake.peak_bytes == real.peak_bytes and fake.breakdown == real.breakdown
    if not levers:  # the fused attention's FLOPs differ between fake and real CPU tensors at the native size too
        assert fake.flops_per_step == real.flops_per_step > 0
    native = estimate_setup(lambda: make_training_setup(Cell(method, "test_scale", 2, **levers)))
    assert fake.flops_per_step < native.flops_per_step  # the replay did run at 64 px


def test_a_run_at_a_non_native_size_records_its_pixels(tmp_path):
    result = cadbench_main("estimate", "--methods", "lora", "--backbone", "test_scale", "--batch-sizes", "1",
                           "--image-size", "64,128", "--out", tmp_path, "--no-progress")
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {(row["image_size"], row["image_px"]) for row in rows} == {(64, 64), (0, 128)}
    assert "px" in result.stdout  # the terminal table shows the pixels
    peaks = {row["image_px"]: row["peak_memory_bytes"] for row in rows}
    assert peaks[64] == estimate_cell(Cell("lora", "test_scale", 1, image_size=64)).peak_bytes < peaks[128]
    html = (tmp_path / "index.html").read_text()  # one section, and charts, per size: never two sizes on one line
    for size in (64, 128):
        assert f"test_scale (test scale) at {size} px</h2>" in html
        assert f"test_scale at {size} px: peak training memory" in html


def test_fit_uses_resolution_as_a_lever_only_among_listed_sizes_and_names_the_one_it_chose():
    small = estimate_cell(Cell("decoder_only", "test_scale", 2, image_size=64), alloc_conf=DEFAULT_ALLOCATOR)
    capacity = small.oom_capacity_bytes(0)  # the plain step at 64 px fits exactly; nothing at 256 px does
    answers = advise([("decoder_only", "")], ["test_scale"], [capacity], target_batch=2, cuda_context_bytes=0,
                     max_batch=4, alloc_conf=DEFAULT_ALLOCATOR, precisions=("fp32",), image_sizes=[64, 256])
    by_size = {answer.image_px: answer for answer in answers}
    assert set(by_size) == {64, 256} and by_size[256].cell is None
    assert by_size[64].chosen and not by_size[256].chosen
    assert by_size[64].cell == Cell("decoder_only", "test_scale", 2, image_size=64)
    assert by_size[64].answer == "fits at 64 px, batch 2: none"
    assert by_size[256].answer == "nothing fits at 256 px"
    # one size: the task, not a lever, and the answer is the levers alone
    [alone] = advise([("decoder_only", "")], ["test_scale"], [capacity], target_batch=2, cuda_context_bytes=0,
                     max_batch=4, alloc_conf=DEFAULT_ALLOCATOR, precisions=("fp32",), image_sizes=[64])
    assert not alone.resolution_lever and alone.answer == "none" and alone.image_px == 64


def test_fit_on_the_command_line_names_the_resolution():
    small = estimate_cell(Cell("decoder_only", "test_scale", 2, image_size=64), alloc_conf=DEFAULT_ALLOCATOR)
    result = cadbench_main("fit", "--methods", "decoder_only", "--backbone", "test_scale", "--image-size", "64,256",
                           "--gpu-memory", str(small.oom_capacity_bytes(0)), "--cuda-context", "0",
                           "--target-batch", "2", "--max-batch", "4", "--precision", "fp32", "--jobs", "1",
                           "--no-progress", "--alloc-conf", "")
    assert result.returncode == 0, result.stderr
    assert "fits at 64 px, batch 2: none" in result.stdout and "nothing fits at 256" not in result.stdout
