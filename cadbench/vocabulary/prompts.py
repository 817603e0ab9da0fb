"""Objects prompted per image, a grid dimension (`Cell.prompts_per_image`): `image`, today's protocol (one box around
the whole image, the binary mask as the target), or N (each image prompted with N boxes, one per object, decoded in
one mask-decoder call per image, as SAM's predictor batches prompts). It changes the task, so it is not a lever."""

from __future__ import annotations

from cadbench.errors import CadbenchError

WHOLE_IMAGE = "image"  # the default: one box around the whole image
MAX_PROMPTS_PER_IMAGE = 256
FLAG = "--prompts-per-image"

PromptsPerImage = str | int  # WHOLE_IMAGE, or the number of objects prompted per image (1..256)


def check_prompts_per_image(value: object) -> PromptsPerImage:
    """`value` canonical: 'image', or an int from 1 to 256 (also read from text such as '8', or 8.0 from a CSV).
    Anything else is refused in one line naming the flag."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == WHOLE_IMAGE:
            return WHOLE_IMAGE
        try:
            value = int(text)
        except ValueError:
            raise CadbenchError(f"{FLAG} takes 'image' or an integer from 1 to {MAX_PROMPTS_PER_IMAGE}, "
                                f"got {value!r}") from None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PROMPTS_PER_IMAGE:
        raise CadbenchError(f"{FLAG} takes 'image' or an integer from 1 to {MAX_PROMPTS_PER_IMAGE}, got {value!r}")
    return value


def objects_per_image(value: PromptsPerImage) -> int | None:
    """The number of object prompts per image, or None for the whole-image protocol."""
    return None if value == WHOLE_IMAGE else int(value)


def describe_prompts(value: PromptsPerImage) -> str:
    """For people: '8 objects per image' ('' for the default)."""
    value = check_prompts_per_image(value)
    if value == WHOLE_IMAGE:
        return ""
    return f"{value} object{'s' if value != 1 else ''} per image"


__all__ = ["FLAG", "MAX_PROMPTS_PER_IMAGE", "PromptsPerImage", "WHOLE_IMAGE", "check_prompts_per_image",
           "describe_prompts", "objects_per_image"]
