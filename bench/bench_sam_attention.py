"""SAM's image encoder: segment-anything's attention against the fused kernel ovperc uses.

Loads one random SAM of the official architecture twice through ``SamSegmenter`` (random
weights cost the same time as trained ones), ``fused_attention=False`` (segment-anything's
own code) and ``True`` (the default), and on one image measures, in interleaved turns:

- the image embedding of each (the 1024x1024 ViT);
- the largest difference between the two embeddings;
- the masks of ``--boxes`` random boxes: the lowest and mean IoU between the two paths.

Target (exact speed-up): masks IoU >= 0.999, and the fused path faster.

    python bench/bench_sam_attention.py                # vit_b, 14 boxes, 480x640, 3 repeats
"""

from __future__ import annotations

import argparse
from typing import Any

import common


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--boxes", type=int, default=14)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    common.add_common_args(parser)
    args = parser.parse_args(argv)
    common.setup_torch(args.threads)

    import numpy as np
    import supervision as sv
    import torch

    from ovperc.stages.sam import SamSegmenter

    common.print_header("SAM image encoder: segment-anything attention vs fused")
    path = common.build_sam(common.models_root(args.models_dir), args.model)
    image = common.random_image(args.height, args.width)
    boxes = sv.Detections(xyxy=common.random_boxes(args.boxes, args.height, args.width))
    plain = SamSegmenter(path, variant=args.model, device="cpu", fused_attention=False).load()
    fused = SamSegmenter(path, variant=args.model, device="cpu").load()
    size = plain.sam.image_encoder.img_size
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))

    def embed(segmenter: SamSegmenter) -> Any:
        with torch.inference_mode():
            return segmenter.sam.image_encoder(x)

    timings = common.interleaved({"segment-anything": lambda: embed(plain),
                                  "fused": lambda: embed(fused)}, args.repeats)
    diff = float((embed(plain) - embed(fused)).abs().max())
    a = plain.segment([image], [boxes])[0].mask
    b = fused.segment([image], [boxes])[0].mask
    inter = np.logical_and(a, b).sum(axis=(1, 2))
    union = np.maximum(np.logical_or(a, b).sum(axis=(1, 2)), 1)
    iou = inter / union
    results = {
        "embedding_s": {name: t.median for name, t in timings.items()},
        "embedding_cpu_s": {name: t.cpu_median for name, t in timings.items()},
        "all_wall_s": {name: [round(w, 3) for w in t.times] for name, t in timings.items()},
        "speedup": timings["segment-anything"].median / timings["fused"].median,
        "max_abs_diff": diff,
        "mask_iou_min": float(iou.min()),
        "mask_iou_mean": float(iou.mean()),
    }
    for key, value in results.items():
        print(f"{key}: {value}")
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
