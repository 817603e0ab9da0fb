"""The default run's CPU share (cadbench.harness.cpu_share): without a GPU, LiteMedSAM with its real weights trains
on the CPU beside the estimated full-size SAM cells (the test-scale SAM when LiteMedSAM is not installed)."""

from dataclasses import replace

import pytest

import cadbench.api as api
from cadbench.backbones import BACKBONES, default_backbones
from cadbench.harness.cpu_share import cpu_share


class Captured(Exception):
    pass


@pytest.fixture
def dry_run(monkeypatch, tmp_path):
    """cadbench.run() up to its sweep: the cells, how each is measured, and the options."""
    seen, runs = {}, []

    def sweep(cells, mode_of, options, *args, **kwargs):
        seen.update(modes={cell.key: mode_of(cell) for cell in cells}, options=options)
        raise Captured

    monkeypatch.setattr(api, "sweep", sweep)
    monkeypatch.setattr(api.torch.cuda, "is_available", lambda: False)

    def run(methods=("decoder_only", "cad", "lora", "full"), **kwargs):
        with pytest.raises(Captured):
            api.run(methods=methods, out=tmp_path / f"out{len(runs)}", show_progress=False, **kwargs)
        runs.append(kwargs)
        return seen

    return run


def test_without_a_gpu_litemedsam_trains_the_methods_whose_backward_skips_its_encoder(dry_run, capsys):
    seen = dry_run()
    lite = {key: mode for key, mode in seen["modes"].items() if "/litemedsam/" in key}
    assert lite == {"decoder_only/litemedsam/1/fp32/prompts_per_image=4": "cpu",
                    "cad/litemedsam/1/fp32/prompts_per_image=4": "cpu",
                    "lora/litemedsam/1/fp32/prompts_per_image=4": "estimate",
                    "full/litemedsam/1/fp32/prompts_per_image=4": "estimate"}
    full_size = {key: mode for key, mode in seen["modes"].items() if "/litemedsam/" not in key}
    # the grid's backbones (SAM 2.1's too where the sam2 extra is installed) at the grid's batch sizes
    assert len(full_size) == 4 * len(default_backbones()) * 4 and set(full_size.values()) == {"estimate"}
    assert seen["options"].dataset == "nuclei-sample"
    assert (seen["options"].steps, seen["options"].warmup) == (5, 2)  # a CPU step takes seconds and varies little
    err = capsys.readouterr().err
    assert "LiteMedSAM (real weights) trains on this CPU at batch size 1" in err
    assert "5 steps timed after 2 warm-up unless --steps/--warmup say otherwise" in err


def test_with_the_default_methods_litemedsam_fine_tunes_cad_beside_zero_shot(dry_run, capsys):
    # the default run's CPU share is narrowed so that the README's main command stays within minutes: decoder_only,
    # whose backward also skips the encoder, trains there only when --methods names it (the test above)
    seen = dry_run(methods=None)
    lite = {key.split("/")[0]: mode for key, mode in seen["modes"].items() if "/litemedsam/" in key}
    assert lite["cad"] == lite["zero_shot"] == "cpu"
    assert lite["decoder_only"] == lite["lora"] == lite["full"] == "estimate"
    assert {mode for key, mode in seen["modes"].items() if "/litemedsam/" not in key} == {"estimate"}
    err = " ".join(capsys.readouterr().err.split())
    assert "for zero_shot and cad (name others whose backward skips the image encoder with --methods" in err


def test_a_dataset_and_step_counts_the_user_names_are_kept(dry_run):
    assert dry_run(dataset="synthetic")["options"].dataset == "synthetic"
    options = dry_run(steps=10)["options"]
    assert (options.steps, options.warmup) == (10, 2)
    options = dry_run(warmup=0)["options"]
    assert (options.steps, options.warmup) == (5, 0)


def test_no_share_when_backbones_are_named_or_only_estimates_are_asked_for(dry_run):
    assert not any("litemedsam" in key for key in dry_run(estimate_only=True)["modes"])
    named = dry_run(backbones=["vit_b"])["modes"]
    assert set(named.values()) == {"estimate"} and not any("litemedsam" in key for key in named)


def test_without_litemedsam_the_test_scale_sam_trains_every_cell_at_the_grid_s_batch_sizes(dry_run, monkeypatch,
                                                                                           capsys):
    missing = replace(BACKBONES["litemedsam"], missing_requirement=lambda: 'needs pip install "cadbench[lite]"')
    monkeypatch.setitem(BACKBONES, "litemedsam", missing)
    assert cpu_share().backbone == "test_scale"
    seen = dry_run()
    share = {key: mode for key, mode in seen["modes"].items() if "/test_scale/" in key}
    assert len(share) == 4 * 4 and set(share.values()) == {"cpu"}
    assert seen["options"].dataset == "synthetic"
    assert (seen["options"].steps, seen["options"].warmup) == (10, 3)  # the grid's: a pipeline check, as before
    err = capsys.readouterr().err
    assert "test-scale SAM (random weights) trains on this CPU" in err and "cadbench[lite]" in err
