"""Training: one shared step for every method, the protocols that fine-tune with it, and the scores of quality.

    whole_image_boxes, decode_masks, segmentation_loss, build_optimizer    what every protocol shares (protocol)
    training_step, make_training_setup(cell, ...), prepare, TrainingSetup    the step every measurement runs (step)
    available_protocols(), get_protocol(name), Protocol                    quick, cad-paper, sam-adapter-paper (protocols)
    fine_tune, TrainingPlan, History, NonFiniteLossError                   epochs, validation, resume (finetune)
    evaluate                                                               score a dataset (quality)
    trainable_state, save_weights, read_weights                            a fine-tune's own weights (weights)
    SegmentationMetrics                                                    IoU, Dice, S/E/wF, MAE, BER (metrics)
"""

from cadbench._lazy import lazy_exports

_EXPORTS = {
    "whole_image_boxes": "protocol", "decode_masks": "protocol", "segmentation_loss": "protocol",
    "build_optimizer": "protocol",
    "training_step": "step", "make_training_setup": "step", "prepare": "step", "TrainingSetup": "step",
    "available_protocols": "protocols", "get_protocol": "protocols", "Protocol": "protocols",
    "fine_tune": "finetune", "TrainingPlan": "finetune", "History": "finetune", "NonFiniteLossError": "finetune",
    "evaluate": "quality", "SegmentationMetrics": "metrics",
    "trainable_state": "weights", "save_weights": "weights", "read_weights": "weights",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
