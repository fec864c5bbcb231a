"""Chain overhead: one image through tag -> detect -> segment -> classify vs its bare model forwards.

The chain is a :class:`ovperc.Pipeline` of the public stages (``ClipTagger``,
``GroundingDinoDetector``, ``SamSegmenter``, ``ClipClassifier``) loaded from saved random
models of the real architectures at their real sizes: Grounding DINO swin-T
(``GroundingDinoConfig()``, processor 800/1333), SAM vit_b, CLIP ViT-B-32 (shared by the
tagger and the classifier). The tagger has a small vocabulary (``--tags``) with its text
embeddings already cached, so the chain measures the cost of one image.

The floor is the sum of the bare network calls on the same, already preprocessed inputs:
CLIP ``encode_image`` of the whole image, the Grounding DINO forward on the same pixels and
caption, SAM's image encoder plus prompt encoder and mask decoder on the same boxes, CLIP
``encode_image`` of the same box crops. Everything else the chain does (decoding checks,
resizing, tokenising, thresholds, NMS, mask upsampling, cropping, bookkeeping) is overhead.
The number of boxes is fixed by choosing the box threshold that keeps about ``--boxes``
queries of the random model. Target: chain / floor <= 1.05.

    python bench/bench_chain.py                       # 480x640 image, 20 boxes, 3 repeats
    python bench/bench_chain.py --repeats 5 --boxes 50
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

import common
import numpy as np


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--tags", type=int, default=50, help="tagger vocabulary size")
    parser.add_argument("--classes", type=int, default=10,
                        help="tags per image, which become the detector's classes")
    parser.add_argument("--boxes", type=int, default=20,
                        help="boxes to keep (the box threshold is set to keep about this many)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--profile", default=None,
                        help="also write a cProfile of one chain run to this file")
    common.add_common_args(parser)
    args = parser.parse_args(argv)

    import torch
    from PIL import Image

    from ovperc import Pipeline
    from ovperc.stages import ClipClassifier, ClipModel, ClipTagger, GroundingDinoDetector, SamSegmenter
    from ovperc.stages.clip_classifier import square_crop
    from ovperc.stages.clip_tagger import builtin_vocabulary
    from ovperc.stages.grounding_dino_prompt import build_chunks

    common.setup_torch(args.threads)
    info = common.print_header("chain overhead: tag -> detect -> segment -> classify")
    paths = common.models(args.models_dir)
    image = common.random_image(args.height, args.width)
    cache = tempfile.mkdtemp(prefix="ovperc-bench-tags-")

    clip = ClipModel(str(paths["clip"]), device=args.device)
    tagger = ClipTagger(clip, vocabulary=builtin_vocabulary()[:args.tags], threshold=0.0,
                        top_k=args.classes, cache_dir=cache)
    detector = GroundingDinoDetector(str(paths["gdino"]), device=args.device, box_threshold=0.0)
    segmenter = SamSegmenter(paths["sam"], device=args.device, variant="vit_b")
    classifier = ClipClassifier(clip, mode="rescore")
    pipe = Pipeline(tagger=tagger, detector=detector, segmenter=segmenter, classifier=classifier)
    tagger.text_embeddings()  # warm cache: the chain measures per-image cost
    detector.load()
    segmenter.load()

    def sync() -> None:
        if torch.cuda.is_available() and args.device.startswith("cuda"):
            torch.cuda.synchronize()

    # -- the same preprocessed inputs for the bare calls
    tags = [t.name for t in tagger.tag([image])[0]]
    processor, gd_model = detector._processor, detector._model
    gd_pixels = processor.image_processor(
        images=[image], return_tensors="pt", input_data_format="channels_last")["pixel_values"]
    gd_pixels = gd_pixels.to(detector._device)
    [chunk] = build_chunks(tags, processor.tokenizer, detector.text_limit)
    tokens = processor.tokenizer([chunk.text], padding="longest", return_token_type_ids=True,
                                 return_tensors="pt").to(detector._device)
    tag_pixels = clip._preprocess(Image.fromarray(image))[None].to(clip.device)

    def gd_forward() -> Any:
        return gd_model(pixel_values=gd_pixels, input_ids=tokens["input_ids"],
                        token_type_ids=tokens["token_type_ids"],
                        attention_mask=tokens["attention_mask"])

    with torch.inference_mode():  # box threshold that keeps about --boxes queries
        confidence = gd_forward().logits.sigmoid().max(dim=-1).values.flatten().sort(
            descending=True).values
    k = min(args.boxes, len(confidence) - 1)
    detector.box_threshold = float(confidence[k - 1] + confidence[k]) / 2

    first = pipe(image)  # warm-up, and the boxes the bare calls use
    boxes = np.asarray(first.detections.xyxy, dtype=np.float64)
    assert [t.name for t in first.tags] == tags, "tags changed between calls"
    print(f"image {args.height}x{args.width}; tags (= classes) {len(tags)}: {', '.join(tags)}")
    print(f"box threshold {detector.box_threshold:.4f}: {len(boxes)} boxes after NMS")
    if len(boxes) == 0:
        raise SystemExit("no box survived the threshold; the random model's scores are saturated")

    sam = segmenter.sam
    group = segmenter.max_boxes_per_call
    sam_pixels, [input_size] = segmenter._preprocess([image])
    from segment_anything.utils.transforms import ResizeLongestSide

    prompts = ResizeLongestSide(sam.image_encoder.img_size).apply_boxes_torch(
        torch.as_tensor(boxes, dtype=torch.float32, device=segmenter.device), image.shape[:2])
    image_pe = sam.prompt_encoder.get_dense_pe()
    crops = [square_crop(image, box, classifier.padding, classifier._fill) for box in boxes]
    crop_pixels = torch.stack([clip._preprocess(Image.fromarray(c)) for c in crops]).to(clip.device)

    parts: dict[str, common.Timing] = {n: common.Timing() for n in
                                       ("tag", "detect", "sam_encoder", "sam_decoder", "classify")}

    def bare() -> None:
        import time

        def timed(name: str, fn: Any) -> Any:
            start, cpu = time.perf_counter(), time.process_time()
            out = fn()
            sync()
            parts[name].add(time.perf_counter() - start, time.process_time() - cpu)
            return out

        with torch.inference_mode():
            timed("tag", lambda: clip.model.encode_image(tag_pixels))
            timed("detect", gd_forward)
            embedding = timed("sam_encoder", lambda: sam.image_encoder(sam_pixels))

            def decode() -> Any:  # in the groups SamSegmenter uses on this device
                out = []
                for first in range(0, len(prompts), group):
                    sparse, dense = sam.prompt_encoder(points=None, masks=None,
                                                       boxes=prompts[first:first + group])
                    out.append(sam.mask_decoder(
                        image_embeddings=embedding, image_pe=image_pe,
                        sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                        multimask_output=False))
                return out

            if len(boxes):
                timed("sam_decoder", decode)
                timed("classify", lambda: clip.model.encode_image(crop_pixels))

    stage_times: dict[str, list[float]] = {}

    def chain() -> None:
        result = pipe(image)
        sync()
        for stage, seconds in result.timings.items():
            stage_times.setdefault(stage, []).append(seconds)

    timings = common.interleaved({"chain": chain, "bare": bare}, args.repeats)
    ratio = timings["chain"].median / timings["bare"].median
    print(f"chain (Pipeline.__call__):      {timings['chain']}")
    print(f"bare model forwards (sum):      {timings['bare']}")
    print("per part (median s): chain stage vs bare model call(s)")
    pairs = [("tag", ["tag"]), ("detect", ["detect"]), ("segment", ["sam_encoder", "sam_decoder"]),
             ("classify", ["classify"])]
    per_part = {}
    for stage, names in pairs:
        chain_s = float(np.median(stage_times.get(stage, [0.0])))
        bare_s = sum(parts[n].median for n in names if parts[n].times)
        per_part[stage] = {"chain_s": chain_s, "bare_s": bare_s}
        print(f"  {stage:<9} {chain_s:8.3f}  vs {bare_s:8.3f}  (+{chain_s - bare_s:.3f} s)")
    cpu_ratio = timings["chain"].cpu_median / timings["bare"].cpu_median
    print(f"RATIO chain / bare forwards = {ratio:.3f} wall, {cpu_ratio:.3f} cpu time  "
          "(target <= 1.05)")

    if args.profile:
        import cProfile

        cProfile.runctx("pipe(image)", globals(), {"pipe": pipe, "image": image},
                        filename=args.profile)
        print(f"cProfile of one chain run: {args.profile}")

    results = {"ratio": ratio, "cpu_ratio": cpu_ratio, "chain_s": timings["chain"].times,
               "bare_s": timings["bare"].times, "chain_cpu_s": timings["chain"].cpu,
               "bare_cpu_s": timings["bare"].cpu,
               "boxes": len(boxes), "tags": tags, "per_part": per_part, "machine": info}
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
