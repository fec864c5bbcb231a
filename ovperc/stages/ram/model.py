"""The RAM / RAM++ tagging network in plain torch, on timm's Swin Transformer.

Module and parameter names follow the official checkpoints, so loading one is a short
key remap (see :mod:`ovperc.stages.ram.remap`):

- ``visual_encoder``: timm ``SwinTransformer`` (``swin_large_patch4_window12_384`` at full size);
- ``image_proj``: Swin width -> 512, applied to the mean token followed by the patch tokens;
- ``label_embed``: one 512-d embedding per tag (RAM) or per tag description (RAM++);
- ``reweight_scale`` (RAM++ only): log temperature of the per-image description weighting;
- ``wordvec_proj``: 512 -> head width, the label queries are ``relu(wordvec_proj(...))``;
- ``tagging_head``: a Query2Label decoder, cross-attention only (no self-attention, no
  embeddings); ``fc`` turns each decoded query into one logit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ovperc.stages.ram.assets import NUM_OFFICIAL_TAGS

Variant = Literal["ram_plus", "ram"]
VARIANTS: tuple[str, ...] = ("ram_plus", "ram")

#: Text descriptions per tag in RAM++'s ``label_embed``.
RAM_PLUS_DESCRIPTIONS = 51
#: Width of ``image_proj`` and of every label embedding (CLIP ViT-B/16 text width).
EMBED_WIDTH = 512


@dataclass(frozen=True)
class RamConfig:
    """Architecture numbers of a RAM / RAM++ model; the defaults are the released models.

    Example:
        >>> RamConfig(variant="ram").swin_width
        1536
    """

    variant: Variant = "ram_plus"
    num_classes: int = NUM_OFFICIAL_TAGS
    descriptions_per_class: int = RAM_PLUS_DESCRIPTIONS
    image_size: int = 384
    patch_size: int = 4
    embed_dim: int = 192
    depths: tuple[int, ...] = (2, 2, 18, 2)
    num_heads: tuple[int, ...] = (6, 12, 24, 48)
    window_size: int = 12
    hidden_size: int = 768
    num_layers: int = 2
    num_attention_heads: int = 4
    intermediate_size: int = 3072
    layer_norm_eps: float = 1e-12
    embed_width: int = field(default=EMBED_WIDTH)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        if self.variant == "ram" and self.descriptions_per_class != 1:
            object.__setattr__(self, "descriptions_per_class", 1)
        object.__setattr__(self, "depths", tuple(self.depths))
        object.__setattr__(self, "num_heads", tuple(self.num_heads))
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )

    @property
    def swin_width(self) -> int:
        """Channels of the last Swin stage (1536 for Swin-L)."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def num_label_embeddings(self) -> int:
        """Rows of ``label_embed``."""
        return self.num_classes * self.descriptions_per_class

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (lists for tuples), for metadata."""
        data = asdict(self)
        data["depths"] = list(self.depths)
        data["num_heads"] = list(self.num_heads)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RamConfig:
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in names})

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], *, num_classes: int, **overrides: Any
    ) -> RamConfig:
        """Read the sizes from a remapped (ovperc-named) state dict.

        The Swin and head sizes come from the weight shapes; ``num_classes`` (the length
        of the tag list) splits RAM++'s ``label_embed`` into descriptions per tag. The
        head's attention-head count is not visible in the weights (4 in the released models).

        Raises:
            ValueError: the state dict is not a RAM / RAM++ tagging model, or
                ``num_classes`` does not divide its label embeddings.
        """
        required = ("label_embed", "visual_encoder.patch_embed.proj.weight", "fc.weight")
        missing = [key for key in required if key not in state_dict]
        if missing:
            raise ValueError(f"not a RAM / RAM++ checkpoint: keys {missing} are missing")
        variant: Variant = "ram_plus" if "reweight_scale" in state_dict else "ram"
        rows = state_dict["label_embed"].shape[0]
        if num_classes <= 0 or rows % num_classes:
            raise ValueError(
                f"the checkpoint has {rows} label embeddings, which does not fit a tag list of "
                f"{num_classes} tags; pass the tag list the checkpoint was trained with"
            )
        descriptions = rows // num_classes
        if variant == "ram" and descriptions != 1:
            raise ValueError(
                f"a RAM checkpoint needs one label embedding per tag: {rows} embeddings for "
                f"{num_classes} tags"
            )
        patch = state_dict["visual_encoder.patch_embed.proj.weight"]
        depths, heads = [], []
        stage = 0
        while any(k.startswith(f"visual_encoder.layers.{stage}.") for k in state_dict):
            blocks = 0
            while f"visual_encoder.layers.{stage}.blocks.{blocks}.norm1.weight" in state_dict:
                blocks += 1
            table = state_dict[
                f"visual_encoder.layers.{stage}.blocks.0.attn.relative_position_bias_table"
            ]
            depths.append(blocks)
            heads.append(table.shape[1])
            stage += 1
        table_rows = state_dict["visual_encoder.layers.0.blocks.0.attn.relative_position_bias_table"]
        window = (math.isqrt(table_rows.shape[0]) + 1) // 2
        layers = 0
        while f"tagging_head.encoder.layer.{layers}.intermediate.dense.weight" in state_dict:
            layers += 1
        inter = state_dict["tagging_head.encoder.layer.0.intermediate.dense.weight"].shape
        found = dict(
            variant=variant,
            num_classes=num_classes,
            descriptions_per_class=descriptions,
            patch_size=patch.shape[-1],
            embed_dim=patch.shape[0],
            depths=tuple(depths),
            num_heads=tuple(heads),
            window_size=window,
            hidden_size=inter[1],
            num_layers=layers,
            intermediate_size=inter[0],
            embed_width=state_dict["label_embed"].shape[1],
        )
        found.update(overrides)
        return cls(**found)

    def with_classes(self, num_classes: int) -> RamConfig:
        """The same architecture for another vocabulary size."""
        return replace(self, num_classes=num_classes)


# ---------------------------------------------------------------- tagging head
class _CrossAttentionProjections(nn.Module):
    """Query from the labels, key and value from the image tokens."""

    def __init__(self, hidden: int, memory_width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(memory_width, hidden)
        self.value = nn.Linear(memory_width, hidden)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = queries.shape
        head_dim = hidden // self.heads

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, -1, self.heads, head_dim).transpose(1, 2)

        context = F.scaled_dot_product_attention(
            split(self.query(queries)), split(self.key(memory)), split(self.value(memory))
        )
        return context.transpose(1, 2).reshape(batch, length, hidden)


class _AddNorm(nn.Module):
    """``LayerNorm(dense(x) + residual)``."""

    def __init__(self, width_in: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(width_in, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)  # noqa: N815 (checkpoint name)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _CrossAttention(nn.Module):
    def __init__(self, config: RamConfig) -> None:
        super().__init__()
        self.self = _CrossAttentionProjections(
            config.hidden_size, config.embed_width, config.num_attention_heads
        )
        self.output = _AddNorm(config.hidden_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(queries, memory), queries)


class _Intermediate(nn.Module):
    def __init__(self, config: RamConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _DecoderLayer(nn.Module):
    """Cross-attention then feed-forward, each followed by add & LayerNorm."""

    def __init__(self, config: RamConfig) -> None:
        super().__init__()
        self.crossattention = _CrossAttention(config)
        self.intermediate = _Intermediate(config)
        self.output = _AddNorm(config.intermediate_size, config.hidden_size, config.layer_norm_eps)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        attended = self.crossattention(queries, memory)
        return self.output(self.intermediate(attended), attended)


class _DecoderStack(nn.Module):
    def __init__(self, config: RamConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_DecoderLayer(config) for _ in range(config.num_layers))


class TaggingHead(nn.Module):
    """Query2Label decoder: label queries cross-attend to the image tokens.

    Example:
        >>> head = TaggingHead(RamConfig(hidden_size=64, intermediate_size=128))
        >>> head(torch.zeros(2, 5, 64), torch.zeros(2, 145, 512)).shape
        torch.Size([2, 5, 64])
    """

    def __init__(self, config: RamConfig) -> None:
        super().__init__()
        self.encoder = _DecoderStack(config)

    def forward(self, queries: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        for layer in self.encoder.layer:
            queries = layer(queries, memory)
        return queries


# ---------------------------------------------------------------- whole model
def build_swin(config: RamConfig) -> nn.Module:
    """The image encoder: timm's Swin-L/384 architecture (sizes from ``config``), no head."""
    import timm

    return timm.create_model(
        "swin_large_patch4_window12_384",
        pretrained=False,
        num_classes=0,
        img_size=config.image_size,
        patch_size=config.patch_size,
        embed_dim=config.embed_dim,
        depths=config.depths,
        num_heads=config.num_heads,
        window_size=config.window_size,
    )


class RamModel(nn.Module):
    """RAM or RAM++: images in, one raw logit per tag out.

    Args:
        config: architecture numbers; ``config.variant`` picks RAM++ (description
            re-weighting) or RAM (one fixed embedding per tag).

    Example:
        >>> model = RamModel(RamConfig())  # doctest: +SKIP
        >>> model(torch.zeros(1, 3, 384, 384)).shape  # doctest: +SKIP
        torch.Size([1, 4585])
    """

    def __init__(self, config: RamConfig) -> None:
        super().__init__()
        self.config = config
        self.label_embed = nn.Parameter(torch.empty(config.num_label_embeddings, config.embed_width))
        if config.variant == "ram_plus":
            self.reweight_scale = nn.Parameter(torch.full((), math.log(1 / 0.07)))
        self.visual_encoder = build_swin(config)
        self.tagging_head = TaggingHead(config)
        if config.hidden_size != config.embed_width:
            self.wordvec_proj: nn.Module = nn.Linear(config.embed_width, config.hidden_size)
        else:
            self.wordvec_proj = nn.Identity()
        self.fc = nn.Linear(config.hidden_size, 1)
        self.image_proj = nn.Linear(config.swin_width, config.embed_width)

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image tokens ``(B, 1 + patches, 512)``: the mean token, then every patch token."""
        features = self.visual_encoder.forward_features(pixel_values)  # (B, H, W, C), normed
        tokens = features.flatten(1, 2)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        return self.image_proj(tokens)

    def official_label_embeddings(self) -> torch.Tensor:
        """``label_embed`` as ``(tags, descriptions, 512)`` (descriptions is 1 for RAM)."""
        cfg = self.config
        return self.label_embed.view(cfg.num_classes, cfg.descriptions_per_class, cfg.embed_width)

    def label_queries(
        self,
        image_embeds: torch.Tensor,
        label_embed: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decoder queries ``(B, tags, hidden)`` for a batch of image tokens.

        Args:
            image_embeds: output of :meth:`encode_image`.
            label_embed: ``(tags, descriptions, 512)`` embeddings; the checkpoint's by default.
            label_mask: ``(tags, descriptions)`` bool, False for padding (tags with fewer
                descriptions than the longest); None means all are real.
        """
        embeds = self.official_label_embeddings() if label_embed is None else label_embed
        batch = image_embeds.shape[0]
        if self.config.variant == "ram":
            if embeds.shape[1] != 1:
                raise ValueError(
                    f"RAM takes one embedding per tag, got {embeds.shape[1]} per tag"
                )
            labels = embeds[:, 0].unsqueeze(0).expand(batch, -1, -1)
        else:
            pooled = F.normalize(image_embeds[:, 0], dim=-1)
            tags, descriptions, width = embeds.shape
            logits = self.reweight_scale.exp() * (pooled @ embeds.reshape(-1, width).t())
            logits = logits.view(batch, tags, descriptions)
            if label_mask is not None:
                logits = logits.masked_fill(~label_mask, float("-inf"))
            weights = logits.softmax(dim=-1)  # (B, tags, descriptions)
            labels = torch.bmm(weights.transpose(0, 1), embeds).transpose(0, 1)
        return F.relu(self.wordvec_proj(labels))

    def forward(
        self,
        pixel_values: torch.Tensor,
        label_embed: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw logits ``(B, tags)``; apply a sigmoid for probabilities.

        ``label_embed`` / ``label_mask`` replace the checkpoint's tags (see
        :meth:`label_queries`), e.g. with open-set tags added.
        """
        image_embeds = self.encode_image(pixel_values)
        return self.tag_logits(image_embeds, label_embed, label_mask)

    def tag_logits(
        self,
        image_embeds: torch.Tensor,
        label_embed: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw logits ``(B, tags)`` from image tokens.

        Tags are decoded independently of each other (the head has no self-attention),
        so several groups of tags can be scored in separate calls and concatenated.
        """
        queries = self.label_queries(image_embeds, label_embed, label_mask)
        decoded = self.tagging_head(queries, image_embeds)
        return self.fc(decoded).squeeze(-1)


def build_model(config: RamConfig, *, empty: bool = True) -> RamModel:
    """A :class:`RamModel`, without spending time or memory on random weights.

    With ``empty=True`` the model is built on the meta device and then given
    uninitialised CPU storage (untouched pages cost no memory); load weights with
    ``load_state_dict(..., assign=True)`` and then call :func:`init_buffers`.

    Example:
        >>> model = build_model(RamConfig(), empty=True)  # doctest: +SKIP
    """
    if not empty or not _timm_can_rebuild_buffers():
        return RamModel(config)
    with torch.device("meta"):
        model = RamModel(config)
    return model.to_empty(device="cpu")


def init_buffers(model: nn.Module) -> None:
    """Recompute the Swin buffers (relative position index, shift masks) that no checkpoint holds."""
    for module in model.modules():
        init = getattr(module, "init_non_persistent_buffers", None)
        if callable(init):
            init()


def _timm_can_rebuild_buffers() -> bool:
    from timm.models import swin_transformer

    return all(
        hasattr(getattr(swin_transformer, name), "init_non_persistent_buffers")
        for name in ("WindowAttention", "SwinTransformerBlock")
    )
