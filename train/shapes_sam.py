"""Train the tiny SAM of ``shapes-tiny`` (segment-anything architecture) to segment from boxes.

The network is ``segment_anything.modeling.Sam`` at a 256-pixel input with 8-pixel
patches (a 32x32 image embedding, 128x128 low-resolution masks). Each step embeds a
batch of scenes, prompts the decoder with every shape's box (jittered, as a detector's
boxes would be) and trains the single-mask output (``multimask_output=False``, what
ovperc's segmenter uses) with binary cross-entropy plus dice against the visible mask, and
the IoU head against the mask's real IoU.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovperc.shapes import generate_scenes

logger = logging.getLogger(__name__)

#: The architecture, in ``ovperc.stages.sam.SamArchitecture`` field names.
ARCHITECTURE = {
    "encoder_embed_dim": 64,
    "encoder_depth": 4,
    "encoder_num_heads": 2,
    "encoder_global_attn_indexes": [1, 3],
    "encoder_window_size": 8,
    "encoder_mlp_ratio": 2.0,
    "patch_size": 8,
    "image_size": 256,
    "prompt_embed_dim": 64,
    "mask_in_chans": 8,
    "decoder_depth": 2,
    "decoder_mlp_dim": 128,
    "decoder_num_heads": 4,
    "decoder_attention_downsample_rate": 2,
    "num_multimask_outputs": 3,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 64,
}


@dataclass
class SamSettings:
    """Schedule of the SAM training."""

    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    pool: int = 1000
    box_jitter: float = 0.08


def _dihedral(image: np.ndarray, masks: np.ndarray, k: int, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    image, masks = np.rot90(image, k, axes=(0, 1)), np.rot90(masks, k, axes=(1, 2))
    if flip:
        image, masks = image[:, ::-1], masks[:, :, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(masks)


def _boxes(masks: np.ndarray) -> np.ndarray:
    out = []
    for mask in masks:
        ys, xs = np.nonzero(mask)
        out.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    return np.asarray(out, dtype=np.float32)


def train_sam(path: Path, *, seed: int, settings: SamSettings | None = None) -> Path:
    """Train and save ``path`` (a ``.pth`` state dict) and its ``.json`` architecture."""
    import torch
    import torch.nn.functional as F

    from ovperc.stages.sam_model import SamArchitecture

    settings = settings or SamSettings()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    sam = SamArchitecture.from_dict(ARCHITECTURE).build()
    size = ARCHITECTURE["image_size"]
    started = time.time()
    scenes = generate_scenes(settings.pool, seed=seed)
    logger.info("sam: %d training scenes ready in %.0f s", len(scenes), time.time() - started)
    params = [p for p in sam.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr,
                                                   total_steps=settings.steps, pct_start=0.05)
    sam.train()
    running = 0.0
    for step in range(settings.steps):
        images, all_masks = [], []
        for i in rng.integers(len(scenes), size=settings.batch_size):
            image, masks = _dihedral(scenes[i].image, scenes[i].masks, int(rng.integers(4)),
                                     bool(rng.integers(2)))
            images.append(image)
            all_masks.append(masks)
        pixels = torch.stack([torch.from_numpy(im).permute(2, 0, 1).float() for im in images])
        embeddings = sam.image_encoder(sam.preprocess(pixels))
        image_pe = sam.prompt_encoder.get_dense_pe()
        loss = pixels.new_zeros(())
        for embedding, masks in zip(embeddings, all_masks):
            boxes = _boxes(masks)
            wh = np.repeat(boxes[:, 2:] - boxes[:, :2], 2, axis=0).reshape(-1, 4)
            noisy = boxes + rng.normal(0, settings.box_jitter, boxes.shape) * wh
            noisy = np.clip(noisy, 0, size).astype(np.float32)
            sparse, dense = sam.prompt_encoder(points=None, boxes=torch.from_numpy(noisy), masks=None)
            low_res, iou_pred = sam.mask_decoder(
                image_embeddings=embedding[None], image_pe=image_pe,
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                multimask_output=False,
            )
            logits = low_res[:, 0]
            target = torch.from_numpy(masks.astype(np.float32))[:, None]
            target = F.adaptive_avg_pool2d(target, logits.shape[-2:])[:, 0]
            bce = F.binary_cross_entropy_with_logits(logits, target)
            prob = logits.sigmoid()
            dice = 1 - (2 * (prob * target).sum((1, 2)) + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
            with torch.no_grad():
                hard = (logits > 0).float()
                binary = (target >= 0.5).float()
                inter = (hard * binary).sum((1, 2))
                iou = inter / (hard.sum((1, 2)) + binary.sum((1, 2)) - inter).clamp(min=1)
            loss = loss + 4 * bce + dice.mean() + F.mse_loss(iou_pred[:, 0], iou)
        loss = loss / len(embeddings)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        value = float(loss.detach())
        running = 0.98 * running + 0.02 * value if step else value
        if step % 100 == 0 or step == settings.steps - 1:
            logger.info("sam step %d/%d loss %.4f (%.0f s)", step, settings.steps, running,
                        time.time() - started)
    sam.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().contiguous() for k, v in sam.state_dict().items()}, path)
    path.with_suffix(".json").write_text(json.dumps(ARCHITECTURE, indent=2) + "\n", encoding="utf-8")
    logger.info("sam: saved to %s after %.0f s", path, time.time() - started)
    return path

