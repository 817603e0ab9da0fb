"""The quality half of a cell (`cadbench run`): protocols in rows, datasets users have, saved weights, a fine-tune
that survives a kill, a loss that stops being finite, and `cadbench evaluate`."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from cadbench_in_process import cadbench_main, cells_measured_here
from PIL import Image

from cadbench.harness.measure_cell import measure_cell
from cadbench.harness.options import DEFAULT_PROTOCOL, RunContext, RunOptions
from cadbench.harness.results.rows import contract_columns
from cadbench.methods import DecoderOnly, ZeroShot
from cadbench.training.protocols import available_protocols
from cadbench.training.quality import REFERENCE_COLUMNS
from cadbench.training.quality import reference_scores as REFERENCE_SCORES
from cadbench.training.quality import evaluate as EVALUATE
from cadbench.vocabulary.cell import Cell

QUICK_CELL = ("--backbone", "test_scale", "--device", "cpu", "--steps", "1", "--warmup", "0", "--no-progress")


def rows_of(out: Path) -> dict[str, dict]:
    return {Cell.key_of(row): row for row in json.loads((out / "results.json").read_text())["rows"]}


def write_flat_dataset(root: Path, count: int, size: int = 32, empty: tuple[int, ...] = ()) -> Path:
    """`count` pairs in images/ + masks/ (no splits), masks named <stem>_mask.png; those in `empty` blank."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for index in range(count):
        mask = np.zeros((size, size), np.uint8)
        if index not in empty:
            top, left = rng.integers(0, size // 2, 2)
            mask[top:top + size // 3, left:left + size // 3] = 255
        image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        image[mask > 0] //= 2
        Image.fromarray(image).save(root / "images" / f"p{index:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"p{index:03d}_mask.png")
    return root


def test_the_default_protocol_is_registered():
    assert DEFAULT_PROTOCOL in available_protocols() and RunOptions().protocol == DEFAULT_PROTOCOL


def test_every_row_records_its_protocol_and_a_paper_protocol_measures_quality_in_its_own_cell(tmp_path):
    out, dataset = tmp_path / "out", write_flat_dataset(tmp_path / "flat", 5, empty=(1,))
    with cells_measured_here():  # the cell process is tested in test_harness.py
        result = cadbench_main("run", "--methods", "decoder_only", "--batch-sizes", "1,2", *QUICK_CELL,
                               "--protocol", "sam-adapter-paper", "--epochs", "1", "--dataset", str(dataset),
                               "--out", str(out))
    assert result.returncode == 0, result.stderr
    rows = rows_of(out)
    assert {row["protocol"] for row in rows.values()} == {"sam-adapter-paper"}
    skipped, trained = rows["decoder_only/test_scale/1/fp32"], rows["decoder_only/test_scale/2/fp32"]
    assert skipped["iou"] is None and "fine-tunes at batch size 2" in skipped["null_reasons"]["iou"]
    assert 0 <= trained["iou"] <= 1 and trained["epochs"] == 1 and trained["train_steps"] == 2  # 4 images, batch 2
    assert trained["dataset_split"].startswith("train: the rest of 'all' after 20% held out, seed 0; "
                                               "test: 20% of 'all' held out, seed 0")
    assert trained["empty_train_masks"] + trained["empty_test_masks"] == 1  # train masks are counted too
    assert trained["mask_grey_values"] == 2
    assert "sam-adapter-paper" in result.stdout and "pipeline check (test scale, random weights)" in result.stdout
    curve = json.loads((out / "loss_curves.json").read_text())["decoder_only/test_scale/2/fp32"]
    assert curve["protocol"] == "sam-adapter-paper" and len(curve["losses"]) == 2
    assert curve["epochs"][0]["lr"] == 2e-4 and curve["epochs"][0]["validation_iou"] is not None
    for row in rows.values():
        assert set(row) == set(contract_columns())
        assert all(row["null_reasons"].get(column) for column, value in row.items()
                   if value is None and column != "error"), row["null_reasons"]
    html = (out / "index.html").read_text()
    assert "Pipeline check (test scale, random weights)" in html


@pytest.mark.parametrize("args, message", [
    (["--protocol", "cad"], "unknown protocol 'cad'; valid: cad-paper, quick, sam-adapter-paper"),
    (["--epochs", "0"], "--epochs must be positive, got 0"),
    (["--test-fraction", "1.5"], "--test-fraction must be at least 0 and below 1, got 1.5"),
    (["--val-fraction", "nan"], "--val-fraction must be at least 0 and below 1, got nan"),
    (["--protocol", "cad-paper", "--batch-sizes", "1,2"],
     "--protocol cad-paper fine-tunes at batch size 4 in fp32, and no cell that trains has that"),
    (["--dataset", "DATASET_FILE"], "is a file, not a folder"),
])
def test_bad_quality_settings_are_refused_in_one_line_before_anything_runs(tmp_path, args, message):
    (tmp_path / "kvasir.zip").write_bytes(b"PK")
    args = [str(tmp_path / "kvasir.zip") if arg == "DATASET_FILE" else arg for arg in args]
    result = cadbench_main("run", "--methods", "decoder_only", *QUICK_CELL, *args, "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory) -> tuple[Path, Path]:
    """A run of cad at test scale with --save-weights on a flat folder: (its --out, the dataset)."""
    root = tmp_path_factory.mktemp("saved")
    out, dataset = root / "out", write_flat_dataset(root / "flat", 6)
    with cells_measured_here():
        result = cadbench_main("run", "--methods", "cad", "--batch-sizes", "2", *QUICK_CELL, "--train-steps", "3",
                               "--dataset", str(dataset), "--save-weights", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, dataset


def test_saved_weights_are_named_in_the_row_and_evaluate_scores_them_as_the_run_did(saved_run, tmp_path):
    out, dataset = saved_run
    row = rows_of(out)["cad/test_scale/2/fp32"]
    weights = out / row["saved_weights"]
    from cadbench.backbones import file_sha256
    from cadbench.training.weights import read_weights

    assert row["saved_weights_sha256"] == f"sha256:{file_sha256(weights)}"
    tensors, metadata = read_weights(weights)
    assert metadata["method"] == "cad" and metadata["protocol"] == "quick" and metadata["base_weights"] == "random"
    assert any(name.endswith("running_mean") for name in tensors)  # the adapter's BatchNorm statistics
    assert not any(name.startswith("sam.image_encoder") for name in tensors)  # the frozen encoder is not saved
    assert not list((out / "fine-tunes").glob("*.pt"))  # a finished fine-tune leaves no checkpoint

    scored = cadbench_main("evaluate", "--weights", str(weights), "--dataset", str(dataset), "--json")
    assert scored.returncode == 0, scored.stderr
    scores = json.loads(scored.stdout)
    for column in ("iou", "dice", "s_measure", "mae"):
        assert scores[column] == pytest.approx(row[column], abs=1e-9), column
    assert scores["images"] == 1 and scores["weights_sha256"] == row["saved_weights_sha256"]

    not_weights = cadbench_main("evaluate", "--weights", str(out / "results.json"), "--dataset", str(dataset))
    assert not_weights.returncode == 2 and "is not a safetensors file" in not_weights.stderr
    assert not_weights.stderr.count("\n") == 1
    checkpoint = tmp_path / "sam.pth"
    torch.save({"w": torch.zeros(1)}, checkpoint)
    needless = cadbench_main("evaluate", "--weights", str(weights), "--dataset", str(dataset),
                             "--checkpoint", str(checkpoint))
    assert needless.returncode == 2 and "fine-tuned on random test_scale weights" in needless.stderr


def test_weights_are_never_scored_on_another_frozen_base(saved_run, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    out, dataset = saved_run
    weights = tmp_path / "other-base.safetensors"
    source = out / "weights" / "cad-test_scale-2-fp32.safetensors"
    with safe_open(str(source), framework="pt") as stream:
        metadata = stream.metadata()
    save_file(load_file(str(source)), str(weights), metadata={**metadata, "seed": "7"})  # another random base
    result = cadbench_main("evaluate", "--weights", str(weights), "--dataset", str(dataset))
    assert result.returncode == 2 and "differ from those weights file" in result.stderr
    assert result.stderr.count("\n") == 1


class NaNAfterTwoSteps(DecoderOnly):
    """Returns NaN embeddings from its third forward pass on: the loss stops being finite at step 3."""

    name = "nan_after_two"
    summary = "test method"

    def __init__(self, sam):
        super().__init__(sam)
        self.calls = 0

    def image_embeddings(self, images):
        self.calls += 1
        embeddings = super().image_embeddings(images)
        return embeddings * float("nan") if self.calls >= 3 else embeddings


def test_a_loss_that_stops_being_finite_is_an_error_row_naming_the_step(monkeypatch):
    import cadbench.registry

    methods = {**cadbench.registry.available_methods(), NaNAfterTwoSteps.name: NaNAfterTwoSteps}
    monkeypatch.setattr(cadbench.registry, "available_methods", lambda: methods)
    cell = Cell("nan_after_two", "test_scale", 1)
    row = measure_cell(cell, "cpu", RunOptions(steps=1, warmup=1, train_steps=5), {})
    assert row["status"] == "error"
    assert row["error"] == "the fine-tuning loss stopped being finite at step 3 (loss nan); steps 1-2 were finite"
    assert row["iou"] is None and "_loss_curve" not in row
    json.dumps(row, allow_nan=False)  # nothing non-finite left in the row


def test_a_killed_fine_tune_resumes_from_its_last_epoch_when_the_run_is_started_again(tmp_path):
    dataset = write_flat_dataset(tmp_path / "flat", 14)  # 11 train images: 6 steps an epoch, time to kill it in
    common = ("run", "--methods", "decoder_only", "--batch-sizes", "2", *QUICK_CELL, "--protocol",
              "sam-adapter-paper", "--epochs", "3", "--dataset", str(dataset))
    with cells_measured_here():  # the reference; only the run killed below needs processes of its own
        whole = cadbench_main(*common, "--out", str(tmp_path / "whole"))
    assert whole.returncode == 0, whole.stderr
    expected = json.loads((tmp_path / "whole" / "loss_curves.json").read_text())["decoder_only/test_scale/2/fp32"]

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "cadbench", *common, "--out", str(out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoint = out / "fine-tunes" / "decoder_only-test_scale-2-fp32.pt"
    try:
        deadline = time.monotonic() + 400
        while not checkpoint.exists():
            assert time.monotonic() < deadline and process.poll() is None, "the first epoch never finished"
            time.sleep(0.05)
        # killed at once: the second epoch has begun (a fixed wait here let a fast machine finish all three)
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the run and its cell process, mid-epoch
        process.wait()
    saved = torch.load(checkpoint, weights_only=True)
    assert 1 <= saved["epochs_done"] < 3

    with cells_measured_here():
        resumed = cadbench_main(*common, "--out", str(out))
    assert resumed.returncode == 0, resumed.stderr
    curve = json.loads((out / "loss_curves.json").read_text())["decoder_only/test_scale/2/fp32"]
    assert curve["resumed_from_epoch"] == saved["epochs_done"]
    assert curve["losses"][:len(saved["losses"])] == saved["losses"]  # continues where it stopped
    assert curve["losses"] == expected["losses"] and curve["epochs"] == expected["epochs"]
    assert rows_of(out)["decoder_only/test_scale/2/fp32"]["iou"] == rows_of(tmp_path / "whole")[
        "decoder_only/test_scale/2/fp32"]["iou"]
    assert not checkpoint.exists()


def test_an_object_run_records_objects_per_image_and_skipped_images_and_no_objects_is_a_row_with_the_reason(
        tmp_path, monkeypatch):
    """--prompts-per-image 2 on a folder: images without objects are skipped and counted, the row records the mean
    distinct objects per image and the test objects scored; a dataset where no image has an object gives a row
    saying so, never a crash. Zero-shot and box fill are scored once per run and shared by its cells, and the zero_shot
    method's row scores exactly the zero-shot reference: measured first, its own scores are that reference, so the
    model as built is not scored a second time."""
    import cadbench.training.quality as quality

    scored, zero_shot_scored = [], []

    def counting(*args, **kwargs):
        scored.append(args)
        return REFERENCE_SCORES(*args, **kwargs)

    def counting_zero_shot(method, *args, **kwargs):
        if isinstance(method, ZeroShot):
            zero_shot_scored.append(args)
        return EVALUATE(method, *args, **kwargs)

    monkeypatch.setattr(quality, "reference_scores", counting)
    monkeypatch.setattr(quality, "evaluate", counting_zero_shot)
    dataset = write_flat_dataset(tmp_path / "flat", 6, empty=(1, 4))
    nothing = write_flat_dataset(tmp_path / "nothing", 3, empty=(0, 1, 2))
    for name, data, methods in (("some", dataset, "zero_shot,decoder_only,cad"), ("none", nothing, "decoder_only")):
        with cells_measured_here():
            result = cadbench_main("run", "--methods", methods, "--batch-sizes", "2", *QUICK_CELL,
                                   "--prompts-per-image", "2", "--train-steps", "1", "--test-fraction", "0.4",
                                   "--dataset", str(data), "--out", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
    row = rows_of(tmp_path / "some")["decoder_only/test_scale/2/fp32/prompts_per_image=2"]
    assert row["status"] == "ok" and row["objects_per_image"] == 1.0 and row["images_without_objects"] == 2
    assert 0.0 <= row["iou"] <= 1.0 and row["test_objects"] >= 1
    cad = rows_of(tmp_path / "some")["cad/test_scale/2/fp32/prompts_per_image=2"]
    assert len(scored) == 1  # the later cells of the run read what the first one kept under --out/references/
    assert len(zero_shot_scored) == 1  # the zero_shot cell, first, gave its own scores as the reference
    assert [cad[column] for column in REFERENCE_COLUMNS] == [row[column] for column in REFERENCE_COLUMNS]
    # the zero_shot row: the model as built, scored by the same evaluation, is the zero-shot reference itself
    zero = rows_of(tmp_path / "some")["zero_shot/test_scale/2/fp32/prompts_per_image=2"]
    assert zero["status"] == "ok" and zero["step_kind"] == "inference" and row["step_kind"] == "training"
    assert (zero["iou"], zero["dice"]) == (row["zero_shot_iou"], row["zero_shot_dice"]) == (
        zero["zero_shot_iou"], zero["zero_shot_dice"])
    assert zero["train_steps"] == 0 and zero["test_objects"] == row["test_objects"]
    assert zero["null_reasons"]["epochs"] == "zero_shot does not train: the model is scored as built"
    empty = rows_of(tmp_path / "none")["decoder_only/test_scale/2/fp32/prompts_per_image=2"]
    assert empty["status"] == "ok" and empty["iou"] is None and empty["peak_memory_bytes"] > 0
    assert "no image of the train split has an object" in empty["null_reasons"]["iou"]


def test_a_zero_shot_cell_after_a_fine_tuned_one_takes_every_score_from_the_kept_reference(tmp_path, monkeypatch):
    """The run's first cell scores the backbone as built (every metric) for the references and keeps it: the plain
    zero_shot cell after it scores nothing itself and its row equals that scoring. A zero_shot cell with a lever
    (frozen weights in bf16 change its logits) is not the reference: it scores itself."""
    import cadbench.training.quality as quality

    zero_shot_scored = []

    def counting(method, *args, **kwargs):
        if isinstance(method, ZeroShot):
            zero_shot_scored.append(args)
        return EVALUATE(method, *args, **kwargs)

    monkeypatch.setattr(quality, "evaluate", counting)
    options = RunOptions(steps=1, warmup=0, train_steps=1, dataset=str(write_flat_dataset(tmp_path / "flat", 5)),
                         test_fraction=0.4)
    context = RunContext(state_dir=str(tmp_path / "out"))
    rows = {cell.method_label + str(cell.levers): measure_cell(cell, "cpu", options, {}, context) for cell in (
        Cell("decoder_only", "test_scale", 1, prompts_per_image="2"), Cell("zero_shot", "test_scale", 1,
                                                                        prompts_per_image="2"),
        Cell("zero_shot", "test_scale", 1, prompts_per_image="2", frozen_dtype="bf16"))}
    tuned, plain, lever = rows.values()
    assert all(row["status"] == "ok" for row in (tuned, plain, lever)), [row["error"] for row in rows.values()]
    assert len(zero_shot_scored) == 2  # the reference, for the first cell; the lever cell's own
    kept = json.loads(next((tmp_path / "out" / "references").glob("*.json")).read_text())["as_built"]
    for column in ("iou", "dice", "s_measure", "mean_e_measure", "weighted_f_measure", "mae", "ber"):
        assert plain[column] == kept[column], column
    assert (plain["iou"], plain["dice"]) == (tuned["zero_shot_iou"], tuned["zero_shot_dice"])
    assert plain["test_objects"] == tuned["test_objects"] == kept["objects"]


def test_evaluate_scores_weights_of_an_object_run_per_object_as_the_run_did(tmp_path):
    out = tmp_path / "out"
    with cells_measured_here():
        result = cadbench_main("run", "--methods", "decoder_only", "--batch-sizes", "2", *QUICK_CELL,
                               "--prompts-per-image", "3", "--train-steps", "2", "--dataset", "synthetic",
                               "--save-weights", "--out", str(out))
    assert result.returncode == 0, result.stderr
    row = rows_of(out)["decoder_only/test_scale/2/fp32/prompts_per_image=3"]
    scored = cadbench_main("evaluate", "--weights", str(out / row["saved_weights"]), "--dataset", "synthetic",
                           "--json")
    assert scored.returncode == 0, scored.stderr
    scores = json.loads(scored.stdout)
    for column in ("iou", "dice", "s_measure", "mae"):
        assert scores[column] == pytest.approx(row[column], abs=1e-9), column
    assert scores["objects"] == scores["images"] > 32  # every object of the 32 test scenes (those with any)


def test_a_quick_fine_tune_without_validation_data_scores_the_test_split_once_at_the_end(tmp_path):
    """No test score half-way (it would only look at the test data early); the last round's validation is the final
    test score. 10 steps on 4 training images: two rounds of 5."""
    out, dataset = tmp_path / "out", write_flat_dataset(tmp_path / "flat", 5)
    with cells_measured_here():
        result = cadbench_main("run", "--methods", "decoder_only", "--batch-sizes", "1", *QUICK_CELL,
                               "--train-steps", "10", "--dataset", str(dataset), "--out", str(out))
    assert result.returncode == 0, result.stderr
    row = rows_of(out)["decoder_only/test_scale/1/fp32"]
    curve = json.loads((out / "loss_curves.json").read_text())["decoder_only/test_scale/1/fp32"]
    assert [record["step"] for record in curve["epochs"]] == [5, 10] and len(curve["losses"]) == 10
    assert curve["epochs"][0]["validation_iou"] is None
    assert curve["epochs"][1]["validation_iou"] == row["iou"] and curve["epochs"][1]["validation_dice"] == row["dice"]
