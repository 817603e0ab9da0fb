"""full fine-tuning: the whole image encoder and the mask decoder train; the prompt encoder stays frozen."""

import pytest
import torch

from cadbench.backbones import build_sam
from cadbench.methods import Full
from cadbench.params import count_parameters
from cadbench.registry import build_method
from cadbench.datasets.batch import random_batch

ENCODER_PARAMS = {"vit_b": 89_670_912, "vit_l": 308_278_272, "vit_h": 637_026_048}
MASK_DECODER, PROMPT_ENCODER = 4_058_340, 6_220


def test_the_embeddings_are_meta_encoder_output_bit_for_bit():
    sam = build_sam("test_scale").sam
    images = random_batch(128, 2).images
    with torch.no_grad():
        expected = sam.image_encoder(sam.preprocess(images))
        torch.testing.assert_close(Full(sam).image_embeddings(images), expected, rtol=0, atol=0)


def test_encoder_and_mask_decoder_train_and_the_prompt_encoder_does_not():
    method = Full(build_sam("test_scale").sam)
    assert all(parameter.requires_grad for parameter in method.sam.image_encoder.parameters())
    assert all(parameter.requires_grad for parameter in method.sam.mask_decoder.parameters())
    assert not any(parameter.requires_grad for parameter in method.sam.prompt_encoder.parameters())
    assert {id(p) for p in method.trainable_parameters()} == {
        id(p) for p in [*method.sam.image_encoder.parameters(), *method.sam.mask_decoder.parameters()]}


@pytest.mark.parametrize("backbone", list(ENCODER_PARAMS))
def test_parameter_counts_are_every_encoder_and_decoder_parameter(backbone):
    counts = count_parameters("full", backbone)
    assert counts.trainable_params == ENCODER_PARAMS[backbone] + MASK_DECODER
    assert counts.total_params == ENCODER_PARAMS[backbone] + MASK_DECODER + PROMPT_ENCODER


def _encoder_bytes_saved_for_backward(spec: str) -> int:
    """Bytes of the distinct storages autograd saves while the method's encoder runs forward."""
    method = build_method(spec, build_sam("test_scale").sam)
    storages: dict[int, int] = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        method.image_embeddings(random_batch(128, 2).images)
    return sum(storages.values())


def test_the_encoder_saves_more_under_full_fine_tuning_than_under_lora():
    """Both keep activations in every block; full also keeps each Linear's input for its weight gradient, which a
    frozen weight (LoRA) does not need. This, more than the optimizer states, is why full needs more memory."""
    assert _encoder_bytes_saved_for_backward("full") > _encoder_bytes_saved_for_backward("lora") > 0
