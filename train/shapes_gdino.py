"""Train the tiny Grounding DINO of ``shapes-tiny`` (transformers architecture).

The model reads captions such as ``"blue square. red circle. yellow star."`` and is trained
with Grounding DINO's own objective: Hungarian matching of queries to ground-truth
boxes (focal class cost over the phrase's tokens, L1 and GIoU box costs), then a sigmoid
focal loss over text tokens (a matched query's positives are the tokens of its phrase),
L1 and GIoU box losses, applied to every decoder layer and to the two-stage encoder
proposals (all image tokens, so the top-k query selection learns where objects are).
Captions hold the classes present in the image (rarely one is left out, and
its shapes then count as background) plus random absent classes, in random order, so
the model learns to follow the words rather than their position.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ovperc.shapes import CLASSES, generate_scenes

logger = logging.getLogger(__name__)

#: BERT-uncased ids Grounding DINO treats as phrase delimiters; the vocabulary keeps them.
SPECIAL_IDS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]",
               1012: ".", 1029: "?"}
VOCAB_SIZE = 1040
WORDS = (
    "red blue green yellow orange purple pink black white gray grey brown dark light bright "
    "circle square triangle star shape disc dot box diamond ring hexagon rectangle "
    "a an the of and or with on in at to small big large tiny object thing background "
    "person car dog cat"
).split()


def vocabulary() -> list[str]:
    """A small WordPiece vocabulary with BERT's special ids in their places.

    Whole words for the shapes world, then single characters and ``##`` pieces so any
    other text still tokenises (into pieces, never all ``[UNK]``).
    """
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    tokens = list(dict.fromkeys([*WORDS, *chars, *(f"##{c}" for c in chars), ",", "!", "-", "'"]))
    free = iter(tokens)
    vocab, filler = [], 0
    for idx in range(VOCAB_SIZE):
        if idx in SPECIAL_IDS:
            vocab.append(SPECIAL_IDS[idx])
            continue
        token = next(free, None) if idx >= 104 else None
        if token is None:
            token = f"[unused{filler}]"
            filler += 1
        vocab.append(token)
    return vocab


@dataclass
class GdinoSettings:
    """Sizes and schedule of the tiny Grounding DINO."""

    image_size: int = 224
    steps: int = 4000
    batch_size: int = 8
    lr: float = 3e-4
    warmup: int = 200
    pool: int = 3000
    num_queries: int = 30
    d_model: int = 64
    swin_dim: int = 32


def build_model(settings: GdinoSettings, folder: Path):
    """A randomly initialised model and its processor (tokenizer written into ``folder``)."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    vocab_path = folder / "vocab.txt"
    vocab_path.write_text("\n".join(vocabulary()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast(vocab=str(vocab_path), do_lower_case=True)
    d = settings.d_model
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            embed_dim=settings.swin_dim, depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8],
            window_size=7, out_indices=[2, 3, 4], image_size=settings.image_size,
        ),
        text_config=BertConfig(
            vocab_size=VOCAB_SIZE, hidden_size=d, num_hidden_layers=1, num_attention_heads=2,
            intermediate_size=2 * d, max_position_embeddings=256,
        ),
        d_model=d, encoder_layers=2, decoder_layers=3, encoder_ffn_dim=2 * d,
        decoder_ffn_dim=2 * d, encoder_attention_heads=4, decoder_attention_heads=4,
        num_queries=settings.num_queries, encoder_n_points=2, decoder_n_points=2,
        num_feature_levels=3, max_text_len=256,
    )
    model = GroundingDinoForObjectDetection(config)
    with torch.no_grad():  # start with small token logits (the head is a bare dot product)
        model.model.decoder.layer_norm.weight.mul_(0.2)
        model.model.enc_output_norm.weight.mul_(0.2)
    size = settings.image_size
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": size, "longest_edge": size}),
        tokenizer=tokenizer,
    )
    return model, processor


def captions(class_ids: np.ndarray, rng: np.random.Generator) -> tuple[str, list[int]]:
    """A caption for one scene and, per shape, its phrase index (-1: not in the caption)."""
    present = sorted(set(class_ids.tolist()))
    if len(present) > 1 and rng.random() < 0.1:
        present.remove(int(rng.choice(present)))  # a present class left out: background
    absent = [c for c in range(len(CLASSES)) if c not in present and rng.random() < 0.6]
    chosen = present + absent
    if not chosen:
        chosen = [int(rng.integers(len(CLASSES)))]
    order = [chosen[i] for i in rng.permutation(len(chosen))]
    text = " ".join(f"{CLASSES[c]}." for c in order)
    phrase = {c: i for i, c in enumerate(order)}
    return text, [phrase.get(int(c), -1) for c in class_ids]


def phrase_maps(input_ids, n_tokens: int):
    """Per caption, a ``(phrases, n_tokens)`` 0/1 map of each phrase's tokens."""
    import torch

    delim = torch.isin(input_ids, torch.tensor([*SPECIAL_IDS_DELIM, 0]))
    groups = torch.cumsum(delim, dim=1) * (~delim)
    maps = []
    for row in groups:
        labels = [g for g in torch.unique(row).tolist() if g > 0]
        m = torch.zeros(len(labels), n_tokens)
        for k, g in enumerate(labels):
            m[k, : row.shape[0]] = (row == g).float()
        maps.append(m)
    return maps


SPECIAL_IDS_DELIM = (101, 102, 1012, 1029)


def _focal(logits, targets, alpha: float = 0.25, gamma: float = 2.0):
    import torch.nn.functional as F

    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    return (alpha * targets + (1 - alpha) * (1 - targets)) * ce * (1 - p_t) ** gamma


def _cxcywh_to_xyxy(b):
    import torch

    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def _giou(a, b):
    """Pairwise generalised IoU of xyxy boxes ``(N, 4)`` x ``(M, 4)``."""
    import torch

    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    union = area_a[:, None] + area_b[None] - inter
    iou = inter / union.clamp(min=1e-7)
    lt2 = torch.min(a[:, None, :2], b[None, :, :2])
    rb2 = torch.max(a[:, None, 2:], b[None, :, 2:])
    hull = (rb2 - lt2).clamp(min=0).prod(-1)
    return iou - (hull - union) / hull.clamp(min=1e-7)


def set_loss(logits, boxes, text_mask, targets):
    """Grounding DINO's set loss for one head's outputs over a batch.

    Args:
        logits: ``(B, Q, T)`` token logits; boxes ``(B, Q, 4)`` normalised cxcywh.
        text_mask: ``(B, T)`` bool, real tokens of each caption.
        targets: per image ``(token_maps (N, T), boxes (N, 4))`` of the prompted shapes.
    """
    import torch
    from scipy.optimize import linear_sum_assignment

    total_boxes = max(1, sum(len(t[1]) for t in targets))
    cls_loss = logits.new_zeros(())
    l1_loss = logits.new_zeros(())
    giou_loss = logits.new_zeros(())
    for b, (token_maps, gt) in enumerate(targets):
        lg, bx = logits[b], boxes[b]
        mask = text_mask[b]
        target = torch.zeros_like(lg)
        if len(gt):
            with torch.no_grad():
                prob = lg.sigmoid()
                pos = 0.25 * (1 - prob) ** 2 * -(prob + 1e-8).log()
                neg = 0.75 * prob**2 * -(1 - prob + 1e-8).log()
                norm_maps = token_maps / token_maps.sum(-1, keepdim=True)
                cost = (2.0 * (pos - neg) @ norm_maps.T
                        + 5.0 * torch.cdist(bx, gt, p=1)
                        - 2.0 * _giou(_cxcywh_to_xyxy(bx), _cxcywh_to_xyxy(gt)))
                rows, cols = linear_sum_assignment(torch.nan_to_num(cost, 1e4).numpy())
            rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
            target[rows] = token_maps[cols]
            l1_loss = l1_loss + (bx[rows] - gt[cols]).abs().sum()
            giou_loss = giou_loss + (1 - torch.diag(
                _giou(_cxcywh_to_xyxy(bx[rows]), _cxcywh_to_xyxy(gt[cols])))).sum()
        cls_loss = cls_loss + _focal(lg[:, mask], target[:, mask]).sum()
    return (2.0 * cls_loss + 5.0 * l1_loss + 2.0 * giou_loss) / total_boxes


def head_outputs(model, outputs, attention_mask):
    """``(logits, boxes)`` of every decoder layer (the last one is the model's output)."""
    import torch

    hidden = outputs.intermediate_hidden_states
    text = outputs.encoder_last_hidden_state_text
    result = []
    for level in range(hidden.shape[1]):
        reference = (outputs.init_reference_points if level == 0
                     else outputs.intermediate_reference_points[:, level - 1])
        reference = torch.special.logit(reference, eps=1e-5)
        logits = model.class_embed[level](
            vision_hidden_state=hidden[:, level], text_hidden_state=text,
            text_token_mask=attention_mask.bool(),
        )
        boxes = (model.bbox_embed[level](hidden[:, level]) + reference).sigmoid()
        result.append((logits, boxes))
    return result


def make_pool(settings: GdinoSettings, processor, seed: int):
    """Pre-processed training scenes: pixels (float16), class ids and normalised boxes."""
    import torch

    scenes = generate_scenes(settings.pool, seed=seed)
    pixels = []
    for start in range(0, len(scenes), 64):
        chunk = [s.image for s in scenes[start:start + 64]]
        out = processor.image_processor(images=chunk, return_tensors="pt",
                                        input_data_format="channels_last")["pixel_values"]
        pixels.append(out.half())
    items = []
    for scene in scenes:
        h, w = scene.image.shape[:2]
        xyxy = scene.xyxy / np.array([w, h, w, h], dtype=np.float32)
        cxcywh = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2,
                           xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]], -1)
        items.append((scene.class_ids, cxcywh.astype(np.float32)))
    return torch.cat(pixels), items


def train_gdino(
    out: Path, *, seed: int, settings: GdinoSettings | None = None, snapshots: Path | None = None
) -> Path:
    """Train and save the detector as a ``save_pretrained`` folder in ``out``.

    With ``snapshots``, the model is also saved every 1000 steps into
    ``snapshots/step-<N>`` (to evaluate a run while it trains).
    """
    import torch

    settings = settings or GdinoSettings()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model, processor = build_model(settings, out)
    started = time.time()
    pixels, items = make_pool(settings, processor, seed)
    logger.info("gdino: %d training scenes ready in %.0f s", len(items), time.time() - started)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / settings.warmup)
                                                 * 0.5 * (1 + np.cos(np.pi * min(s, settings.steps)
                                                                     / settings.steps)) + 0.02)
    model.train()
    running = 0.0
    for step in range(settings.steps):
        index = rng.integers(len(items), size=settings.batch_size)
        batch_pixels = pixels[index].float()
        texts, targets_raw = [], []
        for row, i in enumerate(index):
            class_ids, boxes = items[i]
            boxes = boxes.copy()
            if rng.random() < 0.5:
                batch_pixels[row] = batch_pixels[row].flip(-1)
                boxes[:, 0] = 1 - boxes[:, 0]
            if rng.random() < 0.5:
                batch_pixels[row] = batch_pixels[row].flip(-2)
                boxes[:, 1] = 1 - boxes[:, 1]
            text, phrases = captions(class_ids, rng)
            texts.append(text)
            targets_raw.append((phrases, boxes))
        tokens = processor.tokenizer(texts, padding="longest", return_tensors="pt")
        outputs = model.model(pixel_values=batch_pixels, input_ids=tokens["input_ids"],
                              attention_mask=tokens["attention_mask"],
                              token_type_ids=tokens["token_type_ids"])
        heads = head_outputs(model, outputs, tokens["attention_mask"])
        n_tokens = heads[-1][0].shape[-1]
        maps = phrase_maps(tokens["input_ids"], n_tokens)
        text_mask = torch.zeros(len(texts), n_tokens, dtype=torch.bool)
        text_mask[:, : tokens["attention_mask"].shape[1]] = tokens["attention_mask"].bool()
        targets = []
        for (phrases, boxes), m in zip(targets_raw, maps):
            keep = [k for k, p in enumerate(phrases) if p >= 0]
            targets.append((m[[phrases[k] for k in keep]], torch.from_numpy(boxes[keep])))
        loss = sum(set_loss(lg, bx, text_mask, targets) for lg, bx in heads)
        # The encoder's proposals (every image token), before top-k selection: transformers
        # returns the selected ones detached, so they would never learn where objects are.
        enc_logits = outputs.enc_outputs_class
        enc_boxes = outputs.enc_outputs_coord_logits.sigmoid()
        enc_mask = text_mask[:, : enc_logits.shape[-1]]
        loss = loss + set_loss(enc_logits, enc_boxes, enc_mask, [(m[:, : enc_logits.shape[-1]], b)
                                                                 for m, b in targets])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        value = float(loss.detach())
        running = 0.98 * running + 0.02 * value if step else value
        if snapshots is not None and step and step % 1000 == 0:
            model.save_pretrained(snapshots / f"step-{step}")
            processor.save_pretrained(snapshots / f"step-{step}")
        if step % 100 == 0 or step == settings.steps - 1:
            logger.info("gdino step %d/%d loss %.3f (%.0f s)", step, settings.steps, running,
                        time.time() - started)
    model.eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    logger.info("gdino: saved to %s after %.0f s", out, time.time() - started)
    return out
