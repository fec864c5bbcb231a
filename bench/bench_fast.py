"""The ``fast`` preset on a CPU: candidate stages, the chain end to end, its accuracy cost.

Three parts, each printing its own table (``--parts``, default all):

- ``stages``: each candidate stage on one 480x640 image, float32 against int8
  (``quantize="int8"``) and, for Grounding DINO, the released 800/1333 input against
  ``image_size=480`` (480/800), timed in turns. Random weights of the real sizes (built by
  :mod:`common`, :mod:`zero_shot_models`, ``bench_segmenters.build``): they cost the same
  time as trained ones. Beside each time, the agreement of the int8 / smaller path with the
  float32 path of the same model on the same input: box agreement (share of the float path's
  kept boxes that the other path has at IoU >= 0.5), mask IoU of the same boxes, cosine of
  CLIP embeddings. With random weights these only bound the numeric drift: a trained model's
  scores are sharper, so its boxes move less under the same noise (not measured here).
- ``chain``: ``Pipeline.from_preset``'s chain, ``default`` and ``fast`` (the models of each
  preset replaced by the random ones, the preset's options kept), tag + detect + segment +
  classify on the same image with the same number of boxes (the box threshold is set so
  that about ``--boxes`` queries pass). Target: ``fast`` <= 5 s per image on 2 cores.
- ``shapes``: the trained ``shapes-tiny`` chain on 30 held-out scenes (seed 7), exact
  against the fast path's transformations (every stage ``quantize="int8"``, and each
  detector input size given by ``--shapes-sizes``): box mAP@0.5 (target: within 0.02 of
  the exact path), box agreement and mask IoU with the exact path.

    python bench/bench_fast.py --threads 2
    python bench/bench_fast.py --threads 2 --parts chain --repeats 3
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

PARTS = ("stages", "chain", "shapes")


# ---------------------------------------------------------------------- agreement
def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two ``(N, 4)`` / ``(M, 4)`` xyxy arrays."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None] - inter, 1e-9)


def agreement(reference: list, other: list) -> dict[str, float]:
    """How far ``other`` detections follow ``reference`` ones, image by image.

    ``boxes``: share of reference boxes with a box of the same class in ``other`` at IoU >=
    0.5 (greedy, best IoU first); ``extra``: share of ``other`` boxes matching none;
    ``mask_iou``: mean mask IoU over the matched pairs (when both have masks).
    """
    matched = total = extra = 0
    ious: list[float] = []
    for ref, oth in zip(reference, other):
        total += len(ref)
        if len(ref) == 0 or len(oth) == 0:
            extra += len(oth)
            continue
        iou = box_iou(ref.xyxy, oth.xyxy)
        if ref.class_id is not None and oth.class_id is not None:
            iou = np.where(ref.class_id[:, None] == oth.class_id[None], iou, 0.0)
        used: set[int] = set()
        for r, o in sorted(np.argwhere(iou >= 0.5), key=lambda p: -iou[p[0], p[1]]):
            if r in used or -1 - o in used:
                continue
            used.update((int(r), -1 - int(o)))
            matched += 1
            if ref.mask is not None and oth.mask is not None:
                inter = np.logical_and(ref.mask[r], oth.mask[o]).sum()
                union = np.logical_or(ref.mask[r], oth.mask[o]).sum()
                ious.append(float(inter / union) if union else 1.0)
        extra += len(oth) - sum(1 for u in used if u < 0)
    others = sum(len(o) for o in other)
    return {"boxes": matched / total if total else 1.0,
            "extra": extra / others if others else 0.0,
            "mask_iou": float(np.mean(ious)) if ious else float("nan"),
            "reference_boxes": total}


def uptime() -> str:
    """The load average now, as ``uptime`` prints it."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ---------------------------------------------------------------------- models
def random_models(root: Path) -> dict[str, Path]:
    """Real-size random models for every candidate (built once, then reused)."""
    import bench_segmenters
    import zero_shot_models

    paths = common.models(root)
    paths["omdet"] = zero_shot_models.build_omdet_turbo(root / "omdet-turbo-swin-t")
    for name in ("edgetam", "sam2.1-tiny"):
        paths[name] = bench_segmenters.build(name, root / "hf-segmenters" / name, 8)
    return paths


def threshold_for(detector: Any, image: np.ndarray, classes: list[str], boxes: int) -> float:
    """A box threshold that keeps about ``boxes`` of this random detector's queries."""
    keep = detector.box_threshold
    detector.box_threshold = 0.0
    try:
        [found] = detector.detect([image], [classes])
    finally:
        detector.box_threshold = keep
    scores = np.sort(np.asarray(found.confidence))[::-1]
    k = min(boxes, len(scores) - 1)
    return float(scores[k - 1] + scores[k]) / 2


# ---------------------------------------------------------------------- parts
def part_stages(args: argparse.Namespace, paths: dict[str, Path], image: np.ndarray) -> dict:
    import supervision as sv
    from PIL import Image

    from ovperc.registry import build_stage
    from ovperc.stages import ClipModel, HfSamSegmenter, SamSegmenter
    from ovperc.stages.grounding_dino import GroundingDinoDetector

    classes = list(common.BENCH_CLASSES[:args.classes])
    print(f"\n## stages ({uptime()})")
    rows: dict[str, Any] = {}

    def compare(name: str, variants: dict[str, Any], run: Any, agree: Any) -> None:
        for variant in variants.values():
            run(variant)  # warm-up (and lazy loading)
        timings = common.interleaved({k: (lambda v=v: run(v)) for k, v in variants.items()},
                                     args.repeats)
        exact = run(variants["float32"])
        for key, timing in timings.items():
            row = {"wall": timing.median, "cpu": timing.cpu_median, "runs": timing.times}
            if key != "float32":
                row.update(agree(exact, run(variants[key])))
            rows[f"{name} {key}"] = row
            extra = {k: round(v, 3) for k, v in row.items() if k not in ("wall", "cpu", "runs")}
            print(f"{name:<12} {key:<14} wall {timing.median:6.2f} s  cpu {timing.cpu_median:6.2f} s"
                  f"  {extra}", flush=True)

    def detect_agree(a: Any, b: Any) -> dict:
        return agreement([a], [b])

    if "gdino" in args.candidates:
        folder = str(paths["gdino"])
        made = {key: GroundingDinoDetector(folder, device="cpu", **kw) for key, kw in {
            "float32": {}, "int8": {"quantize": "int8"}, "480": {"image_size": 480},
            "480 int8": {"image_size": 480, "quantize": "int8"}}.items()}
        threshold = threshold_for(made["float32"], image, classes, args.boxes)
        for detector in made.values():
            detector.box_threshold = threshold
        compare("gdino-tiny", made, lambda d: d.detect([image], [classes])[0], detect_agree)
        del made
    if "omdet" in args.candidates:
        made = {key: build_stage("detector", str(paths["omdet"]), device="cpu", **kw)
                for key, kw in {"float32": {}, "int8": {"quantize": "int8"}}.items()}
        threshold = threshold_for(made["float32"], image, classes, args.boxes)
        for detector in made.values():
            detector.box_threshold = threshold
        compare("omdet-turbo", made, lambda d: d.detect([image], [classes])[0], detect_agree)
        del made
    boxes = sv.Detections(xyxy=common.random_boxes(args.boxes, *image.shape[:2]).astype(np.float64))

    def mask_agree(a: Any, b: Any) -> dict:
        inter = np.logical_and(a.mask, b.mask).sum(axis=(1, 2))
        union = np.logical_or(a.mask, b.mask).sum(axis=(1, 2))
        return {"mask_iou": float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), 1.0)))}

    segmenters: dict[str, dict[str, Any]] = {}
    if "sam" in args.candidates:
        segmenters["sam-vit_b"] = {
            key: SamSegmenter(paths["sam"], device="cpu", variant="vit_b", **kw)
            for key, kw in {"float32": {}, "int8": {"quantize": "int8"},
                            "int8 +decoder": {"quantize": "int8", "quantize_decoder": True}}.items()}
    for name in ("edgetam", "sam2.1-tiny"):
        if name in args.candidates:
            segmenters[name] = {key: HfSamSegmenter(paths[name], device="cpu", **kw)
                                for key, kw in {"float32": {}, "int8": {"quantize": "int8"}}.items()}
    for name, made in segmenters.items():
        compare(name, made, lambda s: s.segment([image], [boxes])[0], mask_agree)
    del segmenters
    if "clip" in args.candidates:
        clips = {key: ClipModel(str(paths["clip"]), device="cpu", **kw)
                 for key, kw in {"float32": {}, "int8": {"quantize": "int8"}}.items()}
        crops = [Image.fromarray(image)] + [
            Image.fromarray(image[int(y0):int(y1), int(x0):int(x1)]) for x0, y0, x1, y1 in boxes.xyxy]

        def cosine(a: Any, b: Any) -> dict:
            return {"cosine_min": float((a * b).sum(-1).min())}

        compare("clip-b32", clips, lambda c: c.encode_images(crops), cosine)
    return rows


def _preset_chain(name: str, models: dict[str, str], cache: str) -> Any:
    from ovperc import Pipeline
    from ovperc.presets import PRESET_OPTIONS

    options = {role: dict(PRESET_OPTIONS.get(name, {}).get(role, {})) for role in models}
    options["tagger"].update(cache_dir=cache, threshold=0.0, top_k=10,
                             vocabulary=_vocabulary(50))
    return Pipeline.from_preset(name, device="cpu", options=options, **models)


def _vocabulary(size: int) -> list[str]:
    from ovperc.stages.clip_tagger import builtin_vocabulary

    return builtin_vocabulary()[:size]


def part_chain(args: argparse.Namespace, paths: dict[str, Path], image: np.ndarray) -> dict:
    from ovperc.presets import PRESETS

    print(f"\n## chain: tag + detect + segment + classify ({uptime()})")
    random_for = {  # the preset's model -> the random model of the same architecture
        "ViT-B-32:laion2b_s34b_b79k": str(paths["clip"]), "clip-vit-b-32": str(paths["clip"]),
        "IDEA-Research/grounding-dino-tiny": str(paths["gdino"]), "gdino-tiny": str(paths["gdino"]),
        "omdet-turbo": str(paths["omdet"]), "vit_b": str(paths["sam"]),
        "edgetam": str(paths["edgetam"]), "sam2.1-tiny": str(paths["sam2.1-tiny"]),
    }
    cache = tempfile.mkdtemp(prefix="ovperc-bench-tags-")
    chains = {}
    for name in ("default", "fast"):
        models = {role: random_for[model] for role, model in PRESETS[name].items()}
        pipe = _preset_chain(name, models, cache)
        if name == "default":
            pipe.segmenter.variant = "vit_b"
        pipe.tagger.text_embeddings()
        tags = [t.name for t in pipe.tagger.tag([image])[0]]
        pipe.detector.box_threshold = threshold_for(pipe.detector, image, tags, args.boxes)
        first = pipe(image)  # warm-up: loads every model
        print(f"{name}: {type(pipe.detector).__name__} {type(pipe.segmenter).__name__}; "
              f"{len(tags)} classes, {len(first.detections)} boxes after NMS", flush=True)
        chains[name] = pipe
    stage_times: dict[str, dict[str, list[float]]] = {n: {} for n in chains}

    def run(name: str) -> None:
        result = chains[name](image)
        for stage, seconds in result.timings.items():
            stage_times[name].setdefault(stage, []).append(seconds)

    timings = common.interleaved({n: (lambda n=n: run(n)) for n in chains}, args.repeats)
    rows = {}
    for name, timing in timings.items():
        stages = {s: float(np.median(t)) for s, t in stage_times[name].items()}
        rows[name] = {"wall": timing.median, "cpu": timing.cpu_median, "runs": timing.times,
                      "stages": stages}
        parts = ", ".join(f"{s} {t:.2f}" for s, t in stages.items())
        print(f"{name:<8} wall {timing} ({parts})", flush=True)
    print(f"fast / default = {rows['fast']['wall'] / rows['default']['wall']:.3f} wall, "
          f"{rows['fast']['cpu'] / rows['default']['cpu']:.3f} cpu; target fast <= 5 s: "
          f"{rows['fast']['wall']:.2f} s ({uptime()})")
    return rows


def part_shapes(args: argparse.Namespace) -> dict:
    import torch

    from ovperc import Pipeline
    from ovperc.datasets.scoring import score_detections
    from ovperc.shapes import CLASSES, generate_scenes

    print(f"\n## shapes-tiny: exact vs the fast path's transformations ({uptime()})")
    scenes = generate_scenes(30, seed=7)
    truth = [s.detections() for s in scenes]
    cache = tempfile.mkdtemp(prefix="ovperc-bench-shapes-")
    int8 = {role: {"quantize": "int8"} for role in ("tagger", "detector", "segmenter", "classifier")}
    variants: dict[str, dict[str, dict[str, Any]]] = {"exact": {}, "int8": int8}
    for size in args.shapes_sizes:
        variants[f"int8, detector {size} px"] = {**int8, "detector": {"quantize": "int8",
                                                                      "image_size": size}}
    torch.set_num_threads(1)  # tiny models: one thread is faster and deterministic
    rows: dict[str, Any] = {}
    reference = None
    for name, options in variants.items():
        options = {role: dict(o) for role, o in options.items()}
        options.setdefault("tagger", {})["cache_dir"] = cache
        pipe = Pipeline.from_preset("shapes-tiny", device="cpu", options=options)
        start = time.perf_counter()
        results = [r.detections for r in pipe.map([s.image for s in scenes], classes=list(CLASSES),
                                                  batch_size=8)]
        seconds = time.perf_counter() - start
        scores = score_detections(results, truth, list(CLASSES))
        reference = reference or results
        row = {"map50": scores.map50, "seconds": seconds, **agreement(reference, results)}
        rows[name] = row
        print(f"{name:<26} box mAP@0.5 {scores.map50:.4f}  (exact - this: "
              f"{rows['exact']['map50'] - scores.map50:+.4f})  boxes agree {row['boxes']:.3f}  "
              f"extra {row['extra']:.3f}  mask IoU {row['mask_iou']:.3f}  {seconds:.1f} s", flush=True)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--candidates", nargs="+", default=["gdino", "omdet", "sam", "edgetam",
                                                            "sam2.1-tiny", "clip"])
    parser.add_argument("--classes", type=int, default=10, help="classes per image (stages part)")
    parser.add_argument("--boxes", type=int, default=14, help="boxes per image")
    parser.add_argument("--shapes-sizes", nargs="*", type=int, default=[200],
                        help="detector input sizes tried on shapes-tiny (its own: 224)")
    common.add_common_args(parser)
    parser.set_defaults(repeats=2)
    args = parser.parse_args(argv)

    common.setup_torch(args.threads)
    info = common.print_header("fast preset: candidates, chain, accuracy cost")
    image = common.random_image(480, 640)
    results: dict[str, Any] = {"machine": info}
    needs_models = {"stages", "chain"} & set(args.parts)
    paths = random_models(common.models_root(args.models_dir)) if needs_models else {}
    if "stages" in args.parts:
        results["stages"] = part_stages(args, paths, image)
    if "chain" in args.parts:
        results["chain"] = part_chain(args, paths, image)
    if "shapes" in args.parts:
        results["shapes"] = part_shapes(args)
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
