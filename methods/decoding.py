"""How a method turns image embeddings and box prompts into masks with SAM's own prompt encoder and mask decoder:
what every method shares, so the comparison between them is fair (the prompt encoder stays frozen)."""

from __future__ import annotations

import torch
from segment_anything.modeling import Sam

from cadbench.families import family_of
from cadbench.families.features import Features


def whole_image_boxes(images: torch.Tensor) -> torch.Tensor:
    """One box per image covering all of it, (B, 4) as x0, y0, x1, y1 in input pixels."""
    batch, _, height, width = images.shape
    box = torch.tensor([0.0, 0.0, float(width), float(height)], device=images.device)
    return box.expand(batch, 4)


def decode_masks(sam: Sam, image_embeddings: Features, boxes: torch.Tensor) -> torch.Tensor:
    """Low-resolution mask logits for B embeddings (B, C, g, g) and their box prompts: (B, 1, 4g, 4g) for one box
    per image, boxes (B, 4); (B, N, 4g, 4g) for N boxes per image, boxes (B, N, 4), mask k of image b answering
    box k of image b.

    The prompt encoder is frozen and runs under `no_grad`. Meta's `MaskDecoder.predict_masks` repeats the image
    embedding once per prompt (one image, many prompts), so the batch is decoded one image at a time, each image
    with all its prompts in one call, as `SamPredictor.predict_torch` does; all B at once would not give one mask per
    image (segment-anything 1.0 fails on the shapes).

    A family that decodes otherwise (`ModelFamily.decode`: SAM 2, whose decoder reads several feature levels) decodes
    its own features, with the same prompts and the same output.
    """
    decode = family_of(sam).decode
    if decode is not None:
        return decode(sam, image_embeddings, boxes)
    if image_embeddings.shape[0] != boxes.shape[0]:
        raise ValueError(f"{image_embeddings.shape[0]} image embeddings but {boxes.shape[0]} sets of boxes")
    per_image = boxes.dim() == 3
    prompts = boxes.shape[1] if per_image else 1
    with torch.no_grad():
        sparse, dense = sam.prompt_encoder(points=None, boxes=boxes.reshape(-1, 4) if per_image else boxes,
                                           masks=None)
        image_pe = sam.prompt_encoder.get_dense_pe()
    logits = []
    for index in range(image_embeddings.shape[0]):
        prompt = slice(index * prompts, (index + 1) * prompts)
        low_res, _iou_prediction = sam.mask_decoder(
            image_embeddings=image_embeddings[index : index + 1],
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse[prompt],
            dense_prompt_embeddings=dense[prompt],
            multimask_output=False,
        )
        logits.append(low_res.transpose(0, 1) if per_image else low_res)  # (N, 1, h, w) -> (1, N, h, w)
    return torch.cat(logits, dim=0)
