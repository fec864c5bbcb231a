"""SAM's mask decoder for many boxes on one image, without per-box copies of the image.

segment-anything's ``MaskDecoder`` copies the 64x64 image embedding and its positional
encoding once per box (``repeat_interleave``) and then projects every box's copy of the
4,096 image tokens through the attention layers' linear maps. :func:`decode_boxes` computes
the same function of the same weights with less work:

- the image embedding, its positional encoding and the dense prompt (``no_mask_embed``
  when there is no mask input, the same for every box) are kept once and broadcast;
- where the image tokens are still the same for every box (the first layer's token-to-image
  keys and values and its image-to-token queries) they are projected once for all boxes;
- where they differ per box, the projection is moved onto the few prompt tokens by
  associativity: ``(X W_k^T) q^T = X (q W_k)^T`` and ``A (X W_v^T + b) = (A X) W_v^T + b``
  (the rows of a softmax sum to one), and the image-to-token output projection is applied to
  the token values before the attention weights. Each image-token matrix product then has
  ``heads x tokens`` (8 x 7 = 56 for a box) columns instead of the projection width (128);
- only the masks that are returned are computed (one per box, or three with
  ``multimask_output``; not all four).

The arithmetic is reordered, never approximated: outputs equal segment-anything's within
float rounding (``tests/stages/test_sam_decoder.py``; the real vit_b decoder in
``bench/bench_exact.py``). segment-anything's modules and weights are used as they are.
"""

from __future__ import annotations

import math
import types
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from segment_anything.modeling import Sam
    from segment_anything.modeling.mask_decoder import MaskDecoder
    from segment_anything.modeling.transformer import Attention, TwoWayAttentionBlock


def share_image_tokens(sam: Sam) -> None:
    """Make ``sam``'s mask decoder run :func:`decode_boxes` for one image's prompts.

    Only this instance changes. Calls it cannot serve the same way (several images in one
    call, or mask inputs that make the dense prompt differ per box) run segment-anything's
    own ``MaskDecoder.forward``.

    Example:
        >>> sam = load_sam("vit_b")  # doctest: +SKIP
        >>> share_image_tokens(sam)  # doctest: +SKIP
    """
    sam.mask_decoder.forward = types.MethodType(_shared_forward, sam.mask_decoder)


def _shared_forward(
    self: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    multimask_output: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.forward`` through :func:`decode_boxes` where that computes the same."""
    from segment_anything.modeling.mask_decoder import MaskDecoder

    args = (image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
            multimask_output)
    if _shareable(image_embeddings, image_pe, dense_prompt_embeddings):
        return decode_boxes(self, *args)
    return MaskDecoder.forward(self, *args)


def _shareable(image_embeddings: torch.Tensor, image_pe: torch.Tensor,
               dense_prompt_embeddings: torch.Tensor) -> bool:
    """One image, and one dense prompt for all boxes (given once, or expanded without copies)."""
    dense = dense_prompt_embeddings
    return (image_embeddings.ndim == 4 and image_embeddings.shape[0] == 1 and image_pe.ndim == 4
            and image_pe.shape[0] == 1 and dense.ndim == 4
            and (dense.shape[0] == 1 or dense.stride(0) == 0))


def decode_boxes(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
    multimask_output: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``decoder(...)`` for all the prompts of one image, sharing the image's tokens.

    Args:
        decoder: segment-anything's ``MaskDecoder`` (with its ``TwoWayTransformer``).
        image_embeddings: the one image's embedding ``(1, C, H, W)``.
        image_pe: the dense positional encoding ``(1, C, H, W)``.
        sparse_prompt_embeddings: one row of prompt tokens per box ``(B, T, C)``.
        dense_prompt_embeddings: the dense prompt shared by all boxes, ``(1, C, H, W)`` or
            the prompt encoder's output without mask inputs (its ``no_mask_embed`` expanded
            to ``(B, C, H, W)`` without copies).
        multimask_output: three masks per box instead of one, as in ``MaskDecoder``.

    Returns:
        Low-resolution mask logits ``(B, 1 or 3, 4H, 4W)`` and predicted IoUs ``(B, 1 or 3)``,
        equal to ``decoder(...)`` with the image repeated per box, within float rounding.

    Example:
        >>> sparse, dense = sam.prompt_encoder(points=None, boxes=boxes, masks=None)  # doctest: +SKIP
        >>> masks, iou = decode_boxes(sam.mask_decoder, embedding, sam.prompt_encoder.get_dense_pe(),
        ...                           sparse, dense, multimask_output=False)  # doctest: +SKIP
    """
    import torch

    dense = dense_prompt_embeddings
    if not _shareable(image_embeddings, image_pe, dense):
        raise ValueError(
            "decode_boxes takes one image's image_embeddings and image_pe (1, C, H, W) and one "
            "dense prompt for all boxes (1, C, H, W) (or the prompt encoder's expanded no-mask "
            f"embedding), got {tuple(image_embeddings.shape)}, {tuple(image_pe.shape)} and "
            f"{tuple(dense.shape)}: use MaskDecoder itself for several images or mask inputs")
    selected = slice(1, None) if multimask_output else slice(0, 1)
    boxes = sparse_prompt_embeddings.shape[0]
    _, channels, height, width = image_embeddings.shape
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat(
        (output_tokens[None].expand(boxes, -1, -1), sparse_prompt_embeddings), dim=1)
    if boxes == 0:
        count = len(range(decoder.num_mask_tokens)[selected])
        empty = tokens.new_zeros
        return empty((0, count, 4 * height, 4 * width)), empty((0, count))

    image = (image_embeddings + dense[:1]).flatten(2).transpose(1, 2)
    pe = image_pe.flatten(2).transpose(1, 2)
    hs, keys = _two_way_transformer(decoder.transformer, image, pe, tokens)

    src = keys.transpose(1, 2).reshape(boxes, channels, height, width)
    upscaled = decoder.output_upscaling(src)
    mask_tokens_out = hs[:, 1:1 + decoder.num_mask_tokens]
    indexes = range(decoder.num_mask_tokens)[selected]
    hyper_in = torch.stack(
        [decoder.output_hypernetworks_mlps[i](mask_tokens_out[:, i]) for i in indexes], dim=1)
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
    iou_pred = decoder.iou_prediction_head(hs[:, 0])[:, selected]
    return masks, iou_pred


def _two_way_transformer(
    transformer: torch.nn.Module, image: torch.Tensor, pe: torch.Tensor, tokens: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``TwoWayTransformer.forward`` on image tokens ``(1, N, C)`` shared by ``B`` prompts."""
    queries, keys = tokens, image
    for layer in transformer.layers:
        queries, keys = _two_way_block(layer, queries, keys, tokens, pe)
    attended = _tokens_to_image(transformer.final_attn_token_to_image, queries + tokens,
                                keys + pe, keys)
    return transformer.norm_final_attn(queries + attended), keys


def _two_way_block(
    layer: TwoWayAttentionBlock,
    queries: torch.Tensor,
    keys: torch.Tensor,
    query_pe: torch.Tensor,
    key_pe: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``TwoWayAttentionBlock.forward`` where ``keys`` may be ``(1, N, C)`` for all boxes."""
    if layer.skip_first_layer_pe:
        queries = layer.self_attn(q=queries, k=queries, v=queries)
    else:
        q = queries + query_pe
        queries = queries + layer.self_attn(q=q, k=q, v=queries)
    queries = layer.norm1(queries)

    k = keys + key_pe  # both cross attentions use the image tokens before this block's update
    queries = layer.norm2(
        queries + _tokens_to_image(layer.cross_attn_token_to_image, queries + query_pe, k, keys))
    queries = layer.norm3(queries + layer.mlp(queries))
    attended = _image_to_tokens(layer.cross_attn_image_to_token, k, queries + query_pe, queries)
    return queries, layer.norm4(keys + attended)


def _project_image_once(attn: Attention, image_batch: int, boxes: int, tokens: int) -> bool:
    """Whether projecting the image tokens costs less than moving the projection to the tokens.

    Projecting costs ``image_batch x width`` products per image token and channel; the
    reordered form ``boxes x heads x tokens``. Shared image tokens (``image_batch`` 1) are
    worth projecting once from three boxes on with SAM's sizes.
    """
    return image_batch * attn.internal_dim <= boxes * attn.num_heads * tokens


def _tokens_to_image(
    attn: Attention, q_tokens: torch.Tensor, k_image: torch.Tensor, v_image: torch.Tensor
) -> torch.Tensor:
    """``attn(q=q_tokens, k=k_image, v=v_image)``: ``(B, T, C)`` queries over ``(1|B, N, C)``."""
    boxes, tokens, _ = q_tokens.shape
    heads, width = attn.num_heads, attn.internal_dim
    head_dim = width // heads
    q = attn.q_proj(q_tokens).view(boxes, tokens, heads, head_dim).transpose(1, 2)
    if _project_image_once(attn, k_image.shape[0], boxes, tokens):
        k = _heads(attn.k_proj(k_image), heads)
        v = _heads(attn.v_proj(v_image), heads)
        weights = ((q @ k.transpose(-1, -2)) / math.sqrt(head_dim)).softmax(dim=-1)
        out = weights @ v
    else:
        channels = k_image.shape[-1]
        w_k = attn.k_proj.weight.view(heads, head_dim, channels)
        w_v = attn.v_proj.weight.view(heads, head_dim, channels)
        # q . (W_k x + b_k) = (q W_k) . x + q . b_k, for every image token x
        q_in_image = (q @ w_k).reshape(boxes, heads * tokens, channels)
        q_bias = (q * attn.k_proj.bias.view(1, heads, 1, head_dim)).sum(-1)
        logits = q_in_image @ k_image.transpose(1, 2) + q_bias.reshape(boxes, heads * tokens, 1)
        weights = (logits / math.sqrt(head_dim)).softmax(dim=-1)
        # sum_n a_n (W_v x_n + b_v) = W_v (sum_n a_n x_n) + b_v, as the weights sum to one
        mixed = (weights @ v_image).view(boxes, heads, tokens, channels)
        out = mixed @ w_v.transpose(1, 2) + attn.v_proj.bias.view(1, heads, 1, head_dim)
    return attn.out_proj(out.transpose(1, 2).reshape(boxes, tokens, width))


def _image_to_tokens(
    attn: Attention, q_image: torch.Tensor, k_tokens: torch.Tensor, v_tokens: torch.Tensor
) -> torch.Tensor:
    """``attn(q=q_image, k=k_tokens, v=v_tokens)``: ``(1|B, N, C)`` queries over ``(B, T, C)``."""
    boxes, tokens, channels = k_tokens.shape
    heads, width = attn.num_heads, attn.internal_dim
    head_dim = width // heads
    points = q_image.shape[1]
    k = _heads(attn.k_proj(k_tokens), heads)
    v = _heads(attn.v_proj(v_tokens), heads)
    if _project_image_once(attn, q_image.shape[0], boxes, tokens):
        q = _heads(attn.q_proj(q_image), heads)
        logits = (q @ k.transpose(-1, -2)).permute(0, 2, 1, 3)  # (B, N, heads, T)
    else:
        w_q = attn.q_proj.weight.view(heads, head_dim, channels)
        # (W_q x + b_q) . k = x . (W_q^T k) + b_q . k, for every image token x
        k_in_image = (w_q.transpose(1, 2) @ k.transpose(-1, -2)).permute(0, 2, 1, 3)
        k_bias = (k * attn.q_proj.bias.view(1, heads, 1, head_dim)).sum(-1)
        logits = (q_image @ k_in_image.reshape(boxes, channels, heads * tokens)
                  + k_bias.reshape(boxes, 1, heads * tokens)).view(boxes, points, heads, tokens)
    weights = (logits / math.sqrt(head_dim)).softmax(dim=-1).reshape(boxes, points, heads * tokens)
    # out_proj(concat_h A_h V_h) = sum_h A_h (V_h W_o,h^T) + b_o
    w_o = attn.out_proj.weight.view(channels, heads, head_dim).permute(1, 2, 0)
    v_out = (v @ w_o).reshape(boxes, heads * tokens, channels)
    return weights @ v_out + attn.out_proj.bias


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, N, heads x d)`` -> ``(B, heads, N, d)``."""
    batch, count, width = x.shape
    return x.view(batch, count, heads, width // heads).transpose(1, 2)
