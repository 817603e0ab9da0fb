"""zero_shot: the model as built, nothing trained. Its step is an inference step (the training step's forward under
no_grad, no optimizer), measured and estimated as such; the estimator's replay of it is exact."""

import pytest
import torch

from cadbench.estimator import estimate_cell, estimate_setup
from cadbench.estimator.cuda_runtime import step_workspace_bytes
from cadbench.harness.measure_cell import step_kind
from cadbench.methods import ZeroShot
from cadbench.training.setup import make_training_setup, prepare
from cadbench.training.step import training_step
from cadbench.vocabulary.cell import Cell


def test_nothing_trains_and_there_is_no_optimizer():
    trainee = prepare("zero_shot", "test_scale")
    assert isinstance(trainee.method, ZeroShot) and trainee.optimizer is None
    assert trainee.method.trainable_parameters() == []
    assert not trainee.method.training  # evaluation mode: no BatchNorm statistics or dropout change anything
    assert step_kind(Cell("zero_shot", "vit_b", 1)) == "inference" and step_kind(Cell("cad", "vit_b", 1)) == "training"


@pytest.mark.parametrize("prompts", ["image", "2"])
def test_the_step_is_the_training_steps_forward_under_no_grad_and_changes_nothing(prompts):
    cell = Cell("zero_shot", "test_scale", 2, prompts_per_image=prompts)
    setup = make_training_setup(cell, seed=3)
    before = {name: tensor.clone() for name, tensor in setup.module.state_dict().items()}
    loss = setup.step()
    assert not setup.trains and not loss.requires_grad
    assert all(torch.equal(before[name], tensor) for name, tensor in setup.module.state_dict().items())
    assert all(parameter.grad is None for parameter in setup.module.parameters())
    # the same weights and batch through decoder_only's training step: the same forward, so the same loss
    trained = make_training_setup(Cell("decoder_only", "test_scale", 2, prompts_per_image=prompts), seed=3)
    trained.trainee.method.eval()  # as zero_shot runs (test_scale has no BatchNorm or dropout; this only says so)
    assert torch.equal(training_step(trained.trainee.method, trained.optimizer, setup.batch), loss)


def test_the_estimate_is_an_inference_steps_and_replays_as_a_real_cpu_run_allocates():
    def make():
        return make_training_setup(Cell("zero_shot", "test_scale", 2))

    fake, real = estimate_setup(make), estimate_setup(make, fake=False)
    assert (fake.peak_bytes, fake.breakdown, fake.flops_per_step) == (real.peak_bytes, real.breakdown,
                                                                        real.flops_per_step)
    assert fake.breakdown.gradients == fake.breakdown.optimizer_states == fake.breakdown.activations == 0
    assert fake.workspace_bytes == step_workspace_bytes(trains=False) == step_workspace_bytes() // 2


def test_inference_needs_less_memory_and_compute_than_training_the_decoder():
    zero, decoder = (estimate_cell(Cell(method, "test_scale", 2)) for method in ("zero_shot", "decoder_only"))
    assert zero.peak_bytes < decoder.peak_bytes and zero.flops_per_step < decoder.flops_per_step
