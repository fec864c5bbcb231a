"""CLIP region classification: N box crops embedded in one batch vs one box at a time.

Real ViT-B-32 architecture with random weights (they cost the same time as trained ones);
nothing is downloaded. Run by hand:

    python bench/bench_clip.py --boxes 50
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import open_clip
    import supervision as sv
    import torch

    from ovperc import Ontology
    from ovperc.stages import ClipClassifier, ClipModel

    start = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None)
    model = model.to(args.device)
    clip = ClipModel.from_modules(model, preprocess, open_clip.get_tokenizer(args.model),
                                  name=f"{args.model}:random-bench")
    build = time.perf_counter() - start

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    x1 = rng.uniform(0, 560, args.boxes)
    y1 = rng.uniform(0, 400, args.boxes)
    xyxy = np.stack([x1, y1, x1 + rng.uniform(20, 80, args.boxes),
                     y1 + rng.uniform(20, 80, args.boxes)], axis=1).astype(np.float32)
    det = sv.Detections(xyxy=xyxy, confidence=np.full(args.boxes, 0.5, np.float32),
                        class_id=np.zeros(args.boxes, dtype=int))
    onto = Ontology([f"class {i}" for i in range(args.classes)])
    det.data["class_name"] = np.array([onto.classes[0]] * args.boxes, dtype=object)
    clf = ClipClassifier(clip, mode="rescore", batch_size=max(64, args.boxes))

    def sync() -> None:
        if torch.cuda.is_available() and args.device.startswith("cuda"):
            torch.cuda.synchronize()

    start = time.perf_counter()
    clf.classify([image], [det[:1]], [onto])  # text embeddings, computed once and cached
    sync()
    text = time.perf_counter() - start

    start = time.perf_counter()
    batched = clf.classify([image], [det], [onto])[0]
    sync()
    together = time.perf_counter() - start

    start = time.perf_counter()
    single = [clf.classify([image], [det[i:i + 1]], [onto])[0] for i in range(args.boxes)]
    sync()
    alone = time.perf_counter() - start

    same = np.allclose(batched.data["clip_score"],
                       np.concatenate([s.data["clip_score"] for s in single]), atol=1e-4)
    print(f"model {args.model} (random weights) on {args.device}, torch threads "
          f"{torch.get_num_threads()}; build {build:.2f} s")
    print(f"text embeddings, {args.classes} classes x {len(clf.templates)} templates "
          f"(+1 crop, first call): {text:.2f} s")
    print(f"{args.boxes} crops in one batch:   {together:.2f} s "
          f"({1000 * together / args.boxes:.1f} ms/box)")
    print(f"{args.boxes} crops one by one:     {alone:.2f} s "
          f"({1000 * alone / args.boxes:.1f} ms/box)")
    print(f"speed-up: {alone / together:.2f}x; same scores: {same}")


if __name__ == "__main__":
    main()
