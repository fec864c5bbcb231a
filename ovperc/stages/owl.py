"""OWLv2 and OWL-ViT detector (transformers): one text query per prompt, one forward per batch.

Every prompt of an image is one text query. The model scores each of its patch boxes
against every query; a box's confidence is ``sigmoid`` of its best query logit and its class
that query, the same as transformers' ``post_process_object_detection``. Images of a batch
with fewer prompts are padded with masked queries (first token id 0, which the model masks
out), so a batch gives the same result as one image at a time.

OWLv2 pads every image to a square (bottom and right) before resizing, so its boxes are
scaled by the longer side; OWL-ViT resizes without padding, so by width and height.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ovperc.stages.hf_detector import Found, HfDetector, clip_boxes

if TYPE_CHECKING:
    import torch

DEFAULT_MODEL = "google/owlv2-base-patch16-ensemble"


class OwlDetector(HfDetector):
    """Open-vocabulary boxes from OWLv2 or OWL-ViT, all of an image's prompts in one pass.

    Args:
        model: a hub id (default ``google/owlv2-base-patch16-ensemble``; also
            ``google/owlv2-large-patch14-ensemble``, ``google/owlvit-base-patch32``) or a
            local ``save_pretrained`` folder (``model_type`` ``owlv2`` or ``owlvit``).
        device, dtype, text_threshold, batch_size, cache_dir, revision: see
            :class:`~ovperc.stages.hf_detector.HfDetector`.
        box_threshold: keep a box whose best query score is above this (default 0.1, as
            transformers; OWL scores run lower than Grounding DINO's).

    Prompts longer than the text model's 16 tokens are truncated, as the processor does.

    Example:
        >>> detector = OwlDetector(box_threshold=0.2)  # doctest: +SKIP
        >>> detector.detect([image], [["person", "bicycle"]])[0].data["class_name"]  # doctest: +SKIP
        array(['person', 'bicycle'], dtype=object)
    """

    MODEL_CLASSES: ClassVar[dict[str, str]] = {
        "owlv2": "Owlv2ForObjectDetection",
        "owlvit": "OwlViTForObjectDetection",
    }
    FAMILY: ClassVar[str] = "OWLv2 / OWL-ViT"

    def __init__(self, model: str = DEFAULT_MODEL, *, box_threshold: float = 0.1,
                 **kwargs: Any) -> None:
        super().__init__(model, box_threshold=box_threshold, **kwargs)

    def _detect_batch(self, images: list[np.ndarray], prompts: list[list[str]]) -> list[Found]:
        pixels = self._processor.image_processor(
            images=images, return_tensors="pt", input_data_format="channels_last"
        )["pixel_values"].to(self._device, self._dtype)
        input_ids, attention_mask = self._queries(prompts)
        outputs = self._model(pixel_values=pixels, input_ids=input_ids.to(self._device),
                              attention_mask=attention_mask.to(self._device))
        best, labels = outputs.logits.float().max(dim=-1)
        scores = best.sigmoid()
        boxes = outputs.pred_boxes.float()
        found = []
        for row, image in enumerate(images):
            height, width = image.shape[:2]
            keep = scores[row] > self.box_threshold
            xyxy = _to_pixels(boxes[row][keep], width, height, square=self._model_type == "owlv2")
            found.append(Found(
                xyxy=xyxy.cpu().numpy().astype(np.float32),
                confidence=scores[row][keep].cpu().numpy().astype(np.float32),
                prompt_ids=labels[row][keep].cpu().numpy(),
            ))
        return found

    def _queries(self, prompts: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(batch * max_queries, tokens)`` ids and mask; padding and blank queries masked."""
        tokenizer = self._processor.tokenizer
        width = max(len(p) for p in prompts)
        texts = [text for image_prompts in prompts for text in image_prompts]
        tokens = tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt")
        ids, mask = tokens["input_ids"], tokens["attention_mask"]
        all_ids = ids.new_zeros((len(prompts) * width, ids.shape[1]))
        all_mask = mask.new_zeros((len(prompts) * width, ids.shape[1]))
        all_mask[:, 0] = 1  # a masked query still needs one visible token to embed cleanly
        start = 0
        for row, image_prompts in enumerate(prompts):
            for column, text in enumerate(image_prompts):
                if text.strip():  # a blank prompt cannot be searched: leave its query masked
                    all_ids[row * width + column] = ids[start + column]
                    all_mask[row * width + column] = mask[start + column]
            start += len(image_prompts)
        return all_ids, all_mask


def _to_pixels(boxes: torch.Tensor, width: int, height: int, *, square: bool) -> torch.Tensor:
    """Relative ``(cx, cy, w, h)`` to clipped pixel ``xyxy``."""
    import torch

    cx, cy, w, h = boxes.unbind(-1)
    xyxy = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
    side_x, side_y = (max(width, height),) * 2 if square else (width, height)
    scale = torch.tensor([side_x, side_y, side_x, side_y], dtype=xyxy.dtype, device=xyxy.device)
    return clip_boxes(xyxy * scale, width, height)
