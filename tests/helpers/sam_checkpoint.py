"""What each model family's refusal of a SAM checkpoint starts from: a test-scale SAM's state dict saved to a file
and handed to `cadbench estimate` for a backbone of another family."""

from __future__ import annotations

from pathlib import Path

import torch
from cadbench_in_process import CliResult, cadbench_main

from cadbench.backbones import build_sam


def estimate_from_a_sam_checkpoint(backbone: str, folder: Path) -> tuple[Path, CliResult]:
    """The checkpoint file (`folder/sam_test_scale.pth`) and what `cadbench estimate --backbone BACKBONE
    --checkpoint FILE --out folder/estimate` answered."""
    sam_file = folder / "sam_test_scale.pth"
    torch.save(build_sam("test_scale").sam.state_dict(), sam_file)
    return sam_file, cadbench_main("estimate", "--backbone", backbone, "--methods", "decoder_only", "--checkpoint",
                                   sam_file, "--out", folder / "estimate")
