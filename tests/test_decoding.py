"""A batch of B images, one box each, decodes to B masks equal to decoding each image alone."""

import pytest
import torch

from cadbench.methods.decoding import decode_masks, whole_image_boxes


def test_batched_forward_equals_per_image_forward(trainee, batch):
    method = trainee.method.eval()  # eval: CAD's BatchNorm must not mix images through batch statistics
    images = torch.cat([batch.images, batch.images[:1].flip(-1)])  # B = 3
    with torch.no_grad():
        together = method(images)
        alone = torch.cat([method(images[i : i + 1]) for i in range(3)])
    assert together.shape == (3, 1, 32, 32)
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_decode_masks_gives_one_mask_per_image_where_meta_decoder_cannot_batch(trainee, batch):
    sam = trainee.method.sam
    embeddings = torch.randn(3, 32, 8, 8)
    images = torch.zeros(3, 3, 128, 128)
    with torch.no_grad():
        ours = decode_masks(sam, embeddings, whole_image_boxes(images))
        sparse, dense = sam.prompt_encoder(points=None, boxes=whole_image_boxes(images), masks=None)
        # The trap the per-image decoding avoids: Meta's decoder repeats each embedding once per prompt.
        # The trap the per-image decoding avoids: Meta's decoder repeats each embedding once per prompt (B x B).
        with pytest.raises(RuntimeError, match="must match"):
            sam.mask_decoder(embeddings, sam.prompt_encoder.get_dense_pe(), sparse, dense, False)
    assert ours.shape == (3, 1, 32, 32)


def test_n_prompts_per_image_decode_in_one_call_per_image_equal_to_n_single_prompt_decodes(trainee):
    """SAM's predictor batches one image's prompts: an image embedding (1, C, g, g) with N boxes gives N masks in
    one mask-decoder call (Meta's predict_masks repeats the embedding per prompt), each equal to decoding its box
    alone."""
    sam = trainee.method.sam
    embeddings = torch.randn(2, 32, 8, 8)
    boxes = torch.tensor([[[0.0, 0.0, 64.0, 64.0], [10.0, 20.0, 100.0, 90.0], [50.0, 50.0, 128.0, 128.0]],
                          [[5.0, 5.0, 30.0, 40.0], [0.0, 0.0, 128.0, 128.0], [70.0, 10.0, 120.0, 60.0]]])
    calls = []
    hook = sam.mask_decoder.register_forward_hook(lambda module, args, kwargs_out: calls.append(1))
    with torch.no_grad():
        together = decode_masks(sam, embeddings, boxes)
        hook.remove()
        alone = [[decode_masks(sam, embeddings[b : b + 1], boxes[b : b + 1, k]) for k in range(3)] for b in range(2)]
    assert len(calls) == 2  # one decoder call per image, all its prompts in it
    assert together.shape == (2, 3, 32, 32)
    for b in range(2):
        for k in range(3):
            assert alone[b][k].shape == (1, 1, 32, 32)
            torch.testing.assert_close(together[b, k], alone[b][k][0, 0], rtol=1e-5, atol=1e-5)


def test_every_method_forwards_object_boxes_to_n_masks_per_image(trainee, batch):
    """Methods override image_embeddings, never forward: each one takes (B, N, 4) boxes unchanged."""
    method = trainee.method.eval()
    boxes = torch.tensor([[[0.0, 0.0, 64.0, 64.0], [32.0, 32.0, 96.0, 96.0]]]).expand(2, 2, 4)
    with torch.no_grad():
        logits = method(batch.images, boxes)
        first = method(batch.images, boxes[:, 0])
    assert logits.shape == (2, 2, 32, 32)
    torch.testing.assert_close(logits[:, :1], first, rtol=1e-5, atol=1e-5)
