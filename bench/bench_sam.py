"""Time SAM's parts at their real size (random weights cost the same time as trained ones).

Measures, on one image: the image embedding, decoding N boxes in one mask-decoder call,
the same N boxes one call each, and ``SamSegmenter.segment`` end to end; prints the ratios.

    python bench/bench_sam.py --model vit_b --boxes 50
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` runs, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)

    import supervision as sv
    import torch
    from segment_anything import sam_model_registry
    from segment_anything.utils.transforms import ResizeLongestSide

    from ovperc.stages import SamSegmenter

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    image = (rng.random((args.height, args.width, 3)) * 255).astype(np.uint8)
    x0 = rng.uniform(0, args.width * 0.7, args.boxes)
    y0 = rng.uniform(0, args.height * 0.7, args.boxes)
    xyxy = np.stack([x0, y0, x0 + args.width * 0.25, y0 + args.height * 0.25], axis=1)
    detections = sv.Detections(xyxy=xyxy)

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"random_{args.model}.pth"
        torch.save(sam_model_registry[args.model]().state_dict(), path)
        segmenter = SamSegmenter(path, device=args.device, dtype=args.dtype,
                                 variant=args.model).load()
    sam, device, dtype = segmenter.sam, segmenter.device, segmenter.dtype
    print(f"SAM {args.model} on {device} ({dtype}), torch threads {torch.get_num_threads()}, "
          f"image {args.height}x{args.width}, {args.boxes} boxes")

    transform = ResizeLongestSide(sam.image_encoder.img_size)
    resized = torch.as_tensor(transform.apply_image(image), device=device).permute(2, 0, 1)
    input_size = tuple(resized.shape[-2:])
    pixels = sam.preprocess(resized[None]).to(dtype)
    boxes = transform.apply_boxes_torch(torch.as_tensor(xyxy, dtype=torch.float32, device=device),
                                        image.shape[:2])

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        embedding = sam.image_encoder(pixels)  # warm-up, and the embedding to decode against
        sync()

        def embed() -> None:
            sam.image_encoder(pixels)
            sync()

        def decode(prompts: torch.Tensor) -> None:
            sparse, dense = sam.prompt_encoder(points=None, boxes=prompts, masks=None)
            low_res, _ = sam.mask_decoder(
                image_embeddings=embedding, image_pe=sam.prompt_encoder.get_dense_pe().to(dtype),
                sparse_prompt_embeddings=sparse.to(dtype), dense_prompt_embeddings=dense.to(dtype),
                multimask_output=False,
            )
            masks = sam.postprocess_masks(low_res.float(), input_size, image.shape[:2])
            (masks > sam.mask_threshold).cpu()
            sync()

        decode(boxes[:1])  # warm-up
        t_embed = _timed(embed, args.repeats)
        t_batch = _timed(lambda: decode(boxes), args.repeats)
        t_loop = _timed(lambda: [decode(boxes[i:i + 1]) for i in range(len(boxes))], args.repeats)
    t_segment = _timed(lambda: segmenter.segment([image], [detections]), args.repeats)

    n = args.boxes
    print(f"image embedding               {t_embed:8.3f} s")
    print(f"decode {n} boxes, one call      {t_batch:8.3f} s  ({t_batch / n * 1000:.1f} ms/box)")
    print(f"decode {n} boxes, one by one    {t_loop:8.3f} s  ({t_loop / n * 1000:.1f} ms/box)")
    print(f"SamSegmenter.segment end to end {t_segment:8.3f} s")
    print(f"ratio decode(batch) / embedding   {t_batch / t_embed:6.3f}")
    print(f"ratio decode(loop)  / embedding   {t_loop / t_embed:6.3f}")
    print(f"ratio loop / batch                {t_loop / t_batch:6.2f}x")
    print(f"ratio segment / (embedding + batch decode) {t_segment / (t_embed + t_batch):6.3f}")


if __name__ == "__main__":
    main()
