"""Built-in fine-tuning methods (installed as `cadbench.methods`)."""

from cadbench.methods.base import Method
from cadbench.methods.cad import CAD
from cadbench.methods.decoder_only import DecoderOnly
from cadbench.methods.full import Full
from cadbench.methods.lora import Lora
from cadbench.methods.options import MethodOptions, option
from cadbench.methods.peft_adapter import PeftAdapter
from cadbench.methods.sam_adapter import SamAdapter
from cadbench.methods.zero_shot import ZeroShot

BUILTIN_METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (DecoderOnly, SamAdapter, CAD, Lora, Full, PeftAdapter, ZeroShot)}

__all__ = ["BUILTIN_METHODS", "CAD", "DecoderOnly", "Full", "Lora", "Method", "MethodOptions", "PeftAdapter",
           "SamAdapter", "ZeroShot", "option"]
