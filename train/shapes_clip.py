"""Train the tiny CLIP of ``shapes-tiny`` (open_clip architecture) on crops, scenes and captions.

The model is ``open_clip.model.CLIP`` with a small custom config and open_clip's own BPE
tokenizer. Each step it sees

- shape crops, cut as ovperc's CLIP classifier cuts them (the box with a margin, padded to a
  square with the model's mean colour), scored against one text embedding per tag (the
  mean over the classifier's and the tagger's prompt templates): cross-entropy with the
  crop's class;
- whole scenes, scored the same way: cross-entropy against an even share over the classes
  present (what the tagger reads from the softmax);
- whole scenes against their captions (``"two red circles and a blue square"``): the
  symmetric contrastive CLIP loss over the batch.

The tag vocabulary is the four classes and a few distractors that never appear.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovperc.shapes import CLASSES, generate_scenes

logger = logging.getLogger(__name__)

#: Tags the model is trained to tell apart: the classes first, then distractors.
DISTRACTORS = ("orange ring", "purple hexagon", "pink diamond", "white cross")
TAGS = (*CLASSES, *DISTRACTORS)

CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@dataclass
class ClipSettings:
    """Schedule of the CLIP training."""

    steps: int = 1200
    crops: int = 64
    scenes: int = 24
    lr: float = 1e-3
    pool: int = 1500


def _templates() -> list[str]:
    from ovperc.stages.templates import PHOTO_TEMPLATES, resolve_templates

    return list(dict.fromkeys([*resolve_templates("simple"), *PHOTO_TEMPLATES]))


def _jitter(box: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    w, h = box[2] - box[0], box[3] - box[1]
    noisy = box + rng.normal(0, 0.08, 4) * np.array([w, h, w, h])
    return np.clip(noisy, 0, [size[0], size[1], size[0], size[1]]).astype(np.float32)


def train_clip(folder: Path, *, seed: int, settings: ClipSettings | None = None) -> Path:
    """Train and save an open_clip folder (config + safetensors weights) into ``folder``."""
    import open_clip
    import torch
    import torch.nn.functional as F
    from PIL import Image
    from safetensors.torch import save_file

    from ovperc.stages.clip_classifier import square_crop

    settings = settings or ClipSettings()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = open_clip.model.CLIP(**CONFIG)
    preprocess_cfg = {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                      "std": list(open_clip.OPENAI_DATASET_STD),
                      "interpolation": "bicubic", "resize_mode": "shortest"}
    preprocess = open_clip.image_transform(CONFIG["vision_cfg"]["image_size"], is_train=False,
                                           mean=preprocess_cfg["mean"], std=preprocess_cfg["std"],
                                           interpolation="bicubic", resize_mode="shortest")
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=CONFIG["text_cfg"]["context_length"])
    fill = tuple(int(round(255 * m)) for m in open_clip.OPENAI_DATASET_MEAN)
    templates = _templates()
    tag_tokens = tokenizer([t.format(tag) for tag in TAGS for t in templates])
    started = time.time()
    scenes = generate_scenes(settings.pool, seed=seed)
    logger.info("clip: %d training scenes ready in %.0f s", len(scenes), time.time() - started)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr,
                                                   total_steps=settings.steps, pct_start=0.05)
    model.train()
    running = 0.0
    for step in range(settings.steps):
        crops, crop_labels = [], []
        while len(crops) < settings.crops:
            scene = scenes[int(rng.integers(len(scenes)))]
            k = int(rng.integers(len(scene.shapes)))
            size = scene.image.shape[1], scene.image.shape[0]
            crop = square_crop(scene.image, _jitter(scene.xyxy[k], rng, size), 0.1, fill)
            picture = Image.fromarray(crop)
            if rng.random() < 0.5:  # mirrored (FLIP_LEFT_RIGHT = 0) or turned (ROTATE_180 = 3)
                picture = picture.transpose(Image.Transpose(int(rng.integers(2)) * 3))
            crops.append(picture)
            crop_labels.append(int(scene.class_ids[k]))
        chosen = [scenes[int(i)] for i in rng.integers(len(scenes), size=settings.scenes)]
        pictures = [Image.fromarray(s.image) for s in chosen]
        pixels = torch.stack([preprocess(im) for im in crops + pictures])
        image_emb = F.normalize(model.encode_image(pixels), dim=-1)
        text_emb = F.normalize(model.encode_text(tag_tokens), dim=-1)
        tag_emb = F.normalize(text_emb.view(len(TAGS), len(templates), -1).mean(1), dim=-1)
        scale = model.logit_scale.exp()
        logits = scale * image_emb @ tag_emb.T
        n_crops = len(crops)
        crop_loss = F.cross_entropy(logits[:n_crops], torch.tensor(crop_labels))
        shares = torch.zeros(len(chosen), len(TAGS))
        for row, scene in enumerate(chosen):
            present = sorted(set(scene.class_ids.tolist()))
            shares[row, present] = 1.0 / len(present)
        scene_loss = -(shares * logits[n_crops:].log_softmax(-1)).sum(-1).mean()
        caption_emb = F.normalize(model.encode_text(tokenizer([s.caption for s in chosen])), dim=-1)
        pair = scale * image_emb[n_crops:] @ caption_emb.T
        labels = torch.arange(len(chosen))
        pair_loss = (F.cross_entropy(pair, labels) + F.cross_entropy(pair.T, labels)) / 2
        loss = crop_loss + scene_loss + 0.5 * pair_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, 4.6052)
        value = float(loss.detach())
        running = 0.98 * running + 0.02 * value if step else value
        if step % 100 == 0 or step == settings.steps - 1:
            accuracy = (logits[:n_crops].argmax(-1) == torch.tensor(crop_labels)).float().mean()
            logger.info("clip step %d/%d loss %.4f crop acc %.2f scale %.1f (%.0f s)", step,
                        settings.steps, running, float(accuracy), float(scale.detach()),
                        time.time() - started)
    model.eval()
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {"model_cfg": CONFIG, "preprocess_cfg": preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    logger.info("clip: saved to %s after %.0f s", folder, time.time() - started)
    return folder
