"""peft: any adapter from Hugging Face's `peft` library, injected into SAM's image encoder.

cadbench writes no adapter layer here: `peft.inject_adapter_in_model` puts peft's own layers (LoRA, LoHa, IA3, ...)
into Meta's image encoder, and marks only them trainable there; the mask decoder trains as in every method of the
shared protocol and the prompt encoder stays frozen. This makes cadbench a memory profiler for the adapter types that
peft ships (all but its prompt-learning ones, which are made for language models' token embeddings).

Options (`peft:type=lora,r=8,target_modules=qkv`, or `peft:config=PATH.json`):

* ``type``: peft's adapter type, any non-prompt-learning `PeftType`, case-insensitive (default ``lora``);
* ``target_modules``: image-encoder modules that get the adapter, by name or name suffix, joined by ``+``
  (default ``qkv``, Meta's fused attention projection in every block);
* any other field of peft's config class for the type (`LoraConfig`, `LoHaConfig`, `IA3Config`, ...), with peft's
  own types and defaults: ``r=16``, ``lora_alpha=32``, ``feedforward_modules=lin2``;
* ``config``: a peft config JSON file, such as the ``adapter_config.json`` that `save_pretrained` writes. Its keys
  are read as if given inline (inline options win); peft's bookkeeping keys (``task_type``, ``peft_version``,
  ``base_model_name_or_path``, ``revision``, ``auto_mapping``, ``inference_mode``) are ignored, and ``peft_type``
  gives the type. The file is read once, where the spec is parsed: a cell records the settings themselves, so its
  identity does not depend on a file that may change or be absent where the cell runs.

With no options, ``peft`` is peft's LoRA with peft's defaults (r 8, alpha 8, no dropout) on the whole fused qkv
(q, k and v), which differs from SAMed's q-and-v LoRA (`lora`). Options are checked where the spec is parsed, by
peft itself: the config is built and injected into a meta-device vit_h encoder (the deepest backbone: nothing is
allocated), so an unknown target module or a value peft refuses stops the run before any cell, in one line.

Estimates: peft's LoRA, IA3 and the like replay on fake tensors exactly (see `_inject`); LoHa and LoKr do not, because
their training forward draws ``torch.rand(1) > module_dropout`` and branches on it on the host, which a fake tensor
cannot answer: their estimate is a one-line error naming that op (they train for real on a CPU or GPU).

peft is an optional dependency (`pip install "cadbench[peft]"`): it pulls in transformers, accelerate and about 20
more packages. Without it this method is left out of the default grid and refused, naming the extra, when asked for.
"""

from __future__ import annotations

import importlib.util
import json
import typing
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import torch
from segment_anything.modeling import Sam
from torch.utils._python_dispatch import _disable_current_modes

from cadbench.errors import CadbenchError
from cadbench.families import LITEMEDSAM, SAM, SAM2
from cadbench.methods.base import Method
from cadbench.methods.options import MethodOptions, OptionError, OptionInfo, format_value, parse_value, type_text
from cadbench.vocabulary.method_spec import join_option_items

EXTRA = 'pip install "cadbench[peft]"'
DEFAULT_TYPE = "lora"
DEFAULT_TARGET_MODULES = ("qkv",)
CONFIG_KEY, TYPE_KEY = "config", "type"
# Fields every peft config has that describe where a saved adapter came from, not the adapter: ignored in files.
BOOKKEEPING_KEYS = frozenset({"task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path",
                              "revision", "inference_mode"})
CHECK_BACKBONE = "vit_h"  # options are checked by injecting them into this backbone's encoder, on the meta device


def peft_missing() -> str | None:
    return None if importlib.util.find_spec("peft") is not None else f"needs the peft package: {EXTRA}"


@dataclass(frozen=True)
class PeftOptions(MethodOptions):
    """peft's adapter type and every setting that differs from peft's default for that type, in peft's field order."""

    type: str = DEFAULT_TYPE
    settings: tuple[tuple[str, Any], ...] = ()  # (field of peft's config class, typed value); lists as tuples

    more_help = ("peft also takes any field of peft's config class for the type (LoraConfig: r, lora_alpha, "
                 "lora_dropout, ...; LoHaConfig: r, alpha, ...; IA3Config: feedforward_modules, ...)")

    @classmethod
    def declared(cls) -> tuple[OptionInfo, ...]:
        return (
            OptionInfo(CONFIG_KEY, "path", "none", "a peft config JSON file (e.g. save_pretrained's "
                                                    "adapter_config.json); options given inline override its keys"),
            OptionInfo(TYPE_KEY, "str", DEFAULT_TYPE, "peft's adapter type (lora, loha, lokr, ia3, oft, vera, ...)"),
            OptionInfo("target_modules", "list of str (joined by +)", format_value(DEFAULT_TARGET_MODULES),
                       "image-encoder modules that get the adapter, matched as name suffixes: qkv, attn.proj, "
                       "mlp.lin1, mlp.lin2 (a bare proj also matches patch_embed.proj)"),
        )

    @classmethod
    def parse(cls, method: str, items: Mapping[str, str]) -> "PeftOptions":
        items = dict(items)
        from_file = _read_config_file(method, items.pop(CONFIG_KEY)) if CONFIG_KEY in items else {}
        peft_type = items.pop(TYPE_KEY, None) or from_file.pop("peft_type", None) or DEFAULT_TYPE
        config_class = _config_class(method, str(peft_type))
        hints = typing.get_type_hints(config_class)
        settable = [f for f in fields(config_class) if f.name not in BOOKKEEPING_KEYS]
        valid = f"valid: {CONFIG_KEY}, {TYPE_KEY}, " + ", ".join(f.name for f in settable)
        names = {f.name for f in settable}
        values: dict[str, Any] = {}
        for key, value in from_file.items():
            if key in BOOKKEEPING_KEYS:
                continue
            if key not in names:
                raise CadbenchError(f"method {method}: config file key {key!r} is not a field of peft's "
                                    f"{config_class.__name__}; {valid}")
            if value == _default(config_class, key):
                continue
            values[key] = _from_json(method, key, value, hints[key])
        for key, text in items.items():
            if key not in names:
                raise CadbenchError(f"method {method}: unknown option {key!r}; {valid}")
            try:
                values[key] = _frozen(parse_value(text, hints[key], key))
            except OptionError as exc:
                raise CadbenchError(f"method {method}: option {key}={text}: {exc} ({key}: {type_text(hints[key])}, "
                                    f"peft's {config_class.__name__}); {valid}") from None
        settings = tuple((f.name, values[f.name]) for f in settable
                         if f.name in values and values[f.name] != _frozen(_default(config_class, f.name)))
        options = cls(type=_type_name(config_class), settings=settings)
        options.check(method)
        return options.with_sets_sorted()

    def with_sets_sorted(self) -> "PeftOptions":
        """Lists that peft keeps as sets (target_modules, ...) in sorted order: 'qkv+proj' is the cell 'proj+qkv'."""
        config = self.peft_config()
        return PeftOptions(self.type, tuple(
            (key, tuple(sorted(value)) if isinstance(getattr(config, key, None), (set, frozenset)) else value)
            for key, value in self.settings))

    def canonical(self) -> str:
        shown = [(TYPE_KEY, self.type)] if self.type != DEFAULT_TYPE else []
        return join_option_items(shown + [(key, format_value(value)) for key, value in self.settings])

    def peft_config(self):
        """The peft config object these options describe."""
        config_class = _config_class("peft", self.type)
        settings = {key: list(value) if isinstance(value, tuple) else value for key, value in self.settings}
        return config_class(**{"target_modules": list(DEFAULT_TARGET_MODULES), **settings})

    def check(self, method: str) -> None:
        """Let peft build the config and inject it into a meta-device encoder; its refusal becomes one line."""
        from cadbench.backbones import build_sam

        try:
            config = self.peft_config()
            # Outside every dispatch mode: the check is no part of any step, but it can run inside the estimator's
            # replay (the first time a setup parses these options), where Meta's Sam would make its pixel mean and
            # std (CPU tensors even on the meta device) as counted fake tensors, in whichever replay came first.
            with _disable_current_modes():
                encoder = build_sam(CHECK_BACKBONE, device="meta").sam.image_encoder
                with torch.device("meta"):
                    _inject(config, encoder)
        except Exception as exc:  # noqa: BLE001 — peft raises ValueError, NotImplementedError, its own errors...
            lines = str(exc).strip().splitlines()
            raise CadbenchError(f"method {method}: peft refused the options {self.canonical() or '(defaults)'}: "
                                f"{lines[0] if lines else type(exc).__name__}") from None


class PeftAdapter(Method):
    name = "peft"
    summary = "any Hugging Face peft adapter in the image encoder (default: peft's LoRA r 8 on qkv) + mask decoder"
    Options = PeftOptions
    backward_through_encoder = True  # adapters sit in the encoder's blocks (qkv by default)
    # target_modules name the family's encoder modules: TinyViT's (qkv, proj, fc1, fc2) on LiteMedSAM, Hiera's
    # (qkv and proj of every block's attention) on SAM 2.1, whose FPN neck has no module of those names
    families = (SAM, LITEMEDSAM, SAM2)

    @classmethod
    def missing_requirement(cls) -> str | None:
        return peft_missing()

    def __init__(self, sam: Sam, options: PeftOptions | None = None) -> None:
        super().__init__(sam, options)
        _inject(self.options.peft_config(), sam.image_encoder)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return self.sam.image_encoder(self.normalize(images))


def _inject(config, encoder: torch.nn.Module) -> None:
    """peft's layers into `encoder`, in place, on the device of its weights.

    Under fake tensors (the estimator's replay) peft cannot do this by itself: it moves each new adapter layer to its
    base layer's device with `Module.to`, and PyTorch cannot `.to()` a module whose parameters are fake tensors
    (`Module._apply` swaps FakeTensor parameters, and FakeTensorMode's memo holds weak references that
    `swap_tensors` refuses: pytorch/pytorch#148977). So there peft builds its layers on the meta device, where it
    skips that move, and each new tensor is then given a fake one of the same shape and dtype on the weights' device.
    Fake tensors hold no values, so leaving out peft's initialisation changes nothing the replay measures.
    """
    from peft import inject_adapter_in_model
    from torch._subclasses.fake_tensor import FakeTensor

    weight = next(encoder.parameters())
    if not isinstance(weight, FakeTensor):
        inject_adapter_in_model(config, encoder)
        return
    with torch.device("meta"):
        inject_adapter_in_model(config, encoder)
    for module in encoder.modules():
        for name, parameter in list(module._parameters.items()):
            if parameter is not None and parameter.device.type == "meta":
                module._parameters[name] = torch.nn.Parameter(torch.empty_like(parameter, device=weight.device),
                                                              requires_grad=parameter.requires_grad)
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.device.type == "meta":
                module._buffers[name] = torch.empty_like(buffer, device=weight.device)


@lru_cache(maxsize=None)
def _tuner_config_classes() -> dict[str, type]:
    """Lower-case peft type -> its config class, for the adapter types that can be injected into a module."""
    from peft.config import PromptLearningConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {str(getattr(peft_type, "value", peft_type)).lower(): config_class
            for peft_type, config_class in PEFT_TYPE_TO_CONFIG_MAPPING.items()
            if not issubclass(config_class, PromptLearningConfig)}


def _config_class(method: str, peft_type: str) -> type:
    classes = _tuner_config_classes()
    try:
        return classes[peft_type.lower()]
    except KeyError:
        raise CadbenchError(f"method {method}: unknown peft type {peft_type!r}; valid: {', '.join(sorted(classes))}"
                            ) from None


def _type_name(config_class: type) -> str:
    return next(name for name, cls in _tuner_config_classes().items() if cls is config_class)


def _default(config_class: type, name: str) -> Any:
    """peft's default for a field (target_modules: cadbench's), in the form a JSON file holds it."""
    if name == "target_modules":
        return list(DEFAULT_TARGET_MODULES)
    f = next(f for f in fields(config_class) if f.name == name)
    value = f.default if f.default is not MISSING else f.default_factory() if f.default_factory is not MISSING else None
    return asdict(value) if is_dataclass(value) and not isinstance(value, type) else value


def _frozen(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _from_json(method: str, key: str, value: Any, hint: Any) -> Any:
    """A config file's value, read as if written inline; a value that inline text cannot hold is refused."""
    try:
        parsed = _frozen(parse_value(format_value(value), hint, key))
    except OptionError as exc:
        raise CadbenchError(f"method {method}: config file key {key!r}: {exc}") from None
    if parsed != _frozen(value):
        raise CadbenchError(f"method {method}: config file key {key!r}: {value!r} cannot be recorded as a cell "
                            f"option (as {format_value(value)!r} it would read back as {parsed!r}); give "
                            f"{'a list of module names' if isinstance(value, str) else 'another value'} instead")
    return parsed


def _read_config_file(method: str, path: str) -> dict[str, Any]:
    try:
        document = json.loads(Path(path).expanduser().read_text())
    except OSError as exc:
        raise CadbenchError(f"method {method}: config={path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise CadbenchError(f"method {method}: config={path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise CadbenchError(f"method {method}: config={path} holds no JSON object")
    return document
