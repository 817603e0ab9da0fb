"""Training: one shared step for every method, the protocols that fine-tune with it, and the scores of quality.

    segmentation_loss, upsample_logits, build_optimizer                    what every protocol shares (protocol)
    StepPlan, Trainee                                                      how a step runs, what it trains (plan)
    training_step                                                          the step every measurement runs (step)
    make_training_setup(cell, ...), prepare, TrainingSetup                 a cell's step assembled (setup)
    available_protocols(), get_protocol(name), Protocol                    quick, cad-paper, sam-adapter-paper (protocols)
    fine_tune, TrainingPlan, History, NonFiniteLossError                   epochs, validation, resume (finetune)
    evaluate                                                               score a dataset (quality)
    trainable_state, save_weights, read_weights                            a fine-tune's own weights (weights)
    SegmentationMetrics                                                    IoU, Dice, S/E/wF, MAE, BER (metrics)
"""

from cadbench._lazy import lazy_exports

_EXPORTS = {
    "segmentation_loss": "protocol", "upsample_logits": "protocol", "build_optimizer": "protocol",
    "StepPlan": "plan", "Trainee": "plan", "training_step": "step",
    "make_training_setup": "setup", "prepare": "setup", "TrainingSetup": "setup",
    "available_protocols": "protocols", "get_protocol": "protocols", "Protocol": "protocols",
    "fine_tune": "finetune", "TrainingPlan": "finetune", "History": "finetune", "NonFiniteLossError": "finetune",
    "evaluate": "quality", "SegmentationMetrics": "metrics",
    "trainable_state": "weights", "save_weights": "weights", "read_weights": "weights",
}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
