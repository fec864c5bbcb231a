"""Grounding DINO's attention with less work and memory traffic, same results.

Two changes, applied to a loaded model instance (transformers' classes are left alone):

- :func:`lean_deformable_attention`: the multi-scale deformable attention (transformers' pure-PyTorch
  ``MultiScaleDeformableAttention``, the path every CPU takes) samples each feature level with
  ``grid_sample``, stacks the four levels' samples into one tensor (for the encoder: heads x
  32 channels x ~17,800 queries x 16 points, about 290 MB at 800x1066), multiplies it by the
  attention weights into another tensor of that size, and sums. On a CPU it now gathers
  instead: every sampled point is four weighted reads of a zero-bordered copy of its level
  (the bilinear corners, weights times the attention weight), summed per query and head by
  one ``embedding_bag``; elsewhere (or under autograd) it weights each level's samples in
  place and adds them up level by level. Either way the same bilinear sums in another order,
  without the large temporaries (the gathered core takes about a third of ``grid_sample``'s
  time at the encoder's shapes; ``bench/RESULTS.md``).
- :func:`share_fusion_projections`: the image-text fusion attention projects the caption's
  few tokens instead of the image's thousands.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The transformers class name of the deformable attention core (Grounding DINO, MM Grounding
#: DINO / LLMDet and Deformable DETR share its code).
_CORE = "MultiScaleDeformableAttention"


def lean_deformable_attention(model: torch.nn.Module) -> int:
    """Make every deformable attention core of ``model`` gather its samples without temporaries.

    Returns:
        How many modules were changed (12 for Grounding DINO swin-T: 6 encoder and 6
        decoder layers).

    Example:
        >>> lean_deformable_attention(detector._model)  # doctest: +SKIP
        12
    """
    changed = 0
    for module in model.modules():
        if type(module).__name__ == _CORE:
            module.forward = types.MethodType(_forward, module)
            changed += 1
    return changed


def _forward(
    self: Any,
    value: torch.Tensor,
    value_spatial_shapes: torch.Tensor,
    value_spatial_shapes_list: list[tuple[int, int]],
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    im2col_step: int,
) -> torch.Tensor:
    """transformers' ``MultiScaleDeformableAttention.forward``, gathered or one level at a time."""
    import torch
    import torch.nn.functional as F

    if value.device.type == "cpu" and not torch.is_grad_enabled():
        return _gather(value, value_spatial_shapes_list, sampling_locations, attention_weights)
    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    values = value.split([height * width for height, width in value_spatial_shapes_list], dim=1)
    grids = 2 * sampling_locations - 1
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, queries, levels, points)
    in_place = not torch.is_grad_enabled()
    output = None
    for level, (height, width) in enumerate(value_spatial_shapes_list):
        level_value = values[level].flatten(2).transpose(1, 2).reshape(batch * heads, dim, height, width)
        grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        samples = F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)  # (batch x heads, dim, queries, points)
        weighted = samples.mul_(weights[..., level, :]) if in_place else samples * weights[..., level, :]
        summed = weighted.sum(-1)
        output = summed if output is None else output.add_(summed)
    if output is None:
        raise ValueError("deformable attention got no feature levels")
    return output.view(batch, heads * dim, queries).transpose(1, 2).contiguous()


def _gather(
    value: torch.Tensor,
    shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """The deformable attention as weighted reads: ``grid_sample`` (bilinear, zero padding,
    ``align_corners=False``) of every point, times its attention weight, summed per query.

    Each level is copied with a zero border (one cell before, two after) so that every
    corner of a point, clamped to one cell outside the map, reads either the map or a zero:
    no validity masks. Rows of the table are ordered (batch, head, level, y, x); each
    (batch, query, head) is one bag of 4 corners x levels x points weighted reads.
    """
    import torch
    import torch.nn.functional as F

    batch, _, heads, dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    dtype = sampling_locations.dtype
    tables, starts, start = [], [], 0
    for (height, width), level in zip(shapes, value.split([h * w for h, w in shapes], dim=1)):
        grid = level.view(batch, height, width, heads, dim).permute(0, 3, 1, 2, 4)
        tables.append(F.pad(grid, (0, 0, 1, 2, 1, 2)).reshape(batch, heads, -1, dim))
        starts.append(start)
        start += (height + 3) * (width + 3)
    table = torch.cat(tables, dim=2).reshape(-1, dim)
    sizes = torch.tensor(shapes, dtype=dtype)
    heights, widths = sizes[:, 0].view(levels, 1), sizes[:, 1].view(levels, 1)
    # pixel coordinates as grid_sample computes them (align_corners=False), at most one cell out
    x = (sampling_locations[..., 0] * widths - 0.5).clamp_(min=-1).minimum(widths)
    y = (sampling_locations[..., 1] * heights - 0.5).clamp_(min=-1).minimum(heights)
    left, top = x.floor(), y.floor()
    right_share, bottom_share = x.sub_(left), y.sub_(top)
    # row numbers in float64: exact for any table (float32 stops counting integers at 2**24)
    row = widths.double() + 3
    first = (torch.arange(batch * heads, dtype=torch.float64).view(batch, 1, heads, 1, 1) * start
             + torch.tensor(starts, dtype=torch.float64).view(levels, 1) + row + 1)
    top_left = top.double().mul_(row).add_(left).add_(first)
    index = torch.empty(batch, queries, heads, 4, levels, points, dtype=torch.int64)
    index[:, :, :, 0] = top_left
    index[:, :, :, 1] = top_left + 1
    index[:, :, :, 2] = top_left + row
    index[:, :, :, 3] = top_left + (row + 1)
    weight = torch.empty(batch, queries, heads, 4, levels, points, dtype=dtype)
    bottom = attention_weights * bottom_share
    upper = attention_weights - bottom
    torch.mul(upper, right_share, out=weight[:, :, :, 1])
    torch.sub(upper, weight[:, :, :, 1], out=weight[:, :, :, 0])
    torch.mul(bottom, right_share, out=weight[:, :, :, 3])
    torch.sub(bottom, weight[:, :, :, 3], out=weight[:, :, :, 2])
    reads = 4 * levels * points
    output = F.embedding_bag(index.view(-1), table, torch.arange(0, index.numel(), reads), mode="sum",
                             per_sample_weights=weight.view(-1).to(table.dtype))
    return output.view(batch, queries, heads * dim)


#: transformers class names of the image-text fusion attention (Grounding DINO and MM Grounding
#: DINO / LLMDet; the same code under two names).
_FUSION = ("GroundingDinoBiMultiHeadAttention", "MMGroundingDinoBiMultiHeadAttention")


def share_fusion_projections(model: torch.nn.Module) -> int:
    """Make every image-text fusion attention of ``model`` project the few text tokens, not the image's.

    The fusion layers attend between every image token (about 17,800 at 800x1066) and the
    caption's tokens (a few dozen). transformers projects the image tokens three times to the
    layer's 1,024 wide space (queries, values, and back out), about 14 GFLOP a layer; each
    of those products only ever meets the text side, so the same sums can be taken over the
    text instead, by associativity: the scores are ``X (W_q^T K^T)``, the text's output is
    ``(P X) W_v^T + b_v`` (attention rows sum to one), the image's output is
    ``P (V W_o^T)``. The results equal transformers' within float rounding. Modules whose
    projections are not plain float ``Linear`` layers (int8) or that are training keep
    transformers' code.

    Returns:
        How many modules were changed (6 for Grounding DINO swin-T: one per encoder layer).

    Example:
        >>> share_fusion_projections(detector._model)  # doctest: +SKIP
        6
    """
    import torch

    changed = 0
    for module in model.modules():
        if type(module).__name__ not in _FUSION:
            continue
        projections = (module.vision_proj, module.text_proj, module.values_vision_proj,
                       module.values_text_proj, module.out_vision_proj, module.out_text_proj)
        if not all(type(p) is torch.nn.Linear for p in projections):
            continue
        module.forward = types.MethodType(_fusion_forward(type(module).forward), module)
        changed += 1
    return changed


def _fusion_forward(original: Any) -> Any:
    def forward(self: Any, vision_features: torch.Tensor, text_features: torch.Tensor,
                vision_attention_mask: torch.Tensor | None = None,
                text_attention_mask: torch.Tensor | None = None) -> Any:
        if self.training:
            return original(self, vision_features, text_features,
                            vision_attention_mask=vision_attention_mask,
                            text_attention_mask=text_attention_mask)
        return _fusion(self, vision_features, text_features, vision_attention_mask,
                       text_attention_mask)

    return forward


def _fusion(self: Any, vision: torch.Tensor, text: torch.Tensor,
            vision_mask: torch.Tensor | None, text_mask: torch.Tensor | None) -> Any:
    """transformers' ``BiMultiHeadAttention.forward`` (inference), image-side products moved to the text."""
    import torch

    batch, pixels, channels = vision.shape
    heads, head_dim = self.num_heads, self.head_dim
    words = text.shape[1]

    def per_head(tensor: torch.Tensor) -> torch.Tensor:  # (batch, words, heads x d) -> (.., heads, words, d)
        return tensor.view(batch, words, heads, -1).transpose(1, 2)

    keys = per_head(self.text_proj(text))
    text_values = per_head(self.values_text_proj(text))
    # scores: scale x (X W_q^T + b_q) K^T = X (scale W_q^T K^T) + scale b_q K^T, per head
    query_weight = self.vision_proj.weight.view(heads, head_dim, channels)
    query_bias = self.vision_proj.bias.view(heads, head_dim, 1)
    text_queries = torch.matmul(keys, query_weight) * self.scale  # (batch, heads, words, channels)
    score_bias = torch.matmul(keys, query_bias).transpose(2, 3) * self.scale  # (batch, heads, 1, words)
    scores = torch.matmul(vision.unsqueeze(1), text_queries.transpose(2, 3)).add_(score_bias)
    scores = scores.view(batch * heads, pixels, words)

    scores = scores - scores.max()
    scores = torch.clamp(scores, min=-50000, max=50000)
    text_scores = scores.transpose(1, 2)
    text_scores = text_scores - torch.max(text_scores, dim=-1, keepdim=True)[0]
    text_scores = torch.clamp(text_scores, min=-50000, max=50000)
    if vision_mask is not None:
        text_scores.masked_fill_(vision_mask[:, None, None, :].repeat(1, heads, 1, 1).flatten(0, 1),
                                 float("-inf"))
    text_probs = text_scores.softmax(dim=-1)
    if text_mask is not None:
        scores.masked_fill_(text_mask[:, None, None, :].repeat(1, heads, 1, 1).flatten(0, 1), float("-inf"))
    vision_probs = scores.softmax(dim=-1)

    # the image's output: sum over heads of P_h (V_h W_o,h^T) + b_o
    out_weight = self.out_vision_proj.weight.view(channels, heads, head_dim).transpose(0, 1)
    text_out = torch.matmul(text_values, out_weight.transpose(1, 2))  # (batch, heads, words, channels)
    vision_output = torch.matmul(
        vision_probs.view(batch, heads, pixels, words).transpose(1, 2).reshape(batch, pixels, heads * words),
        text_out.reshape(batch, heads * words, channels),
    ).add_(self.out_vision_proj.bias)

    # the text's output: (P_h X) W_v,h^T + b_v,h (softmax rows sum to one)
    pooled = torch.matmul(text_probs.view(batch, heads, words, pixels), vision.unsqueeze(1))
    value_weight = self.values_vision_proj.weight.view(heads, head_dim, channels)
    value_bias = self.values_vision_proj.bias.view(heads, 1, head_dim)
    text_output = torch.matmul(pooled, value_weight.transpose(1, 2)).add_(value_bias)
    text_output = self.out_text_proj(text_output.transpose(1, 2).reshape(batch, words, heads * head_dim))
    return (vision_output, vision_probs), (text_output, text_probs)
