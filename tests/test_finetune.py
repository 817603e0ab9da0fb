"""Fine-tuning under each protocol at test scale: epochs, schedules, validation, resume after an interruption,
and a loss that stops being finite."""

import math

import pytest
import torch

from cadbench.datasets import SyntheticCamouflage
from cadbench.training.finetune import NonFiniteLossError, TrainingPlan, fine_tune, training_order
from cadbench.training.protocols import available_protocols, get_protocol
from cadbench.training.setup import prepare

PROTOCOLS = tuple(available_protocols())


def data(split: str = "train", count: int = 10) -> SyntheticCamouflage:
    return SyntheticCamouflage(split, seed=0, image_size=128, count=count, height=40, width=52)


def plan(name: str, epochs: int | None = 3, steps: int = 7, batch_size: int = 2) -> TrainingPlan:
    return TrainingPlan.resolve(get_protocol(name), batch_size, "fp32", epochs, steps, seed=0)


def fresh(method: str = "decoder_only"):
    torch.manual_seed(0)  # the same initial weights every time, as a new process with the same --seed
    return prepare(method, "test_scale").method


def cosine(epoch: int, t_max: int, eta_min: float, base: float = 2e-4) -> float:
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2


def test_cad_paper_schedule_is_cosine_over_the_batches_of_one_epoch_stepped_per_epoch():
    """run_cad.py: CosineAnnealingLR(T_max=len(train_loader), eta_min=0), stepped once per epoch (trainer.py)."""
    train = data(count=10)  # batch 4: 3 batches per epoch, so T_max = 3 and the rate comes back up after epoch 3
    history = fine_tune(fresh(), train, plan("cad-paper", epochs=6))
    assert [record["lr"] for record in history.epochs] == pytest.approx(
        [cosine(epoch, 3, 0.0) for epoch in range(6)], rel=1e-9, abs=1e-15)
    assert [record["step"] for record in history.epochs] == [3, 6, 9, 12, 15, 18]
    assert len(history.losses) == 18


def test_sam_adapter_paper_schedule_is_cosine_over_the_epochs_down_to_1e_7():
    """train.py: CosineAnnealingLR(optimizer, epoch_max, eta_min=lr_min=1e-7), stepped once per epoch."""
    history = fine_tune(fresh(), data(count=4), plan("sam-adapter-paper", epochs=5))
    assert [record["lr"] for record in history.epochs] == pytest.approx(
        [cosine(epoch, 5, 1e-7) for epoch in range(5)], rel=1e-9)
    assert len(history.losses) == 5 * 2  # batch size 2 of the protocol, not the cell's


def test_quick_keeps_a_constant_rate_and_counts_steps():
    history = fine_tune(fresh(), data(count=6), plan("quick", epochs=None, steps=7, batch_size=2))
    assert len(history.losses) == 7
    # an epoch is 3 steps, but a fine-tune counted in steps has at most 2 rounds (validated and checkpointed):
    # rounds of ceil(7 / 2) = 4 steps, the last partial
    assert [record["step"] for record in history.epochs] == [4, 7]
    assert {record["lr"] for record in history.epochs} == {2e-4}


def test_the_paper_protocols_train_at_their_own_batch_size_and_precision():
    assert plan("cad-paper", batch_size=8).batch_size == 4
    assert TrainingPlan.resolve(get_protocol("sam-adapter-paper"), 8, "bf16", None, 50, 0).precision == "fp32"
    assert TrainingPlan.resolve(get_protocol("cad-paper"), 8, "fp32", None, 50, 0).epochs == 20
    assert TrainingPlan.resolve(get_protocol("cad-paper"), 8, "fp32", 3, 50, 0).epochs == 3  # --epochs


def test_validation_after_each_epoch_goes_into_the_curve():
    history = fine_tune(fresh(), data(count=4), plan("quick", epochs=2), validation=data("test", count=3))
    assert len(history.epochs) == 2
    for record in history.epochs:
        assert 0.0 <= record["validation_iou"] <= 1.0 and 0.0 <= record["validation_dice"] <= 1.0
    without = fine_tune(fresh(), data(count=4), plan("quick", epochs=1))
    assert without.epochs[0]["validation_iou"] is None
    assert set(without.curve()) == {"losses", "epochs", "resumed_from_epoch"}


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("name", PROTOCOLS)
def test_a_fine_tune_killed_mid_epoch_resumes_from_its_last_epoch_and_continues_the_curve(tmp_path, name):
    method = "cad" if name == "cad-paper" else "decoder_only"  # CAD: its BatchNorm statistics survive too
    train, validation = data(count=5), data("test", count=2)
    length = plan(name, epochs=3, steps=8, batch_size=2)
    whole = fine_tune(fresh(method), train, length, validation=validation)

    checkpoint = tmp_path / "last.pt"
    per_epoch = length.batches_per_epoch(len(train))
    kill_at = per_epoch + 2  # the second step of the second epoch

    def kill(step, loss):
        if step == kill_at:
            raise Interrupted

    with pytest.raises(Interrupted):
        fine_tune(fresh(method), train, length, validation=validation, checkpoint=checkpoint, fingerprint="cell",
                  on_step=kill)
    assert checkpoint.is_file()
    saved = torch.load(checkpoint, weights_only=True)  # a weights-only file
    assert saved["epochs_done"] == 1 and len(saved["losses"]) == per_epoch

    resumed = fine_tune(fresh(method), train, length, validation=validation, checkpoint=checkpoint,
                        fingerprint="cell")
    assert resumed.resumed_from_epoch == 1
    assert resumed.losses == whole.losses  # bit for bit: nothing random depends on where it resumed
    assert resumed.losses[:per_epoch] == saved["losses"]  # the curve continues from where it stopped
    assert [r["lr"] for r in resumed.epochs] == [r["lr"] for r in whole.epochs]
    assert [r["validation_iou"] for r in resumed.epochs] == pytest.approx([r["validation_iou"] for r in whole.epochs])


def test_a_checkpoint_of_another_fine_tune_is_not_resumed(tmp_path):
    checkpoint = tmp_path / "last.pt"
    fine_tune(fresh(), data(count=4), plan("quick", epochs=1), checkpoint=checkpoint, fingerprint="one")
    other = fine_tune(fresh(), data(count=4), plan("quick", epochs=2), checkpoint=checkpoint, fingerprint="two")
    assert other.resumed_from_epoch is None and len(other.epochs) == 2


def test_a_loss_that_stops_being_finite_stops_the_fine_tune_naming_the_step():
    method = fresh()
    calls = {"n": 0}
    original = method.image_embeddings

    def poisoned(images):
        calls["n"] += 1
        embeddings = original(images)
        return embeddings * float("nan") if calls["n"] >= 4 else embeddings

    method.image_embeddings = poisoned
    seen = []
    with pytest.raises(NonFiniteLossError, match=r"stopped being finite at step 4 \(loss nan\); steps 1-3 were finite"):
        fine_tune(method, data(count=6), plan("quick", epochs=None, steps=6), on_step=lambda s, loss: seen.append(s))
    assert seen == [1, 2, 3]


def test_fine_tune_is_deterministic_for_a_seed():
    train = SyntheticCamouflage("train", seed=0, image_size=128, count=4, height=48, width=64)
    curves = []
    for seed in (5, 5, 6):
        torch.manual_seed(0)  # same initial weights
        trainee = prepare("decoder_only", "test_scale")
        quick = TrainingPlan.resolve(get_protocol("quick"), 2, "fp32", None, 2, seed)
        curves.append(fine_tune(trainee.method, train, quick).losses)
    assert curves[0] == curves[1] and curves[0] != curves[2]


def test_training_order_covers_each_epoch_before_repeating():
    order = training_order(length=5, steps=4, batch_size=3, seed=1)
    flat = [index for step in order for index in step]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:10]) == list(range(5))
    assert order == training_order(length=5, steps=4, batch_size=3, seed=1)


def test_the_last_validation_can_be_left_to_the_caller_and_gives_the_same_scores():
    validation = data("test", count=3)
    both = fine_tune(fresh(), data(count=4), plan("quick", epochs=2), validation=validation)
    history = fine_tune(fresh(), data(count=4), plan("quick", epochs=2), validation=validation,
                        validate_last_epoch=False)
    assert history.epochs[0] == both.epochs[0] and history.epochs[1]["validation_iou"] is None
    from cadbench.training.quality import evaluate

    method = fresh()
    fine_tune(method, data(count=4), plan("quick", epochs=2))
    history.set_last_validation(evaluate(method, validation, batch_size=2))
    assert history.epochs[1] == both.epochs[1]


def test_micro_batches_of_a_cells_levers_train_like_the_whole_batch_even_a_short_last_one():
    """The quality fine-tune runs under the cell's levers: with micro-batches of 3 out of cad-paper's batches of 4
    (and an epoch's last batch of 2), the accumulated gradients are the whole batch's, so the losses match the
    plain step's; a last micro-batch of 1 counts a quarter, not as much as the first of 3."""
    from cadbench.training.plan import StepPlan

    train = data(count=10)  # batch 4: batches of 4, 4 and 2 per epoch
    plain = fine_tune(fresh(), train, plan("cad-paper", epochs=2)).losses
    micro = fine_tune(fresh(), train, plan("cad-paper", epochs=2), step=StepPlan(micro_batch=3)).losses
    assert len(micro) == len(plain) == 6
    assert micro == pytest.approx(plain, rel=1e-4)
