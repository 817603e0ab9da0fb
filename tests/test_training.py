"""Every method trains for real at test scale, touching exactly its trainable parameters."""

import torch

from cadbench.training.step import training_step

# The shared loss uses the mask logits only, so SAM's IoU-prediction head (trainable in both reference codes)
# receives no gradient and AdamW leaves it untouched.
NO_GRADIENT_PREFIX = "sam.mask_decoder.iou_prediction_head."


def test_loss_decreases_on_a_fixed_batch(trainee, batch):
    # lr 2e-4 moves slowly, but on a fixed batch every step must lower the loss.
    losses = [float(training_step(trainee.method, trainee.optimizer, batch)) for _ in range(6)]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0] - 1e-3, losses


def test_only_declared_trainable_parameters_change(trainee, batch):
    method = trainee.method
    before = {name: p.detach().clone() for name, p in method.named_parameters()}
    trainable = {name for name, p in method.named_parameters() if p.requires_grad}
    assert {id(p) for p in method.trainable_parameters()} == {
        id(p) for name, p in method.named_parameters() if name in trainable}
    for _ in range(2):
        training_step(method, trainee.optimizer, batch)
    changed = {name for name, p in method.named_parameters() if not torch.equal(p, before[name])}
    frozen = set(before) - trainable
    assert not changed & frozen, "frozen weights changed"
    for name in frozen:
        assert torch.equal(dict(method.named_parameters())[name], before[name])
    untouched = trainable - changed
    assert untouched and all(name.startswith(NO_GRADIENT_PREFIX) for name in untouched), untouched
    assert changed == trainable - untouched


def test_trainable_set_is_decoder_plus_adapter(trainee):
    names = {name for name, p in trainee.method.named_parameters() if p.requires_grad}
    expected_prefix = {"decoder_only": (), "sam_adapter": ("prompt_generator.",), "cad": ("adapter.",)}
    prefixes = ("sam.mask_decoder.",) + expected_prefix[trainee.method.name]
    assert all(name.startswith(prefixes) for name in names)
    for prefix in prefixes:
        assert any(name.startswith(prefix) for name in names), prefix
    assert not any(p.requires_grad for p in trainee.method.sam.image_encoder.parameters())
    assert not any(p.requires_grad for p in trainee.method.sam.prompt_encoder.parameters())


def test_bf16_autocast_step_runs(trainee, batch):
    loss = training_step(trainee.method, trainee.optimizer, batch, precision="bf16")
    assert torch.isfinite(loss)
