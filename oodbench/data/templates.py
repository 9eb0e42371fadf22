"""Prompt templates used by the detectors, named after the papers that use them."""

from __future__ import annotations

MCM_TEMPLATE = "a photo of a {}"  # MCM official code: no trailing period
NEGLABEL_ID_TEMPLATE = "the nice {}"  # NegLabel official code: lower case, no period
CMA_ID_TEMPLATE = "The nice {}"
CLIP_TEMPLATE = "a photo of a {}."


def fill(template: str, names: list[str]) -> list[str]:
    """Apply one template to every class name."""
    return [template.format(n) for n in names]


def openai_imagenet_templates() -> list[str]:
    """The 80 OpenAI ImageNet templates (prompt-ensemble ablations, OpenOOD's CLIP network)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
