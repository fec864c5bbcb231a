"""CLIP region classification: N box crops embedded in one batch vs one box at a time.

A random ViT-B-32 (``open_clip.create_model("ViT-B-32", pretrained=None)``, saved as an
open_clip folder; random weights cost the same time as trained ones) is loaded through
``ClipModel`` and ``ClipClassifier``; nothing is downloaded. The class text embeddings are
computed once before timing (they are cached by the classifier).

    python bench/bench_clip.py                  # 50 crops, 10 classes, 3 repeats
    python bench/bench_clip.py --boxes 200 --repeats 5
"""

from __future__ import annotations

import argparse
from typing import Any

import common
import numpy as np


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--device", default="cpu")
    common.add_common_args(parser)
    args = parser.parse_args(argv)

    import supervision as sv
    import torch

    from ovperc import Ontology
    from ovperc.stages import ClipClassifier, ClipModel

    common.setup_torch(args.threads)
    info = common.print_header("CLIP crops: one batch vs one by one")
    folder = common.build_clip(common.models_root(args.models_dir) / "clip-vit-b-32")
    clip = ClipModel(str(folder), device=args.device).load()
    image = common.random_image(args.height, args.width)
    xyxy = common.random_boxes(args.boxes, args.height, args.width)
    onto = Ontology(list(common.BENCH_CLASSES[:args.classes]))
    det = sv.Detections(xyxy=xyxy, confidence=np.full(args.boxes, 0.5, np.float32),
                        class_id=np.zeros(args.boxes, dtype=int),
                        data={"class_name": np.array([onto.classes[0]] * args.boxes, dtype=object)})
    clf = ClipClassifier(clip, mode="rescore", batch_size=max(64, args.boxes))

    def sync() -> None:
        if torch.cuda.is_available() and args.device.startswith("cuda"):
            torch.cuda.synchronize()

    clf.classify([image], [det[:1]], [onto])  # text embeddings (cached) and warm-up
    outputs: dict[str, Any] = {}

    def batched() -> None:
        outputs["batched"] = clf.classify([image], [det], [onto])[0]
        sync()

    def alone() -> None:
        outputs["alone"] = [clf.classify([image], [det[i:i + 1]], [onto])[0]
                            for i in range(args.boxes)]
        sync()

    timings = common.interleaved({"batched": batched, "alone": alone}, args.repeats)
    same = np.allclose(outputs["batched"].data["clip_score"],
                       np.concatenate([s.data["clip_score"] for s in outputs["alone"]]), atol=1e-4)
    n = args.boxes
    print(f"ViT-B-32 (random weights) on {args.device}, {n} crops, {args.classes} classes x "
          f"{len(clf.templates)} templates")
    print(f"{n} crops in one batch: {timings['batched']}  "
          f"({1000 * timings['batched'].median / n:.1f} ms/crop)")
    print(f"{n} crops one by one:   {timings['alone']}  "
          f"({1000 * timings['alone'].median / n:.1f} ms/crop)")
    speedup = timings["alone"].median / timings["batched"].median
    print(f"RATIO one by one / one batch = {speedup:.2f}x; same scores: {same}")
    results = {"batched_s": timings["batched"].times, "alone_s": timings["alone"].times,
               "speedup": speedup, "same_scores": bool(same), "machine": info}
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
