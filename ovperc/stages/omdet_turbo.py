"""OmDet-Turbo detector (transformers): all of an image's classes in one forward pass.

OmDet-Turbo reads a list of class names (each embedded on its own, cached by the model)
plus a task prompt, by default ``"Detect a, b, c."``. Its decoder scores every query
against every class; as in transformers' ``post_process_grounded_object_detection`` the
``num_queries`` best (query, class) pairs are taken, thresholded, and overlapping boxes of
one class suppressed (``nms_threshold``), so one query may yield boxes for two classes.

Images are batched only with images that have as many classes: the model pads shorter
class lists with empty classes that would otherwise compete in the top-k, so batching by
class count keeps batched results equal to one-by-one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ovperc.stages.hf_detector import Found, HfDetector, clip_boxes

DEFAULT_MODEL = "omlab/omdet-turbo-swin-tiny-hf"


class OmDetTurboDetector(HfDetector):
    """Open-vocabulary boxes from OmDet-Turbo, one forward per batch for all classes.

    Args:
        model: a hub id (default ``omlab/omdet-turbo-swin-tiny-hf``) or a local
            ``save_pretrained`` folder (``model_type`` ``omdet-turbo``).
        box_threshold: keep a (box, class) pair whose score is above this (default 0.3, as
            transformers).
        nms_threshold: IoU above which the weaker box of the same class is dropped
            (default 0.5, as transformers).
        task: the task prompt, ``{classes}`` standing for the comma-joined class list
            (default ``"Detect {classes}."``, the processor's own).
        device, dtype, text_threshold, batch_size, cache_dir, revision: see
            :class:`~ovperc.stages.hf_detector.HfDetector`.

    Example:
        >>> detector = OmDetTurboDetector(box_threshold=0.3)  # doctest: +SKIP
        >>> detector.detect([image], [["person", "bicycle"]])[0].class_id  # doctest: +SKIP
        array([0, 0, 1])
    """

    MODEL_CLASSES: ClassVar[dict[str, str]] = {"omdet-turbo": "OmDetTurboForObjectDetection"}
    FAMILY: ClassVar[str] = "OmDet-Turbo"

    def __init__(self, model: str = DEFAULT_MODEL, *, box_threshold: float = 0.3,
                 nms_threshold: float = 0.5, task: str = "Detect {classes}.", **kwargs: Any) -> None:
        super().__init__(model, box_threshold=box_threshold, **kwargs)
        if not 0.0 <= nms_threshold <= 1.0:
            raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold}")
        if "{classes}" not in task:
            raise ValueError(f"task must contain '{{classes}}', got {task!r}")
        self.nms_threshold = float(nms_threshold)
        self.task = task

    def _batches(self, indices: list[int], prompts: Sequence[Sequence[str]]) -> list[list[int]]:
        groups: dict[int, list[int]] = {}
        for index in indices:
            groups.setdefault(len(prompts[index]), []).append(index)
        return [rows[i:i + self.batch_size] for rows in groups.values()
                for i in range(0, len(rows), self.batch_size)]

    def _detect_batch(self, images: list[np.ndarray], prompts: list[list[str]]) -> list[Found]:
        import torch

        pixels = self._processor.image_processor(
            images=images, return_tensors="pt", input_data_format="channels_last"
        )["pixel_values"].to(self._device, self._dtype)
        # a blank class is kept as a placeholder (ids stay aligned) but never reported
        texts = [[p if p.strip() else "none" for p in image_prompts] for image_prompts in prompts]
        tokenizer = self._processor.tokenizer
        text_kwargs = {"padding": "max_length", "truncation": True, "max_length": 77,
                       "return_tensors": "pt"}
        tasks = tokenizer([self.task.format(classes=", ".join(t)) for t in texts], **text_kwargs)
        classes = tokenizer([c for t in texts for c in t], **text_kwargs)
        outputs = self._model(
            pixel_values=pixels,
            classes_input_ids=classes["input_ids"].to(self._device),
            classes_attention_mask=classes["attention_mask"].to(self._device),
            tasks_input_ids=tasks["input_ids"].to(self._device),
            tasks_attention_mask=tasks["attention_mask"].to(self._device),
            classes_structure=torch.tensor([len(t) for t in texts], dtype=torch.long),
        )
        found = []
        for row, (image, image_prompts) in enumerate(zip(images, prompts)):
            blank = [i for i, p in enumerate(image_prompts) if not p.strip()]
            found.append(self._select(outputs.decoder_class_logits[row].float(),
                                      outputs.decoder_coord_logits[row].float(),
                                      image.shape[:2], len(image_prompts), blank))
        return found

    def _select(self, logits: Any, boxes: Any, size: tuple[int, int], num_classes: int,
                blank: list[int]) -> Found:
        """Top (query, class) pairs, thresholded, per-class NMS, in pixels."""
        import torch
        from torchvision.ops import batched_nms

        height, width = size
        scores = logits.sigmoid()
        flat, index = scores.flatten().topk(boxes.shape[0])
        labels = index % scores.shape[1]
        cx, cy, w, h = boxes[index // scores.shape[1]].unbind(-1)
        xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        xyxy = xyxy * torch.tensor([width, height, width, height], dtype=xyxy.dtype,
                                   device=xyxy.device)
        keep = (flat > self.box_threshold) & (labels < num_classes)
        if blank:
            keep &= ~torch.isin(labels, torch.tensor(blank, device=labels.device))
        xyxy, flat, labels = xyxy[keep], flat[keep], labels[keep]
        kept = batched_nms(xyxy, flat, labels, self.nms_threshold)
        return Found(
            xyxy=clip_boxes(xyxy[kept], width, height).cpu().numpy().astype(np.float32),
            confidence=flat[kept].cpu().numpy().astype(np.float32),
            prompt_ids=labels[kept].cpu().numpy(),
        )

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", nms_threshold={self.nms_threshold})"
