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
