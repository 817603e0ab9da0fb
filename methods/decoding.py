"""How a method turns image embeddings and box prompts into masks with SAM's own prompt encoder and mask decoder:
what every method shares, so the comparison between them is fair (the prompt encoder stays frozen)."""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam


def whole_image_boxes(images: torch.Tensor) -> torch.Tensor:
    """One box per image covering all of it, (B, 4) as x0, y0, x1, y1 in input pixels."""
    batch, _, height, width = images.shape
    box = torch.tensor([0.0, 0.0, float(width), float(height)], device=images.device)
    return box.expand(batch, 4)


def decode_masks(sam: Sam, image_embeddings: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Low-resolution mask logits (B, 1, 4g, 4g) for B embeddings (B, C, g, g) and one box prompt per image.

    The prompt encoder is frozen and runs under `no_grad`. Meta's `MaskDecoder.predict_masks` repeats the image
    embedding once per prompt (one image, many prompts), so B images with one prompt each are decoded one image at a
    time; all B at once would not give one mask per image (segment-anything 1.0 fails on the shapes).
    """
    if image_embeddings.shape[0] != boxes.shape[0]:
        raise ValueError(f"{image_embeddings.shape[0]} image embeddings but {boxes.shape[0]} boxes")
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)
        image_pe = sam.prompt_encoder.get_dense_pe()
    logits = []
    for index in range(image_embeddings.shape[0]):
        low_res, _iou_prediction = sam.mask_decoder(
            image_embeddings=image_embeddings[index : index + 1],
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse[index : index + 1],
            dense_prompt_embeddings=dense[index : index + 1],
            multimask_output=False,
        )
        logits.append(low_res)
    return torch.cat(logits, dim=0)
