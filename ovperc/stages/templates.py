"""Prompt templates and class text embeddings for the CLIP stages.

A template is a string with one ``{}`` where the prompt goes (``"a photo of a {}."``).
A class's embedding is the normalised mean of the embeddings of every (template, prompt)
pair of that class: templates average out wording, prompts average out synonyms.

Named template sets:

- ``"simple"`` (the classifier's default): the seven-template ensemble of the CLIP paper
  as shipped by open_clip (``open_clip.zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES``).
- ``"openai"``: open_clip's full 80-template ImageNet ensemble (slower to encode).
- ``"photo"`` (the tagger's default): three plain photo templates, cheap to encode for a
  large vocabulary: ``"a photo of a {}."``, ``"a photo of the {}."``,
  ``"a picture showing {}."``.
- ``"single"``: just ``"a photo of a {}."``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ovperc.stages.clip_model import ClipModel

TemplatesLike = str | Sequence[str] | None

PHOTO_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a photo of the {}.", "a picture showing {}.")
TEMPLATE_SETS = ("simple", "openai", "photo", "single")


def resolve_templates(templates: TemplatesLike, default: str = "simple") -> tuple[str, ...]:
    """Templates as a tuple of ``"...{}..."`` strings.

    Args:
        templates: a named set (``simple``, ``openai``, ``photo``, ``single``), a sequence
            of strings each holding one ``{}``, or ``None`` for ``default``.
        default: the set used when ``templates`` is ``None``.

    Raises:
        ValueError: an unknown set name, an empty list, or a template without one ``{}``.

    Example:
        >>> resolve_templates(["This is a photo of a {}."])
        ('This is a photo of a {}.',)
        >>> len(resolve_templates("simple"))
        7
    """
    if templates is None:
        templates = default
    if isinstance(templates, str):
        if templates == "photo":
            return PHOTO_TEMPLATES
        if templates == "single":
            return (PHOTO_TEMPLATES[0],)
        if templates in ("simple", "openai"):
            from open_clip import zero_shot_metadata as meta

            source = (
                meta.SIMPLE_IMAGENET_TEMPLATES if templates == "simple"
                else meta.OPENAI_IMAGENET_TEMPLATES
            )
            return tuple(fill("{}") for fill in source)
        if "{}" in templates:
            raise ValueError(
                f"templates must be a list of strings, got the single string {templates!r}; "
                f"wrap it in a list: [{templates!r}]"
            )
        raise ValueError(
            f"unknown template set {templates!r}; use one of {', '.join(TEMPLATE_SETS)} "
            "or a list of strings with '{}'"
        )
    result = tuple(templates)
    if not result:
        raise ValueError("templates is empty; give at least one, e.g. ['a photo of a {}.']")
    for template in result:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(
                f"each template must be a string with exactly one '{{}}', got {template!r}"
            )
    return result


def class_texts(prompts: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Every (template, prompt) sentence of one class, templates outermost.

    Example:
        >>> class_texts(["man", "woman"], ["a photo of a {}."])
        ['a photo of a man.', 'a photo of a woman.']
    """
    return [template.format(prompt) for template in templates for prompt in prompts]


def class_embeddings(
    model: ClipModel,
    prompts_per_class: Sequence[Sequence[str]],
    templates: Sequence[str],
) -> torch.Tensor:
    """Class text embeddings ``(C, D)``: the normalised mean over templates x prompts.

    All sentences of all classes go through the text encoder in one batched call.

    Example:
        >>> class_embeddings(clip, [["cat"], ["man", "woman"]], ["a photo of a {}."]).shape  # doctest: +SKIP
        torch.Size([2, 512])
    """
    import torch

    if not prompts_per_class:
        return torch.zeros(0, model.embed_dim)
    sentences: list[str] = []
    spans: list[tuple[int, int]] = []
    for prompts in prompts_per_class:
        if not prompts:
            raise ValueError("every class needs at least one prompt")
        texts = class_texts(prompts, templates)
        spans.append((len(sentences), len(sentences) + len(texts)))
        sentences.extend(texts)
    embedded = model.encode_texts(sentences)
    means = torch.stack([embedded[a:b].mean(dim=0) for a, b in spans])
    return torch.nn.functional.normalize(means, dim=-1)
