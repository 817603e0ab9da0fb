"""Training: one shared protocol and one training step for every method, then fine-tuning and metrics for quality.

    whole_image_boxes, decode_masks, segmentation_loss, build_optimizer    the shared protocol (protocol)
    training_step, make_training_setup(cell, ...), prepare, TrainingSetup    the step every measurement runs (step)
    fine_tune, evaluate                                                    quality: train, then score (quality)
    SegmentationMetrics                                                    IoU, Dice, S/E/wF, MAE, BER (metrics)
"""

from cadbench._lazy import lazy_exports

_EXPORTS = {
    "whole_image_boxes": "protocol", "decode_masks": "protocol", "segmentation_loss": "protocol",
    "build_optimizer": "protocol",
    "training_step": "step", "make_training_setup": "step", "prepare": "step", "TrainingSetup": "step",
    "fine_tune": "quality", "evaluate": "quality", "SegmentationMetrics": "metrics",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
