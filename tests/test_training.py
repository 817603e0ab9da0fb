"""Every method trains for real at test scale, touching exactly its trainable parameters."""

import re

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


# What each built-in method trains besides the mask decoder, as parameter-name patterns (every method needs one).
TRAINED_BESIDES_DECODER = {
    "decoder_only": (),
    "sam_adapter": (r"prompt_generator\.",),
    "cad": (r"adapter\.",),
    "lora": (r"sam\.image_encoder\.blocks\.\d+\.attn\.qkv\.linear_[ab]_[qv]\.weight$",),
    "full": (r"sam\.image_encoder\.",),
    "peft": (r"sam\.image_encoder\.blocks\.\d+\.attn\.qkv\.lora_[AB]\.default\.weight$",),
}


def test_trainable_set_is_decoder_plus_what_the_method_adds(trainee):
    method = trainee.method
    patterns = (r"sam\.mask_decoder\.",) + TRAINED_BESIDES_DECODER[method.name]
    names = {name for name, p in method.named_parameters() if p.requires_grad}
    assert all(any(re.match(pattern, name) for pattern in patterns) for name in names)
    for pattern in patterns:
        assert any(re.match(pattern, name) for name in names), pattern
    assert not any(p.requires_grad for p in method.sam.prompt_encoder.parameters())  # frozen in every method
    encoder_trains = any(p.requires_grad for p in method.sam.image_encoder.parameters())
    assert encoder_trains == (method.name in ("lora", "full", "peft"))  # their layers live in the encoder


def test_gradients_reach_exactly_the_declared_trainable_parameters(trainee, batch):
    """After one backward, the parameters holding a gradient are exactly `trainable_parameters()` (less SAM's
    IoU head, which the shared loss does not use); no frozen parameter gets one."""
    method = trainee.method
    training_step(method, trainee.optimizer, batch)
    with_gradient = {name for name, p in method.named_parameters() if p.grad is not None}
    declared = {id(p) for p in method.trainable_parameters()}
    declared_names = {name for name, p in method.named_parameters() if id(p) in declared}
    assert with_gradient == {name for name in declared_names if not name.startswith(NO_GRADIENT_PREFIX)}


def test_bf16_autocast_step_runs(trainee, batch):
    loss = training_step(trainee.method, trainee.optimizer, batch, precision="bf16")
    assert torch.isfinite(loss)


def test_the_loss_over_n_object_masks_is_the_mean_of_each_masks_own_loss():
    """--prompts-per-image N: each object mask has its own soft IoU; the loss averages over the B x N masks."""
    from cadbench.training.protocol import segmentation_loss

    torch.manual_seed(3)
    logits, masks = torch.randn(2, 3, 16, 16), (torch.rand(2, 3, 16, 16) > 0.6).float()
    each = [segmentation_loss(logits[b, k][None, None], masks[b, k][None, None]) for b in range(2) for k in range(3)]
    torch.testing.assert_close(segmentation_loss(logits, masks), torch.stack(each).mean())
    # not the union's soft IoU per image, which is what summing over all channels would give
    union = segmentation_loss(logits.reshape(2, 1, 48, 16), masks.reshape(2, 1, 48, 16))
    assert not torch.allclose(segmentation_loss(logits, masks), union)


def test_micro_batches_slice_object_boxes_and_masks_with_their_images():
    """A step with N objects per image in micro-batches has the whole batch's gradient (the boxes go with their
    images): the lever lives in the step, the method never sees it."""
    from cadbench.datasets.batch import random_batch
    from cadbench.training.plan import StepPlan
    from cadbench.training.setup import prepare

    batch = random_batch(128, 4, seed=2, prompts=3)
    grads = []
    for plan in (StepPlan("fp32"), StepPlan("fp32", micro_batch=2)):
        torch.manual_seed(0)
        trainee = prepare("decoder_only", "test_scale")
        optimizer = torch.optim.SGD(trainee.method.trainable_parameters(), lr=0.0)
        loss = training_step(trainee.method, optimizer, batch, plan)
        grads.append((loss, [None if p.grad is None else p.grad.clone()
                             for p in trainee.method.trainable_parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-5, atol=1e-6)
    assert sum(grad is not None for grad in grads[0][1]) > 10
    for whole, parts in zip(grads[0][1], grads[1][1]):
        assert (whole is None) == (parts is None)
        if whole is not None:
            torch.testing.assert_close(whole, parts, rtol=1e-4, atol=1e-6)
