"""Grounding DINO's multi-scale deformable attention, summed level by level in place.

transformers' pure-PyTorch ``MultiScaleDeformableAttention`` (the path every CPU takes)
samples each feature level with ``grid_sample``, stacks the four levels' samples into one
tensor (for the encoder: heads x 32 channels x ~17,800 queries x 16 points, about 290 MB at
800x1066), multiplies it by the attention weights into another tensor of that size, and sums.
:func:`sum_levels_in_place` makes the same modules weight each level's samples in place and
add them up level by level: the same products and sums in another order, without the two
large temporaries (about a quarter less time in the attention, a few percent of a forward;
``bench/bench_exact.py``). Only the given model instance changes.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: The transformers class name of the deformable attention core (Grounding DINO, MM Grounding
#: DINO / LLMDet and Deformable DETR share its code).
_CORE = "MultiScaleDeformableAttention"


def sum_levels_in_place(model: torch.nn.Module) -> int:
    """Make every deformable attention core of ``model`` sum its levels in place.

    Returns:
        How many modules were changed (12 for Grounding DINO swin-T: 6 encoder and 6
        decoder layers).

    Example:
        >>> sum_levels_in_place(detector._model)  # doctest: +SKIP
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
    """transformers' ``MultiScaleDeformableAttention.forward``, one level at a time."""
    import torch
    import torch.nn.functional as F

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
