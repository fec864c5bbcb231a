"""Exact speed-ups: the default chain against the sum of the reference model forwards.

One run, everything timed in interleaved turns (chain, reference, parts, chain, ...):

- **chain**: ``Pipeline(ClipTagger, GroundingDinoDetector, SamSegmenter, ClipClassifier)`` with
  ovperc's defaults (fused SAM attention, shared-image-token SAM decoder, Grounding DINO's
  deformable attention summed in place), one 480x640 image, 10 tags as classes, the box
  threshold set to keep ``--queries`` queries (14 boxes after NMS).
- **reference**: the same networks as their own libraries run them, on the same inputs:
  open_clip ``encode_image`` of the image, the bare transformers Grounding DINO forward
  (its own deformable attention) on the preprocessed pixels and caption, segment-anything's
  ``SamPredictor.set_image`` + ``predict_torch`` of the chain's boxes (its own attention and
  ``MaskDecoder``), open_clip ``encode_image`` of the chain's box crops. Preprocessing that
  the chain does and the reference is given for free (Grounding DINO's image processor,
  CLIP's crops) counts against the chain.
- **parts**, after each change, on the same inputs as its "before": SAM image encoder with
  fused attention (before: the reference's ``set_image``, which adds its resize and
  normalisation, about 0.1 s), SAM decoder of the boxes (``MaskDecoder`` vs
  :func:`ovperc.stages.sam_decoder.decode_boxes`, both timed here, in the segmenter's
  groups and in one call), Grounding DINO forward with its deformable attention summed in
  place (before: the reference's forward).

Also checked: the chain's masks against the reference predictor's (IoU, lowest over boxes),
the Grounding DINO boxes of both forwards query by query (where both decode the same
proposal) and the detections of both detectors at the box threshold (largest difference in
image pixels).
Target: chain / reference <= 0.80, masks IoU >= 0.999, boxes within 0.5 px.

    python bench/bench_exact.py --threads 2           # 480x640 image, 14 boxes, 3 repeats
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

import common
import numpy as np


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--tags", type=int, default=50, help="tagger vocabulary size")
    parser.add_argument("--classes", type=int, default=10, help="tags per image (the classes)")
    parser.add_argument("--queries", type=int, default=20,
                        help="queries above the box threshold (the default image's 20 leave 14 boxes "
                             "after NMS)")
    common.add_common_args(parser)
    args = parser.parse_args(argv)

    import torch
    from PIL import Image
    from segment_anything import SamPredictor

    from ovperc import Pipeline
    from ovperc.stages import ClipClassifier, ClipModel, ClipTagger, GroundingDinoDetector, SamSegmenter
    from ovperc.stages.clip_classifier import square_crop
    from ovperc.stages.clip_tagger import builtin_vocabulary
    from ovperc.stages.grounding_dino_prompt import build_chunks
    from ovperc.stages.sam_decoder import decode_boxes
    from ovperc.stages.sam_model import load_sam

    common.setup_torch(args.threads)
    info = common.print_header("exact speed-ups: default chain vs reference forwards")
    print(f"uptime at start: {_uptime()}")
    paths = common.models(args.models_dir)
    image = common.random_image(args.height, args.width)

    clip = ClipModel(str(paths["clip"]), device="cpu")
    tagger = ClipTagger(clip, vocabulary=builtin_vocabulary()[:args.tags], threshold=0.0,
                        top_k=args.classes, cache_dir=tempfile.mkdtemp(prefix="ovperc-bench-tags-"))
    detector = GroundingDinoDetector(str(paths["gdino"]), device="cpu", box_threshold=0.0).load()
    segmenter = SamSegmenter(paths["sam"], device="cpu", variant="vit_b").load()
    classifier = ClipClassifier(clip, mode="rescore")
    pipe = Pipeline(tagger=tagger, detector=detector, segmenter=segmenter, classifier=classifier)
    tagger.text_embeddings()  # the chain measures per-image cost
    reference_detector = GroundingDinoDetector(str(paths["gdino"]), device="cpu", lean_attention=False)
    reference_gd = reference_detector.load()._model
    reference_sam = load_sam(paths["sam"], variant="vit_b")  # segment-anything's own code
    predictor = SamPredictor(reference_sam)

    # -- the reference's inputs: the chain's own preprocessing, done once here
    tags = [t.name for t in tagger.tag([image])[0]]
    processor = detector._processor
    gd_pixels = processor.image_processor(
        images=[image], return_tensors="pt", input_data_format="channels_last")["pixel_values"]
    [chunk] = build_chunks(tags, processor.tokenizer, detector.text_limit)
    tokens = processor.tokenizer([chunk.text], padding="longest", return_token_type_ids=True,
                                 return_tensors="pt")
    tag_pixels = clip._preprocess(Image.fromarray(image))[None]

    def gd_forward(model: Any) -> Any:
        return model(pixel_values=gd_pixels, input_ids=tokens["input_ids"],
                     token_type_ids=tokens["token_type_ids"], attention_mask=tokens["attention_mask"])

    with torch.inference_mode():  # the box threshold that keeps --queries queries
        reference_out = gd_forward(reference_gd)
        lean_out = gd_forward(detector._model)
    confidence = reference_out.logits.sigmoid().max(dim=-1).values.flatten().sort(descending=True).values
    k = min(args.queries, len(confidence) - 1)
    detector.box_threshold = float(confidence[k - 1] + confidence[k]) / 2
    scale = torch.tensor([args.width, args.height, args.width, args.height])
    box_check = _compare_queries(reference_out, lean_out, scale)

    reference_detector.box_threshold = detector.box_threshold
    first = pipe(image)  # warm-up; its boxes are the reference's prompts
    detections_check = _compare_detections(reference_detector.detect([image], [tags])[0],
                                           detector.detect([image], [tags])[0])
    boxes = np.asarray(first.detections.xyxy, dtype=np.float64)
    print(f"image {args.height}x{args.width}; {len(tags)} tags (= classes); "
          f"box threshold {detector.box_threshold:.4f}: {len(boxes)} boxes after NMS")
    if len(boxes) == 0:
        raise SystemExit("no box survived the threshold")
    predictor.set_image(image)
    prompts = predictor.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float32),
                                                    image.shape[:2])
    crops = [square_crop(image, box, classifier.padding, classifier._fill) for box in boxes]
    crop_pixels = torch.stack([clip._preprocess(Image.fromarray(c)) for c in crops])

    # -- parts, before and after, on the same inputs
    sam = segmenter.sam
    sam_pixels, _ = segmenter._preprocess([image])
    with torch.inference_mode():
        embedding = sam.image_encoder(sam_pixels)
    image_pe = sam.prompt_encoder.get_dense_pe()
    group = segmenter.max_boxes_per_call

    def decode(shared: bool, size: int) -> list[Any]:
        out = []
        for start in range(0, len(prompts), size):
            sparse, dense = sam.prompt_encoder(points=None, boxes=prompts[start:start + size],
                                               masks=None)
            if shared:
                out.append(decode_boxes(sam.mask_decoder, embedding, image_pe, sparse, dense, False))
            else:
                out.append(reference_sam.mask_decoder(embedding, image_pe, sparse, dense, False))
        return out

    parts: dict[str, common.Timing] = {}

    def timed(name: str, fn: Any) -> Any:
        start, cpu = time.perf_counter(), time.process_time()
        out = fn()
        parts.setdefault(name, common.Timing()).add(time.perf_counter() - start,
                                                    time.process_time() - cpu)
        return out

    def reference() -> None:
        with torch.inference_mode():
            timed("ref tag (open_clip)", lambda: clip.model.encode_image(tag_pixels))
            timed("ref detect (transformers GD)", lambda: gd_forward(reference_gd))
            timed("ref set_image (segment-anything)", lambda: predictor.set_image(image))
            timed("ref predict_torch (segment-anything)", lambda: predictor.predict_torch(
                None, None, boxes=prompts, multimask_output=False))
            timed("ref classify (open_clip)", lambda: clip.model.encode_image(crop_pixels))

    def after_parts() -> None:  # the "before" of the encoder and GD are the reference's timings
        with torch.inference_mode():
            timed("SAM encoder: fused", lambda: sam.image_encoder(sam_pixels))
            timed(f"SAM decoder, groups of {group}: MaskDecoder", lambda: decode(False, group))
            timed(f"SAM decoder, groups of {group}: shared", lambda: decode(True, group))
            timed("SAM decoder, one call: MaskDecoder", lambda: decode(False, len(prompts)))
            timed("SAM decoder, one call: shared", lambda: decode(True, len(prompts)))
            timed("GD forward: lean attention", lambda: gd_forward(detector._model))

    pairs = [("ref set_image (segment-anything)", "SAM encoder: fused"),
             (f"SAM decoder, groups of {group}: MaskDecoder", f"SAM decoder, groups of {group}: shared"),
             ("SAM decoder, one call: MaskDecoder", "SAM decoder, one call: shared"),
             ("ref detect (transformers GD)", "GD forward: lean attention")]

    stage_times: dict[str, list[float]] = {}

    def chain() -> None:
        for stage, seconds in pipe(image).timings.items():
            stage_times.setdefault(stage, []).append(seconds)

    timings = common.interleaved({"chain": chain, "reference": reference, "parts": after_parts},
                                 args.repeats)
    last = pipe(image)
    with torch.inference_mode():
        ref_masks, ref_iou, _ = predictor.predict_torch(None, None, boxes=prompts,
                                                        multimask_output=False)
    ref_masks = ref_masks[:, 0].numpy()
    inter = np.logical_and(last.detections.mask, ref_masks).sum(axis=(1, 2))
    union = np.maximum(np.logical_or(last.detections.mask, ref_masks).sum(axis=(1, 2)), 1)
    mask_iou = inter / union
    score_diff = float(np.abs(last.detections.data["mask_score"] - ref_iou[:, 0].numpy()).max())

    print(f"chain (Pipeline.__call__, defaults): {timings['chain']}")
    print(f"reference forwards (sum):            {timings['reference']}")
    print("per stage (median s): chain vs reference")
    for stage, names in (("tag", ["ref tag (open_clip)"]),
                         ("detect", ["ref detect (transformers GD)"]),
                         ("segment", ["ref set_image (segment-anything)",
                                      "ref predict_torch (segment-anything)"]),
                         ("classify", ["ref classify (open_clip)"])):
        chain_s = float(np.median(stage_times.get(stage, [0.0])))
        ref_s = sum(parts[n].median for n in names)
        print(f"  {stage:<9} {chain_s:8.3f} vs {ref_s:8.3f}  ({chain_s / ref_s:.3f}x)")
    print("reference parts:")
    for name, timing in parts.items():
        if name.startswith("ref "):
            print(f"  {name:<42} {timing}")
    print("before -> after, per change (median s of the same run):")
    for before, after in pairs:
        b, a = parts[before], parts[after]
        print(f"  {before:<42} {b.median:7.3f} s (cpu {b.cpu_median:.3f})")
        print(f"  {after:<42} {a.median:7.3f} s (cpu {a.cpu_median:.3f})  -> "
              f"{a.median / b.median:.3f}x wall, {a.cpu_median / b.cpu_median:.3f}x cpu")
    ratio = timings["chain"].median / timings["reference"].median
    cpu_ratio = timings["chain"].cpu_median / timings["reference"].cpu_median
    print(f"masks vs reference predictor: IoU lowest {mask_iou.min():.5f}, mean {mask_iou.mean():.5f}; "
          f"mask scores within {score_diff:.2e}")
    print("Grounding DINO, lean vs transformers forward: "
          f"{box_check['same_proposal']} of {box_check['queries']} queries decode the same proposal, "
          f"their boxes within {box_check['box_diff_px']:.2e} px; the proposal set is "
          f"{'the same' if box_check['same_set'] else 'different'}; encoder proposal scores within "
          f"{box_check['score_diff']:.1e} (queries that changed proposal: their scores tie within that)")
    print("Grounding DINO detections at the box threshold, lean vs transformers: "
          f"{detections_check['matched']} of {detections_check['reference']} reference boxes found "
          f"within {detections_check['box_diff_px']:.2e} px ({detections_check['lean']} lean boxes)")
    print(f"RATIO chain / reference forwards = {ratio:.3f} wall, {cpu_ratio:.3f} cpu time "
          "(target <= 0.80)")
    print(f"uptime at end: {_uptime()}")
    results = {"ratio": ratio, "cpu_ratio": cpu_ratio, "chain_s": timings["chain"].times,
               "reference_s": timings["reference"].times,
               "parts": {n: {"wall": t.times, "cpu": t.cpu} for n, t in parts.items()},
               "stages": stage_times, "boxes": len(boxes), "mask_iou_min": float(mask_iou.min()),
               "mask_score_diff": score_diff, "gd_queries": box_check, "gd_detections": detections_check,
               "machine": info}
    common.print_footer(results, args.json)
    return results


def _compare_queries(reference: Any, lean: Any, scale: Any) -> dict[str, Any]:
    """Grounding DINO's 900 queries of two forwards, query by query.

    Each query decodes one of the encoder's top-900 proposals; proposals whose scores tie
    within float rounding can swap places, and a swapped query then starts from another
    proposal (and another learned query embedding), so its box is another box. Boxes are
    compared where both forwards decode the same proposal; the rest are counted.
    """
    import torch

    ref_points, lean_points = reference.init_reference_points[0], lean.init_reference_points[0]
    same = (ref_points - lean_points).abs().amax(-1) <= 1e-5
    diff = ((lean.pred_boxes - reference.pred_boxes)[0] * scale).abs().amax(-1)
    ref_scores = reference.enc_outputs_class[0].max(-1).values
    lean_scores = lean.enc_outputs_class[0].max(-1).values
    finite = torch.isfinite(ref_scores) & torch.isfinite(lean_scores)
    nearest = torch.cdist(ref_points, lean_points, p=float("inf")).min(dim=1).values
    same_set = bool((nearest <= 1e-5).all())
    return {"queries": len(same), "same_proposal": int(same.sum()),
            "box_diff_px": float(diff[same].max()) if same.any() else float("nan"),
            "box_diff_swapped_px": float(diff[~same].max()) if (~same).any() else 0.0,
            "same_set": same_set,
            "score_diff": float((ref_scores - lean_scores)[finite].abs().max())}


def _compare_detections(reference: Any, lean: Any) -> dict[str, Any]:
    """Each reference detection's nearest lean detection of the same class, in pixels."""
    import numpy as np

    diffs = []
    for box, class_id in zip(reference.xyxy, reference.class_id):
        candidates = lean.xyxy[lean.class_id == class_id]
        if len(candidates):
            diffs.append(float(np.abs(candidates - box).max(axis=1).min()))
    matched = sum(d <= 0.5 for d in diffs)
    return {"reference": len(reference), "lean": len(lean), "matched": matched,
            "box_diff_px": max((d for d in diffs if d <= 0.5), default=0.0)}


def _uptime() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"load average {load}"


if __name__ == "__main__":
    main()
