"""What every method and every training protocol share (see docs: methods.md, protocols.md).

The loss (BCE + soft IoU), the upsampling of mask logits and the optimizer (AdamW, lr 2e-4 unless a protocol says
otherwise); the prompt and the decoding are the methods' own (`cadbench.methods.decoding`). Keeping them in one place
is what makes the comparison between methods fair; the training protocols (`cadbench.training.protocols`) choose data geometry, augmentation, schedule and epochs
around it, never the loss or the prompt.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

LEARNING_RATE = 2e-4
# The soft-IoU loss's smoothing term: CAD's (code/segment_anything_cad/utils/iou_loss_torch.py) adds 1e-3 to both
# intersection and union; SAM-Adapter's (models/iou_loss.py) adds nothing. Against unions of thousands of pixels
# the difference is below 1e-6 of the loss.
IOU_LOSS_SMOOTH = 1e-3
MASK_THRESHOLD = 0.0  # logits above this are foreground


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling of low-resolution logits to the mask size, as Meta's `Sam.postprocess_masks` does."""
    return F.interpolate(logits, size, mode="bilinear", align_corners=False)


def segmentation_loss(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + soft-IoU loss (1 - IoU of the probabilities), each averaged over the batch.

    `logits` and `masks` are (B, 1, H, W), or (B, N, H, W) for N objects per image: each of the B x N masks then
    has its own soft IoU, and both terms average over all B x N masks (the loss averages over the N masks of each
    image, as micro-sam's does). Masks hold 0/1.
    """
    if masks.shape[1] != 1:  # N object masks per image: each its own (1, H, W) mask
        logits, masks = logits.flatten(0, 1).unsqueeze(1), masks.flatten(0, 1).unsqueeze(1)
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, masks)
    probabilities = torch.sigmoid(logits)
    intersection = (probabilities * masks).sum(dim=(1, 2, 3))
    union = (probabilities + masks).sum(dim=(1, 2, 3)) - intersection
    soft_iou = (intersection + IOU_LOSS_SMOOTH) / (union + IOU_LOSS_SMOOTH)
    return bce + (1.0 - soft_iou).mean()


def build_optimizer(parameters: Iterable[torch.nn.Parameter], lr: float = LEARNING_RATE,
                    weight_decay: float = 0.01) -> torch.optim.Optimizer:
    """AdamW (PyTorch's default weight decay unless given) over exactly the given (trainable) parameters.

    `foreach=True` is what PyTorch picks by default on CUDA; asking for it explicitly makes CPU runs and the
    fake-tensor estimate take the same code path (and allocate the same temporaries) as a GPU run.
    """
    return torch.optim.AdamW(list(parameters), lr=lr, weight_decay=weight_decay, foreach=True)
