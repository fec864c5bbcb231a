"""Open-set tags: label embeddings for tags the checkpoint was not trained with.

RAM++ represents every tag by several text descriptions embedded with CLIP ViT-B/16's text
encoder; per image it weights them by their similarity to the image. A new tag needs the
same kind of embeddings:

- given descriptions (``{"axolotl": ["a pink salamander with feathery gills", ...]}``),
  each description is one embedding;
- given only a name, the descriptions are the 80 prompts of CLIP's ImageNet ensemble
  (``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES``: "a photo of a {}.",
  "a sculpture of a {}.", ...) filled with the name, and RAM++ weights them per image
  as it does its own descriptions.

RAM (not ++) keeps one embedding per tag: the normalised mean of the descriptions'
embeddings. The official open-set threshold is 0.5.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ovperc.hub import ModelNotAvailableError, offline

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: open_clip model and pretrained tag of the text encoder RAM / RAM++ embeddings come from.
DEFAULT_TEXT_ENCODER = "ViT-B-16:openai"

TextEncoder = Callable[[Sequence[str]], "torch.Tensor"]
OpenSetTags = Sequence[str] | Mapping[str, str | Sequence[str] | None]


def name_templates() -> list[Callable[[str], str]]:
    """The prompts a bare tag name is expanded with (CLIP's 80 ImageNet templates)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    return list(OPENAI_IMAGENET_TEMPLATES)


def validate(tags: OpenSetTags) -> dict[str, list[str] | None]:
    """Check open-set tags without loading anything; None marks a bare name.

    Raises:
        TypeError: ``tags`` is a single string or holds non-strings.
        ValueError: an empty or repeated name, or an empty description.

    Example:
        >>> validate(["axolotl"])
        {'axolotl': None}
    """
    if isinstance(tags, str):
        raise TypeError(f"open_set_tags takes a list of names or a dict, not a string: {tags!r}")
    items = tags.items() if isinstance(tags, Mapping) else ((name, None) for name in tags)
    out: dict[str, list[str] | None] = {}
    for name, given in items:
        if not isinstance(name, str):
            raise TypeError(f"open-set tag names must be strings, got {type(name).__name__}")
        clean = name.strip()
        if not clean:
            raise ValueError("open-set tag names must not be empty")
        if clean in out:
            raise ValueError(f"open-set tag {clean!r} is given twice")
        texts = None if given is None else [given] if isinstance(given, str) else list(given)
        if texts is not None and not (
            texts and all(isinstance(t, str) and t.strip() for t in texts)
        ):
            raise ValueError(f"open-set tag {clean!r}: descriptions must be non-empty strings")
        out[clean] = texts
    if not out:
        raise ValueError("open_set_tags is empty")
    return out


def describe(tags: OpenSetTags) -> dict[str, list[str]]:
    """Descriptions per open-set tag, in the given order.

    Args:
        tags: names (each expanded with :func:`name_templates`), or a mapping from name to
            one description, several, or None (expanded like a bare name).

    Raises:
        TypeError, ValueError: as :func:`validate`.

    Example:
        >>> describe({"axolotl": "a pink salamander with feathery gills"})
        {'axolotl': ['a pink salamander with feathery gills']}
        >>> len(describe(["axolotl"])["axolotl"])
        80
    """
    checked = validate(tags)
    templates = name_templates() if any(t is None for t in checked.values()) else []
    return {
        name: texts if texts is not None else [template(name) for template in templates]
        for name, texts in checked.items()
    }


class OpenClipTextEncoder:
    """An open_clip text tower as a function: texts in, L2-normalised embeddings out.

    Args:
        model: an open_clip ``CLIP`` model (only ``encode_text`` is used).
        tokenizer: the matching open_clip tokenizer (long texts are truncated).
        batch_size: texts per forward pass.

    Example:
        >>> encoder = OpenClipTextEncoder.from_spec("ViT-B-16:openai")  # doctest: +SKIP
        >>> encoder(["a photo of a cat."]).shape  # doctest: +SKIP
        torch.Size([1, 512])
    """

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 256) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    @classmethod
    def from_spec(
        cls, spec: str = DEFAULT_TEXT_ENCODER, *, device: Any = "cpu"
    ) -> OpenClipTextEncoder:
        """Load ``"MODEL:PRETRAINED"`` (or ``"hf-hub:..."`` / ``"local-dir:..."``) with open_clip.

        Raises:
            ModelNotAvailableError: the weights are not cached and cannot be downloaded.
        """
        import open_clip

        if spec.startswith(("hf-hub:", "local-dir:")):
            name, pretrained = spec, None
        else:
            name, _, pretrained = spec.partition(":")
        try:
            model = open_clip.create_model(name, pretrained=pretrained or None, device=device)
        except Exception as error:
            state = "offline mode (HF_HUB_OFFLINE=1)" if offline() else str(error)
            raise ModelNotAvailableError(
                f"cannot load the open-set text encoder {spec!r}: {state}. Open-set tags need "
                "it once per vocabulary; load it with network access first (it is cached), "
                "or pass open_set_encoder=<a callable returning text embeddings>"
            ) from error
        return cls(model, open_clip.get_tokenizer(name))

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """``(len(texts), width)`` float32 embeddings on the CPU, each of unit length."""
        import torch

        device = next(self.model.parameters()).device
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(list(texts[start:start + self.batch_size])).to(device)
                chunks.append(self.model.encode_text(tokens).float().cpu())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)


def embed_open_set(
    descriptions: Mapping[str, Sequence[str]],
    encoder: TextEncoder,
    *,
    variant: str,
    width: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Label embeddings ``(tags, descriptions, width)`` and their mask ``(tags, descriptions)``.

    Every text is encoded once, in one batched call. For RAM++ tags with fewer
    descriptions than the longest are padded (mask False); for RAM each tag is one
    embedding (normalised mean of its descriptions).

    Raises:
        ValueError: the encoder's output width is not the checkpoint's label width.
    """
    import torch

    counts = [len(texts) for texts in descriptions.values()]
    flat = [text for texts in descriptions.values() for text in texts]
    logger.info("embedding %d descriptions of %d open-set tags", len(flat), len(counts))
    embeds = torch.as_tensor(encoder(flat)).float()
    if embeds.shape != (len(flat), width):
        raise ValueError(
            f"the open-set text encoder returned shape {tuple(embeds.shape)} for {len(flat)} "
            f"texts; the checkpoint needs ({len(flat)}, {width}) (CLIP ViT-B/16 text width)"
        )
    embeds = torch.nn.functional.normalize(embeds, dim=-1)
    groups = torch.split(embeds, counts)
    if variant == "ram":
        means = torch.stack([torch.nn.functional.normalize(g.mean(0), dim=-1) for g in groups])
        return means.unsqueeze(1), torch.ones(len(counts), 1, dtype=torch.bool)
    longest = max(counts)
    padded = torch.zeros(len(counts), longest, width)
    mask = torch.zeros(len(counts), longest, dtype=torch.bool)
    for row, group in enumerate(groups):
        padded[row, : len(group)] = group
        mask[row, : len(group)] = True
    return padded, mask
