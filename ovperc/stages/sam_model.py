"""SAM networks: their architectures, the official checkpoints, and safe loading.

``SAM_MODELS`` names the official checkpoints (URL, sha256, architecture). A local
``.pth`` state dict gets its architecture from ``variant``, else from a ``<name>.json``
file next to it (the fields of :class:`SamArchitecture`), else from the shapes of its
tensors. Weights are read with ``torch.load(..., weights_only=True)`` and loaded strictly.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ovperc import hub

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SamArchitecture:
    """The sizes that define a SAM network (``segment_anything.modeling.Sam``).

    Defaults are those of the official models; ``vit_b``/``vit_l``/``vit_h`` differ only in
    the image encoder. Saved as JSON next to a ``.pth`` file, it tells the loader how to
    build a network the shapes alone cannot describe (the decoder's head count).

    Example:
        >>> SAM_MODELS["vit_b"].architecture.encoder_embed_dim
        768
    """

    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    encoder_window_size: int = 14
    encoder_mlp_ratio: float = 4.0
    patch_size: int = 16
    image_size: int = 1024
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    decoder_attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamArchitecture:
        """Build from a plain dict (as read from JSON); unknown keys raise ``ValueError``.

        Example:
            >>> SamArchitecture.from_dict({"encoder_embed_dim": 32, "encoder_depth": 1,
            ...     "encoder_num_heads": 2, "encoder_global_attn_indexes": [0]}).encoder_depth
            1
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown SAM architecture fields {unknown}; accepted: {sorted(names)}")
        values = dict(values)
        if "encoder_global_attn_indexes" in values:
            values["encoder_global_attn_indexes"] = tuple(values["encoder_global_attn_indexes"])
        return cls(**values)

    @classmethod
    def from_state_dict(
        cls, state_dict: dict[str, torch.Tensor], *, decoder_num_heads: int = 8
    ) -> SamArchitecture:
        """Read the architecture from a state dict's shapes.

        Every size is visible in the shapes except the mask decoder's attention head
        count, which is 8 in all official models (pass another with ``decoder_num_heads``).

        Example:
            >>> arch = SamArchitecture.from_state_dict(torch.load("sam_vit_b_01ec64.pth",
            ...     weights_only=True))  # doctest: +SKIP
            >>> arch == SAM_MODELS["vit_b"].architecture  # doctest: +SKIP
            True
        """
        enc, dec = "image_encoder.", "mask_decoder."
        try:
            proj = state_dict[f"{enc}patch_embed.proj.weight"]
            embed_dim, patch_size = int(proj.shape[0]), int(proj.shape[-1])
            grid = int(state_dict[f"{enc}pos_embed"].shape[1])
            depth = _count(state_dict, f"{enc}blocks.")
            rel = [state_dict[f"{enc}blocks.{i}.attn.rel_pos_h"].shape for i in range(depth)]
            head_dim = int(rel[0][1])
            spans = [(int(shape[0]) + 1) // 2 for shape in rel]
            global_idx = tuple(i for i, span in enumerate(spans) if span == grid)
            windows = {span for span in spans if span != grid}
            decoder_dim = int(state_dict[f"{dec}transformer.layers.0.mlp.lin1.weight"].shape[1])
            cross = state_dict[f"{dec}transformer.layers.0.cross_attn_token_to_image.q_proj.weight"]
            return cls(
                encoder_embed_dim=embed_dim,
                encoder_depth=depth,
                encoder_num_heads=embed_dim // head_dim,
                encoder_global_attn_indexes=global_idx,
                encoder_window_size=windows.pop() if windows else 0,
                encoder_mlp_ratio=state_dict[f"{enc}blocks.0.mlp.lin1.weight"].shape[0] / embed_dim,
                patch_size=patch_size,
                image_size=grid * patch_size,
                prompt_embed_dim=int(state_dict["prompt_encoder.point_embeddings.0.weight"].shape[1]),
                mask_in_chans=int(state_dict["prompt_encoder.mask_downscaling.3.weight"].shape[0]),
                decoder_depth=_count(state_dict, f"{dec}transformer.layers."),
                decoder_mlp_dim=int(state_dict[f"{dec}transformer.layers.0.mlp.lin1.weight"].shape[0]),
                decoder_num_heads=decoder_num_heads,
                decoder_attention_downsample_rate=decoder_dim // int(cross.shape[0]),
                num_multimask_outputs=int(state_dict[f"{dec}mask_tokens.weight"].shape[0]) - 1,
                iou_head_depth=_count(state_dict, f"{dec}iou_prediction_head.layers."),
                iou_head_hidden_dim=int(
                    state_dict[f"{dec}iou_prediction_head.layers.0.weight"].shape[0]
                ),
            )
        except (KeyError, IndexError) as error:
            raise ValueError(
                f"not a SAM state dict (missing or odd {error}); pass variant= or a "
                "<checkpoint>.json architecture file next to it"
            ) from None

    def build(self) -> Sam:
        """A randomly initialised ``segment_anything`` SAM of this architecture, in eval mode.

        Example:
            >>> sam = SAM_MODELS["vit_b"].architecture.build()  # doctest: +SKIP
        """
        from functools import partial

        import torch
        from segment_anything.modeling import (
            ImageEncoderViT,
            MaskDecoder,
            PromptEncoder,
            Sam,
            TwoWayTransformer,
        )

        grid = self.image_size // self.patch_size
        sam = Sam(
            image_encoder=ImageEncoderViT(
                img_size=self.image_size,
                patch_size=self.patch_size,
                embed_dim=self.encoder_embed_dim,
                depth=self.encoder_depth,
                num_heads=self.encoder_num_heads,
                mlp_ratio=self.encoder_mlp_ratio,
                out_chans=self.prompt_embed_dim,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=self.encoder_window_size,
                global_attn_indexes=self.encoder_global_attn_indexes,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=self.prompt_embed_dim,
                image_embedding_size=(grid, grid),
                input_image_size=(self.image_size, self.image_size),
                mask_in_chans=self.mask_in_chans,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=self.num_multimask_outputs,
                transformer=TwoWayTransformer(
                    depth=self.decoder_depth,
                    embedding_dim=self.prompt_embed_dim,
                    mlp_dim=self.decoder_mlp_dim,
                    num_heads=self.decoder_num_heads,
                    attention_downsample_rate=self.decoder_attention_downsample_rate,
                ),
                transformer_dim=self.prompt_embed_dim,
                iou_head_depth=self.iou_head_depth,
                iou_head_hidden_dim=self.iou_head_hidden_dim,
            ),
        )
        return sam.eval()


@dataclass(frozen=True)
class SamCheckpoint:
    """An official checkpoint: where it lives, its sha256 and its architecture."""

    url: str
    sha256: str
    architecture: SamArchitecture


#: Official SAM checkpoints (facebookresearch/segment-anything, Apache-2.0).
SAM_MODELS: dict[str, SamCheckpoint] = {
    "vit_b": SamCheckpoint(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
        SamArchitecture(768, 12, 12, (2, 5, 8, 11)),
    ),
    "vit_l": SamCheckpoint(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
        SamArchitecture(1024, 24, 16, (5, 11, 17, 23)),
    ),
    "vit_h": SamCheckpoint(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
        SamArchitecture(1280, 32, 16, (7, 15, 23, 31)),
    ),
}


def _count(state_dict: dict[str, Any], prefix: str) -> int:
    """How many numbered children ``prefix.N.`` a state dict holds."""
    indexes = {key[len(prefix):].split(".", 1)[0] for key in state_dict if key.startswith(prefix)}
    return len([index for index in indexes if index.isdigit()])


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a SAM ``.pth`` file, read safely (``weights_only=True``).

    A checkpoint that wraps its weights under ``"model"`` or ``"state_dict"`` is unwrapped.

    Example:
        >>> state = load_state_dict("sam_vit_b_01ec64.pth")  # doctest: +SKIP
    """
    import torch

    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a SAM state dict")
    return state


def load_sam(
    model: str | os.PathLike,
    *,
    variant: str | SamArchitecture | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Sam:
    """Build a SAM network and load its weights (strict), on the cpu in float32.

    Args:
        model: ``vit_b``, ``vit_l``, ``vit_h`` (official checkpoint, downloaded once and
            checked) or the path of a ``.pth`` state dict.
        variant: the architecture of a local file: a name from ``SAM_MODELS`` or a
            :class:`SamArchitecture`. Without it, ``<file>.json`` next to the file is read,
            else the architecture is read from the state dict's shapes.
        cache_dir: where official checkpoints are kept (default ``cache_dir("sam")``).

    Raises:
        ModelNotAvailableError: an official checkpoint is not cached and cannot be downloaded.
        ValueError: unknown name, a corrupt download, or weights that do not fit.

    Example:
        >>> sam = load_sam("vit_b")  # doctest: +SKIP
    """
    path, architecture = _resolve(model, variant, cache_dir)
    state = load_state_dict(path)
    if architecture is None:
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            architecture = SamArchitecture.from_dict(json.loads(sidecar.read_text()))
        else:
            architecture = SamArchitecture.from_state_dict(state)
    sam = architecture.build()
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit the SAM architecture {architecture}: {error}") from None
    logger.info("loaded SAM from %s (%s)", path, architecture)
    return sam


def _resolve(
    model: str | os.PathLike,
    variant: str | SamArchitecture | None,
    cache_dir: str | os.PathLike | None,
) -> tuple[Path, SamArchitecture | None]:
    """The checkpoint file to read and its architecture, if already known."""
    architecture = variant_architecture(variant)
    name = os.fspath(model)
    if name in SAM_MODELS and not hub.is_local(name):
        entry = SAM_MODELS[name]
        folder = Path(cache_dir) if cache_dir is not None else hub.cache_dir("sam")
        try:
            path = hub.download_url(entry.url, entry.sha256, folder=folder)
        except hub.ModelNotAvailableError as error:
            raise hub.ModelNotAvailableError(
                f"SAM model {name!r} is not available. {error} (sha256 {entry.sha256}; a copy "
                f"named {entry.url.rsplit('/', 1)[-1]} in {folder} is used without download)"
            ) from None
        return path, architecture or entry.architecture
    path = Path(name).expanduser()
    if not path.is_file():
        raise ValueError(
            f"unknown SAM model {name!r}: use one of {', '.join(SAM_MODELS)} or the path of "
            "an existing .pth state dict"
        )
    return path, architecture


def variant_architecture(variant: str | SamArchitecture | None) -> SamArchitecture | None:
    """The architecture a ``variant`` argument names (``None`` stays ``None``).

    Example:
        >>> variant_architecture("vit_l").encoder_depth
        24
    """
    if variant is None or isinstance(variant, SamArchitecture):
        return variant
    if variant not in SAM_MODELS:
        raise ValueError(f"unknown SAM variant {variant!r}; use one of {', '.join(SAM_MODELS)}")
    return SAM_MODELS[variant].architecture
