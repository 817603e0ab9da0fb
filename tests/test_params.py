"""Parameter counts (cadbench.params): each method wraps its own copy of a backbone built once per process, so a
count equals a count on a fresh build, whichever methods were counted before on that backbone."""

import pytest
import torch

from cadbench.backbones import build_sam
from cadbench.params import count_parameters
from cadbench.registry import parse_method_spec


def _fresh_counts(method_spec: str, backbone: str) -> tuple[int, int]:
    built = build_sam(backbone, device="meta")
    with torch.device("meta"):
        method = parse_method_spec(method_spec).build(built.sam)
    return (sum(p.numel() for p in method.trainable_parameters()), sum(p.numel() for p in method.parameters()))


@pytest.mark.parametrize("backbone", ["test_scale", "sam2_test_scale"])
def test_counts_equal_fresh_builds_after_methods_that_change_the_model(backbone):
    # lora and sam_adapter add modules to the encoder they wrap; had they wrapped the kept build, decoder_only
    # (counted after them) would count their parameters too
    for spec in ("lora:rank=8", "sam_adapter", "decoder_only", "full"):
        counted = count_parameters(spec, backbone)
        assert (counted.trainable_params, counted.total_params) == _fresh_counts(spec, backbone), spec
