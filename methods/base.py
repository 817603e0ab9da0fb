"""The method plugin interface.

A method wraps Meta's `Sam`, names its trainable parameters and maps a batch of images to mask logits. The harness
owns the optimizer, the loss and the loop, so one training step serves every method.

Images enter as raw pixel values (0-255, float, RGB) at the encoder's input size; `normalize` applies the model's own
preprocessing for the encoder (SAM's mean/std; LiteMedSAM's per-image min-max).

A method is defined per model family (`cadbench.families`): `families` lists those it is defined on; on any other
family `not_defined_on` gives the reason, and the harness records the cell as `not_applicable` with it. A method that
needs to know more than the three parts every family has (`image_encoder`, `prompt_encoder`, `mask_decoder`) asks
`self.family`.

Image embeddings are what the family's image encoder gives its decoder (`cadbench.families.features`): one tensor
(B, C, g, g) for SAM and LiteMedSAM; for SAM 2 a tuple of its three FPN levels, each (B, C, ., .), because its mask
decoder reads the two high-resolution levels too. `decode_masks` decodes either, as the family says.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Mapping

import torch
from segment_anything.modeling import Sam
from torch import nn

from cadbench.families import FAMILIES, SAM, ModelFamily, family_of
from cadbench.families.features import Features
from cadbench.methods.decoding import decode_masks, whole_image_boxes
from cadbench.methods.options import MethodOptions


class Method(nn.Module, ABC):
    """Base class of every fine-tuning method.

    The whole SAM is frozen here and its mask decoder unfrozen (it trains in every method of the shared protocol);
    subclasses add their own modules, which are trainable unless they say otherwise.

    A method with options declares them as a frozen dataclass (see `cadbench.methods.options`) and sets `Options`;
    it then receives the parsed, validated instance as `options` (also kept as `self.options`). A method without
    options may keep the one-argument constructor `__init__(self, sam)`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    Options: ClassVar[type[MethodOptions]] = MethodOptions  # no options unless a method declares some
    # Capabilities the harness reads to decide which levers apply (a method never implements a lever itself):
    # the image encoder runs under torch.no_grad(); such a method splits its embeddings into `frozen_features`
    # (what runs under no_grad) and `trainable_embeddings` (what trains on top), which the lean-encoder lever uses.
    encoder_under_no_grad: ClassVar[bool] = False
    backward_through_encoder: ClassVar[bool] = False  # gradients flow back through the image encoder's blocks
    # False: nothing trains (`zero_shot`): the harness scores the model as built, with no fine-tune, and its step is
    # an inference step (forward under no_grad, no optimizer).
    trains: ClassVar[bool] = True
    # True: the method is the backbone as built, nothing added (`zero_shot`), so its test scores are the object
    # protocol's zero-shot reference: the harness scores the test split once for both.
    is_backbone_as_built: ClassVar[bool] = False
    # The model families the method is defined on (a plugin that says nothing: Meta's SAM only); on another family,
    # the reason from `undefined_on`, or a generic one.
    families: ClassVar[tuple[str, ...]] = (SAM,)
    undefined_on: ClassVar[Mapping[str, str]] = {}
    # Families on which the method's definition is cadbench's own, not its authors' (`cadbench list` says so).
    own_definition_on: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def not_defined_on(cls, family: str) -> str | None:
        """Why the method has no definition on the model family `family`, or None when it has one."""
        if family in cls.families:
            return None
        return cls.undefined_on.get(family, f"{cls.name} declares no definition on the {FAMILIES[family].label} "
                                            f"family")

    @classmethod
    def missing_requirement(cls) -> str | None:
        """Why this method cannot run in this environment (e.g. an optional package is not installed), or None.

        A method that returns a reason is left out of the default grid and refused, with that reason, when asked for.
        """
        return None

    def __init__(self, sam: Sam, options: MethodOptions | None = None) -> None:
        super().__init__()
        self.options = options if options is not None else self.Options()
        self.sam = sam
        sam.requires_grad_(False)
        sam.mask_decoder.requires_grad_(True)

    @property
    def family(self) -> ModelFamily:
        return family_of(self.sam)

    def train(self, mode: bool = True) -> "Method":
        """As `nn.Module.train`, except that a BatchNorm whose parameters do not train stays in eval mode: it
        normalises with its running statistics and never updates them, so a frozen encoder stays frozen (TinyViT's
        Conv2d_BN layers; SAM's ViT has no BatchNorm). A trainable one (CAD's adapter; TinyViT under `full`, as
        LiteMedSAM's own training script does) trains in train mode."""
        super().train(mode)
        if mode:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                        parameter.requires_grad for parameter in module.parameters()):
                    module.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Exactly the parameters the optimizer updates."""
        return [parameter for parameter in self.parameters() if parameter.requires_grad]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """SAM's pixel normalisation (and padding to its square input, a no-op at the input size)."""
        return self.sam.preprocess(images)

    @abstractmethod
    def image_embeddings(self, images: torch.Tensor) -> Features:
        """(B, C, g, g) image embeddings for raw-pixel images (B, 3, S, S) (SAM 2: its FPN levels, see above)."""

    # -- the split of an `encoder_under_no_grad` method ------------------------------------------------------------
    def frozen_features(self, images: torch.Tensor) -> Features:
        """What the method computes under no_grad, (B, C, g, g) for raw-pixel images (B, 3, S, S): by default
        Meta's image encoder on the normalised images. Called under no_grad; depends on each image alone."""
        return self.sam.image_encoder(self.normalize(images))

    def trainable_embeddings(self, images: torch.Tensor, features: Features) -> Features:
        """The image embeddings (B, C, g, g) from the images and their `frozen_features`: what trains on top of
        the frozen part (by default nothing: the features are the embeddings). `image_embeddings` must equal
        `trainable_embeddings(images, frozen_features(images) under no_grad)`."""
        return features

    def forward(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Low-resolution mask logits (B, 1, S/4, S/4) for boxes (B, 4), one per image (by default a box around all
        of it), or (B, N, S/4, S/4) for boxes (B, N, 4), N objects per image decoded in one decoder call per image
        (`decode_masks`). Methods override `image_embeddings`, never this, so every method gets both."""
        if boxes is None:
            boxes = whole_image_boxes(images)
        return decode_masks(self.sam, self.image_embeddings(images), boxes)
