"""Where backward goes: through the whole encoder for SAM Adapter, LoRA, peft and full fine-tuning, nowhere near it
for CAD and decoder-only."""

import contextlib

import torch

from cadbench.training.protocol import segmentation_loss, upsample_logits


@contextlib.contextmanager
def count_saved_tensors_in(*modules: torch.nn.Module):
    """Counts tensors autograd saves for backward while any of `modules` runs forward."""
    state = {"inside": 0, "saved": 0}

    def enter(*_):
        state["inside"] += 1

    def leave(*_):
        state["inside"] -= 1

    def pack(tensor):
        if state["inside"]:
            state["saved"] += 1
        return tensor

    handles = [hook for module in modules
               for hook in (module.register_forward_pre_hook(enter), module.register_forward_hook(leave))]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield state
    finally:
        for handle in handles:
            handle.remove()


def _loss(method, batch):
    logits = upsample_logits(method(batch.images), tuple(batch.masks.shape[-2:]))
    return segmentation_loss(logits, batch.masks)


def test_encoder_saves_for_backward_exactly_when_backward_goes_through_it(trainee, batch):
    method = trainee.method
    # SAM Adapter calls Meta's encoder modules one by one, so watch those modules, which every method runs.
    encoder = method.sam.image_encoder
    # (saved-tensor hooks do not nest: only the innermost pair is active, hence one context for all modules)
    with count_saved_tensors_in(encoder.patch_embed, *encoder.blocks, encoder.neck) as encoder_state:
        _loss(method, batch)
    if method.backward_through_encoder:
        # every block keeps its activations (layer norms, attention, MLP)
        assert encoder_state["saved"] >= 10 * len(encoder.blocks)
    else:
        assert encoder_state["saved"] == 0


def test_gradient_reaches_the_first_block_output_exactly_when_backward_goes_through_the_encoder(trainee, batch):
    """The first block's output (the second block's input): SAM Adapter and full fine-tuning train something before
    block 0, LoRA-style adapters train layers inside it; either way backward runs through every block after it."""
    method = trainee.method
    captured = {}

    def keep_input(_module, inputs):
        captured["x"] = inputs[0]
        if inputs[0].requires_grad:
            inputs[0].retain_grad()

    method.sam.image_encoder.blocks[1].register_forward_pre_hook(keep_input)
    _loss(method, batch).backward()
    first_output = captured["x"]
    if method.backward_through_encoder:
        assert first_output.grad is not None and first_output.grad.abs().sum() > 0
    else:
        assert not first_output.requires_grad
    if method.name == "sam_adapter":
        generator = method.prompt_generator
        for parameter in (generator.embedding_tune.weight, generator.handcrafted_embed.weight,
                          generator.lightweight_mlps[0][0].weight, generator.shared_up.weight):
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0
