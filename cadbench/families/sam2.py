"""SAM 2.1 (Meta, facebookresearch/sam2) in image mode: Hiera image encoders with SAM 2's prompt encoder and mask
decoder, built by Meta's `build_sam2` from its own configs, and the package cadbench builds them from.

The model is Meta's `SAM2Base` as `build_sam2("configs/sam2.1/sam2.1_hiera_<size>.yaml")` returns it (every
module, the video ones included, so that parameter counts and checkpoints are Meta's), given a class of cadbench's
that adds what the harness reads and changes nothing Meta's code computes (`Sam2ImageModel`): the three parts every
family has, `image_encoder` (Meta's `ImageEncoder`: Hiera + FPN neck), `prompt_encoder` (`sam_prompt_encoder`) and
`mask_decoder` (`sam_mask_decoder`), with `preprocess` and `decode_masks`. It runs as `SAM2ImagePredictor` does
(sam2_image_predictor.py at 2b90b9f: `set_image_batch`, `_prep_prompts`, `_predict`):

* preprocessing (`SAM2Transforms`): pixels / 255, then ImageNet's mean and std (0.485, 0.456, 0.406; 0.229, 0.224,
  0.225); the harness's square images at the input size make its resize a no-op;
* the image encoder returns its three FPN levels (strides 4, 8 and 16; `scalp` 1 drops the fourth); the position
  encodings the neck also computes are dropped as it returns (the predictor drops them after flattening the
  features), so no one holds them while the decoder runs;
* decoding: the mask decoder's `conv_s0` and `conv_s1` on the two high-resolution levels, for the whole batch
  (`SAM2Base.forward_image`); `no_mem_embed` added to the lowest-resolution level in its flattened (HW, B, C)
  layout, viewed back to (B, C, H, W) (no memory attention: a single image has no memory); each box given to the
  prompt encoder as its two corners with labels 2 and 3 (the prompt encoder then adds its padding point), frozen and
  under no_grad as for every family; then the mask decoder, one image at a time with all its prompts
  (`repeat_image` when there are several) and the high-resolution features (`use_high_res_features_in_sam`), one
  mask per prompt (`multimask_output=False`; in eval mode SAM 2.1's decoder falls back to its best multimask output
  when the single one is unstable, as in the predictor; in train mode it keeps the single one).

`conv_s0`, `conv_s1` and the object-score head are Meta's `sam_mask_decoder`'s, so they train with it. The video
modules (memory attention, memory encoder, object-pointer projections: 7.5 M of hiera_t's 39.0 M parameters) never
run in image mode; they are frozen and, like the predictor's, they sit in memory.

Hiera's constructor reads values (`x.item()` of a `linspace` for its drop-path rates), which neither the meta device
nor fake tensors can answer: while a model is built, `torch.linspace` runs on real CPU tensors outside any
fake-tensor mode (`_LinspaceOnTheCpu`), and everything else is built where the caller builds (the meta device for
counting, fake tensors for the estimator, the CPU or a GPU for real steps).

The package: Meta publishes SAM 2 only on GitHub (the package `SAM-2` 1.0). The only PyPI upload, `sam2` 1.1.0, is
a third party's sdist (sha256 7e0ea252d43c10d853e3acfce0b5770ac683c30481bd6de311300e9d44f45b74) whose `setup.py`
names another author and URL; every file cadbench uses in it is byte-identical to Meta's repository at commit
2b90b9f5ceec907a1c18123530e92e794ad901a4 (2024-12-15), which `META_FILES_SHA256` records and a test checks on the
installed package. (The sdist's `sam2/sam2_hiera_*.yaml` are real files where Meta's repository has symbolic links
to `configs/sam2/`; cadbench reads neither.) The sdist also installs a top-level `training` package (Meta's training
code); cadbench never imports a bare `training` (its own is `cadbench.training`), which a test checks. It is an
optional extra: its build imports torch (so it is built without isolation, after torch is installed) and compiles a
CUDA extension unless `SAM2_BUILD_CUDA=0` (cadbench needs none of it: the extension only post-processes masks), and
it pulls in hydra-core and iopath, which nothing else needs.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import ClassVar, Sequence

import torch
from torch.overrides import TorchFunctionMode

from cadbench.families import SAM2
from cadbench.families.optional_package import OptionalPackage

PACKAGE = "sam2"
EXTRA = 'SAM2_BUILD_CUDA=0 pip install --no-build-isolation "cadbench[sam2]" (after torch)'
META_REPOSITORY = "facebookresearch/sam2"
META_COMMIT = "2b90b9f5ceec907a1c18123530e92e794ad901a4"
IMAGE_SIZE = 1024
EMBED_DIM = 256  # the FPN neck's width: the prompt encoder's and the mask decoder's
PIXEL_MEAN = (0.485, 0.456, 0.406)  # SAM2Transforms, on pixels / 255
PIXEL_STD = (0.229, 0.224, 0.225)
# Each backbone's config in the package (Meta's file, read by Meta's builder through hydra).
CONFIGS = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}
# The test-scale SAM 2: Meta's builder on hiera_t's config with hydra overrides, so every class is Meta's: 128 px,
# Hiera 8 wide with 1/1/2/1 blocks (global attention in the fourth), an FPN neck and decoder 32 wide, small memory
# modules. 649,386 parameters.
TEST_SCALE_IMAGE_SIZE = 128
TEST_SCALE_EMBED_DIM = 32
TEST_SCALE_OVERRIDES = (
    f"++model.image_size={TEST_SCALE_IMAGE_SIZE}",
    "++model.image_encoder.trunk.embed_dim=8",
    "++model.image_encoder.trunk.num_heads=1",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    f"++model.image_encoder.neck.d_model={TEST_SCALE_EMBED_DIM}",
    "++model.image_encoder.neck.backbone_channel_list=[64,32,16,8]",
    f"++model.image_encoder.neck.position_encoding.num_pos_feats={TEST_SCALE_EMBED_DIM}",
    f"++model.memory_attention.d_model={TEST_SCALE_EMBED_DIM}",
    "++model.memory_attention.num_layers=1",
    f"++model.memory_attention.layer.d_model={TEST_SCALE_EMBED_DIM}",
    "++model.memory_attention.layer.dim_feedforward=64",
    f"++model.memory_attention.layer.self_attention.embedding_dim={TEST_SCALE_EMBED_DIM}",
    "++model.memory_attention.layer.self_attention.feat_sizes=[8,8]",
    f"++model.memory_attention.layer.cross_attention.embedding_dim={TEST_SCALE_EMBED_DIM}",
    "++model.memory_attention.layer.cross_attention.feat_sizes=[8,8]",
    "++model.memory_attention.layer.cross_attention.kv_in_dim=16",
    "++model.memory_encoder.out_dim=16",
    f"++model.memory_encoder.in_dim={TEST_SCALE_EMBED_DIM}",
    "++model.memory_encoder.position_encoding.num_pos_feats=16",
    f"++model.memory_encoder.mask_downsampler.embed_dim={TEST_SCALE_EMBED_DIM}",
    f"++model.memory_encoder.fuser.layer.dim={TEST_SCALE_EMBED_DIM}",
    "++model.memory_encoder.fuser.num_layers=1",
)
# sha256 of each file of the `sam2` package that cadbench builds from or compares with, as Meta's repository has it
# at META_COMMIT (`git show 2b90b9f5...:sam2/<path> | sha256sum`), by its path inside the package.
META_FILES_SHA256 = {
    "__init__.py": "b87ca1e95cd54b81766e8c74acf0e937952639529e40d2b4088693286f49419e",
    "build_sam.py": "856d64d71e44407401297b551884fb4cd1aba8082de0ff5fc60fac3dd42f094d",
    "sam2_image_predictor.py": "f13e5f9d94e5c8d9d2c3622dab20c8f334c089ef2ee5ea8e199da7d332b029ba",
    "utils/__init__.py": "34bd8069c54764e7b8d73a78905dbe6467140a2f73170875128f6ca4d8cdd0aa",
    "utils/misc.py": "01600c01c161cd079d7106fb1d4da845cf91aa31ab2bcecaf8cb151b6d6d20a2",
    "utils/transforms.py": "ba3a64f4600c62f209206a6df3b40e3fcf133edae32fad658831bb0c2a6d1146",
    "configs/sam2.1/sam2.1_hiera_b+.yaml": "37d6c56b07a7f8d08baaa314315c60dc3aabe2edc66cd92bac6d1ed50038e788",
    "configs/sam2.1/sam2.1_hiera_l.yaml": "1dbd6cb6dfebeaf588c7006ee222c6efbfa9049a7ad472a3cdfb2f5d919e8107",
    "configs/sam2.1/sam2.1_hiera_s.yaml": "0f36b91e86e58d06c87e42997166212468b88b98b60e4d816d5e4d4d088b6f55",
    "configs/sam2.1/sam2.1_hiera_t.yaml": "f932eac1c6241e910031b2f000a81cd9f8a8d4896e2277ab5ffb721f378b188d",
    "modeling/__init__.py": "34bd8069c54764e7b8d73a78905dbe6467140a2f73170875128f6ca4d8cdd0aa",
    "modeling/backbones/__init__.py": "34bd8069c54764e7b8d73a78905dbe6467140a2f73170875128f6ca4d8cdd0aa",
    "modeling/backbones/hieradet.py": "03785581ca304d0451ae0df7a08ee0bf1e1dbe66fad285066e6b9ffc0d88d64f",
    "modeling/backbones/image_encoder.py": "16eaad232220386f510ca8dfab8655e63699977149a4daf9ce9c6f374e6777a9",
    "modeling/backbones/utils.py": "c4a0657db2a92bda2a7ff116cd4017f6b1c59af6408093d8874eb08a0df476ad",
    "modeling/memory_attention.py": "07358cb7f58ec3788e88ff4e6415f8a9d628a3963529d6e2c915494a5347c8e2",
    "modeling/memory_encoder.py": "73f7089ae5fdacdfcaaf3deca1ca6d9f84d89e7deb9cf97589622a9ef17ba42f",
    "modeling/position_encoding.py": "b51404718c0d38f381293c8e5e00a15d129651b7f09b1158002d8974a30967b5",
    "modeling/sam/__init__.py": "34bd8069c54764e7b8d73a78905dbe6467140a2f73170875128f6ca4d8cdd0aa",
    "modeling/sam/mask_decoder.py": "ca3523c58365574faddf1bfb54f374e4b4beba05127185ea2b17d22b916e099a",
    "modeling/sam/prompt_encoder.py": "4965ccb4a4504aa4d7246b2ad66ffeacd2626415c86a261dc1c65ffd8ae1d40d",
    "modeling/sam/transformer.py": "cda19052331e775190ce8b1159efcb828a4632d931a6d8bd4d47109f121782f1",
    "modeling/sam2_base.py": "69a46b44e8625f509791352bd09beaafe589cd7d872721384e63d37f9fdc6e41",
    "modeling/sam2_utils.py": "e35bbf13bc2e544a0272cd3f9539af38a752676ac3cd744be31cd8220afee804",
}


_PACKAGE = OptionalPackage(PACKAGE, "Meta's SAM 2 package", EXTRA)


def missing_requirement() -> str | None:
    """Why SAM 2 cannot be built here (its package is not installed), or None."""
    return _PACKAGE.missing()


def package_file(relative: str) -> Path:
    """A file of the installed `sam2` package (found without importing it: its import initialises hydra)."""
    return _PACKAGE.file(relative)


class Sam2ImageMode:
    """What cadbench adds to Meta's `SAM2Base` (see the module docstring); mixed in by `image_model_class`."""

    family: ClassVar[str] = SAM2

    @property
    def prompt_encoder(self) -> torch.nn.Module:
        return self.sam_prompt_encoder

    @property
    def mask_decoder(self) -> torch.nn.Module:
        return self.sam_mask_decoder

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) raw pixels (0-255) -> SAM2Transforms' input: x / 255, normalised with ImageNet's statistics."""
        mean = torch.tensor(PIXEL_MEAN, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(PIXEL_STD, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x / 255.0 - mean) / std

    def decode_masks(self, features: tuple[torch.Tensor, ...], boxes: torch.Tensor) -> torch.Tensor:
        """Low-resolution mask logits for B images' FPN levels (stride 4, 8, 16; as the image encoder returns them)
        and their boxes: (B, 1, 4g, 4g) for boxes (B, 4), (B, N, 4g, 4g) for boxes (B, N, 4); see the module
        docstring for each step and where Meta's code does it."""
        feat_s0, feat_s1, lowest = features
        batch, _, height, width = lowest.shape
        if boxes.shape[0] != batch:
            raise ValueError(f"{batch} images' features but {boxes.shape[0]} sets of boxes")
        if not self.directly_add_no_mem_embed or not self.use_high_res_features_in_sam:
            raise ValueError("cadbench runs SAM 2.1 configs (directly_add_no_mem_embed, high-resolution features)")
        per_image = boxes.dim() == 3
        prompts = boxes.shape[1] if per_image else 1
        decoder = self.sam_mask_decoder
        high_res = (decoder.conv_s0(feat_s0), decoder.conv_s1(feat_s1))  # SAM2Base.forward_image
        # SAM2ImagePredictor.set_image_batch: (B, C, H, W) -> (HW, B, C), + no_mem_embed, -> (B, C, H, W)
        flat = lowest.flatten(2).permute(2, 0, 1) + self.no_mem_embed
        image_embed = flat.permute(1, 2, 0).view(batch, -1, height, width)
        # SAM2ImagePredictor._predict: a box is its two corners, labels 2 and 3
        corners = boxes.reshape(-1, 2, 2)
        labels = torch.tensor([[2, 3]], dtype=torch.int, device=boxes.device).repeat(corners.shape[0], 1)
        with torch.no_grad():
            sparse, dense = self.sam_prompt_encoder(points=(corners, labels), boxes=None, masks=None)
            image_pe = self.sam_prompt_encoder.get_dense_pe()
        logits = []
        for index in range(batch):
            prompt = slice(index * prompts, (index + 1) * prompts)
            low_res, _iou, _tokens, _object_score = decoder(
                image_embeddings=image_embed[index].unsqueeze(0),
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse[prompt],
                dense_prompt_embeddings=dense[prompt],
                multimask_output=False,
                repeat_image=prompts > 1,
                high_res_features=[level[index].unsqueeze(0) for level in high_res],
            )
            logits.append(low_res.transpose(0, 1) if per_image else low_res)  # (N, 1, h, w) -> (1, N, h, w)
        return torch.cat(logits, dim=0)


class FeatureMaps:
    """Meta's `ImageEncoder` (Hiera + FPN neck) returning its FPN levels, stride 4 first, and nothing else."""

    def forward(self, sample: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(super().forward(sample)["backbone_fpn"])

    def fpn_levels(self, trunk_outputs: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """What `forward` returns, from the trunk's stage outputs computed by someone else (a method that runs the
        Hiera blocks itself, as SAM2-Adapter does): the rest of `ImageEncoder.forward`, the neck and its `scalp`."""
        features, _position = self.neck(trunk_outputs)
        if self.scalp > 0:
            features = features[: -self.scalp]
        return tuple(features)


@functools.cache
def image_model_class() -> type:
    """`Sam2ImageModel`: Meta's `SAM2Base` with `Sam2ImageMode` (made on first use: it imports the sam2 package)."""
    from sam2.modeling.sam2_base import SAM2Base

    return type("Sam2ImageModel", (Sam2ImageMode, SAM2Base), {"__module__": __name__})


@functools.cache
def feature_maps_encoder_class() -> type:
    from sam2.modeling.backbones.image_encoder import ImageEncoder

    return type("Sam2FeatureMapsEncoder", (FeatureMaps, ImageEncoder), {"__module__": __name__})


class _LinspaceOnTheCpu(TorchFunctionMode):
    """`torch.linspace` on the CPU whatever device the model is built on: Hiera reads its values (its drop-path
    rates, `[x.item() for x in torch.linspace(...)]`), which the meta device cannot give."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.linspace:
            kwargs["device"] = "cpu"
        return func(*args, **kwargs)


def build_image_model(config: str, overrides: Sequence[str] = ()) -> torch.nn.Module:
    """Meta's SAM 2 from one of its configs (`CONFIGS`; hydra `overrides` for the test scale) by Meta's
    `build_sam2`, random weights, on the device (or under the fake-tensor mode) the caller builds in, as a
    `Sam2ImageModel` whose image encoder returns its FPN levels.

    Under a fake-tensor mode (the estimator's replay) it is built on the meta device, outside every dispatch mode
    (Meta's constructors read values: Hiera's drop-path rates, and `trunc_normal_`'s rejection sampling in this
    PyTorch; and no mode of the replay, its op cache above all, should answer for meta tensors), then given empty
    tensors of the fake mode on the CPU (`_empty_tensors_on`): the replay needs shapes, not values."""
    from sam2.build_sam import build_sam2
    from torch._guards import detect_fake_mode
    from torch.utils._python_dispatch import _disable_current_modes

    target = torch.empty(0).device
    fake = detect_fake_mode() is not None
    where = torch.device("meta") if fake else target
    with _disable_current_modes() if fake else contextlib.nullcontext(), torch.device(where), _LinspaceOnTheCpu():
        model = build_sam2(config, ckpt_path=None, device=where, mode="eval", hydra_overrides_extra=list(overrides))
    if fake:
        _empty_tensors_on(model, target)
    model.__class__ = image_model_class()
    model.image_encoder.__class__ = feature_maps_encoder_class()
    model.image_encoder.img_size = model.image_size  # the input side, as Meta's SAM encoder names it
    for module in model.modules():  # PositionEmbeddingSine warms its cache on CUDA when CUDA exists: not here
        cache = getattr(module, "cache", None)
        if isinstance(cache, dict):
            module.cache = {key: value for key, value in cache.items() if value.device == target}
    return model


# Hiera's token grid (S / 4) must tile its first window (8 x 8 in every SAM 2.1 config) for its windowed position
# embedding, and each of its three query-pooling stages and the neck's top-down upsampling halve or double it exactly
SIZE_MULTIPLE = 32
SIZE_MULTIPLE_WHY = "Hiera's first window must tile its S / 4 token grid and its three pooling stages halve it exactly"


def resize_image_model(model: torch.nn.Module, image_size: int) -> None:
    """Make a SAM 2 image model take images of `image_size` pixels a side, in place: what `SAM2Base.__init__` derives
    from its `image_size` (the prompt encoder's embedding grid S / 16, its input and mask-input sizes) set as Meta's
    constructor sets them for that size, so the model equals Meta's `build_sam2` with `++model.image_size=S` (a test
    compares the logits). No weight depends on the size: Hiera interpolates its background position embedding to the
    token grid in every forward and tiles its window embedding over it; the neck's sine encoding is computed per
    shape. Works on real, meta and fake tensors alike (nothing is allocated)."""
    if image_size % SIZE_MULTIPLE:
        raise ValueError(f"SAM 2 takes image sizes that are multiples of {SIZE_MULTIPLE}, not {image_size}")
    grid = image_size // model.backbone_stride
    model.image_size = image_size
    model.sam_image_embedding_size = grid
    prompt = model.sam_prompt_encoder
    prompt.image_embedding_size = (grid, grid)
    prompt.input_image_size = (image_size, image_size)
    prompt.mask_input_size = (4 * grid, 4 * grid)
    model.image_encoder.img_size = image_size


def _empty_tensors_on(model: torch.nn.Module, device: torch.device) -> None:
    """Every parameter, buffer and tensor attribute (RoPE's `freqs_cis` in the memory attention) of a model built on
    the meta device replaced, in place, by an empty tensor of the same shape and dtype made on `device` in the
    active mode (`Module.to_empty` cannot: its `empty_like` of a meta tensor is refused by a fake-tensor mode)."""
    made: dict[int, torch.Tensor] = {}

    def empty(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in made:
            new = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
            if isinstance(tensor, torch.nn.Parameter):
                new = torch.nn.Parameter(new, requires_grad=tensor.requires_grad)
            made[id(tensor)] = new
        return made[id(tensor)]

    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, tensor in table.items():
                if tensor is not None:
                    table[name] = empty(tensor)
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and value.is_meta:
                setattr(module, name, empty(value))


def build_test_scale() -> torch.nn.Module:
    return build_image_model(CONFIGS["sam2.1_hiera_t"], TEST_SCALE_OVERRIDES)
