"""SAM batching: N boxes decoded in one mask-decoder call vs one image embedding, and one by one.

Loads a random SAM of the official architecture (``sam_model_registry["vit_b"]()`` saved
as a ``.pth``; random weights cost the same time as trained ones) through ``SamSegmenter``
and measures on one image:

- the image embedding (``image_encoder``, the 1024x1024 ViT);
- decoding N boxes in one call (prompt encoder + mask decoder), and the upsampling of the
  N low-resolution masks to the image's size;
- decoding them in the groups ``SamSegmenter`` uses on this device (``max_boxes_per_call``:
  all at once on a GPU, 4 at a time on the cpu);
- the same N boxes decoded one call each (the loop other tools run);
- ``SamSegmenter.segment`` end to end;
- with ``--flops``, the floating-point work of the encoder and of the N-box decode, and
  with ``--profile``, the operators the N-box decode spends its time in.

Target: decode(N = 50 boxes) <= 10% of the embedding.

    python bench/bench_sam.py                          # vit_b, 50 boxes, 480x640, 3 repeats
    python bench/bench_sam.py --boxes 10 --flops --profile
"""

from __future__ import annotations

import argparse
from typing import Any

import common


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--boxes", type=int, default=50)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--loop-repeats", type=int, default=1,
                        help="runs of the one-box-at-a-time loop (0 skips it)")
    parser.add_argument("--flops", action="store_true", help="count FLOPs of encoder and decode")
    parser.add_argument("--profile", action="store_true", help="operator profile of the decode")
    common.add_common_args(parser)
    args = parser.parse_args(argv)

    import supervision as sv
    import torch
    from segment_anything.utils.transforms import ResizeLongestSide

    from ovperc.stages import SamSegmenter

    common.setup_torch(args.threads)
    info = common.print_header(f"SAM {args.model}: batched decode vs embedding")
    path = common.build_sam(common.models_root(args.models_dir), args.model)
    segmenter = SamSegmenter(path, device=args.device, dtype=args.dtype, variant=args.model).load()
    sam, device, dtype = segmenter.sam, segmenter.device, segmenter.dtype

    image = common.random_image(args.height, args.width)
    xyxy = common.random_boxes(args.boxes, args.height, args.width)
    detections = sv.Detections(xyxy=xyxy)
    print(f"SAM {args.model} on {device} ({dtype}), image {args.height}x{args.width}, "
          f"{args.boxes} boxes")

    pixels, [input_size] = segmenter._preprocess([image])
    boxes = ResizeLongestSide(sam.image_encoder.img_size).apply_boxes_torch(
        torch.as_tensor(xyxy, dtype=torch.float32, device=device), image.shape[:2])
    image_pe = sam.prompt_encoder.get_dense_pe().to(dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def embed() -> torch.Tensor:
        out = sam.image_encoder(pixels)
        sync()
        return out

    def decode(prompts: torch.Tensor) -> torch.Tensor:
        sparse, dense = sam.prompt_encoder(points=None, boxes=prompts, masks=None)
        low_res, _ = sam.mask_decoder(
            image_embeddings=embedding, image_pe=image_pe,
            sparse_prompt_embeddings=sparse.to(dtype), dense_prompt_embeddings=dense.to(dtype),
            multimask_output=False,
        )
        sync()
        return low_res

    def upsample(low_res: torch.Tensor) -> None:
        masks = sam.postprocess_masks(low_res.float(), input_size, image.shape[:2])
        (masks > sam.mask_threshold).cpu()
        sync()

    results: dict[str, Any] = {"machine": info}
    with torch.inference_mode():
        embedding = embed()  # warm-up, and the embedding the decoder reads
        low_res = decode(boxes[:1])
        group = segmenter.max_boxes_per_call  # what SamSegmenter does on this device
        timings = common.interleaved({
            "embed": embed, "decode": lambda: decode(boxes),
            "grouped": lambda: [decode(boxes[i:i + group]) for i in range(0, len(boxes), group)],
        }, args.repeats)
        low_res = decode(boxes)
        up = common.median_time(lambda: upsample(low_res), args.repeats)
        loop = None
        if args.loop_repeats:
            loop = common.median_time(lambda: [decode(boxes[i:i + 1]) for i in range(len(boxes))],
                                      args.loop_repeats)
        if args.flops:
            from torch.utils.flop_counter import FlopCounterMode

            counter = FlopCounterMode(display=False)
            with counter:
                embed()
            results["encoder_gflop"] = counter.get_total_flops() / 1e9
            counter = FlopCounterMode(display=False)
            with counter:
                decode(boxes)
            results["decode_gflop"] = counter.get_total_flops() / 1e9
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU]) as prof:
                decode(boxes)
            print(f"operator profile of one {args.boxes}-box decode (self CPU time):")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    segment = common.median_time(lambda: segmenter.segment([image], [detections]), args.repeats)

    n, t_embed, t_batch = args.boxes, timings["embed"].median, timings["decode"].median
    print(f"image embedding:                 {timings['embed']}")
    print(f"decode {n} boxes, one call:       {timings['decode']}  ({t_batch / n * 1000:.1f} ms/box)")
    t_group = timings["grouped"].median
    print(f"decode {n} boxes, groups of {group}:  {timings['grouped']}  "
          f"({t_group / n * 1000:.1f} ms/box; SamSegmenter's default on {device.type})")
    print(f"upsample {n} masks to the image:  {up}")
    if loop is not None:
        print(f"decode {n} boxes, one by one:     {loop}  "
              f"({loop.median / n * 1000:.1f} ms/box)")
    print(f"SamSegmenter.segment end to end: {segment}")
    results.update({
        "embed_s": timings["embed"].times, "decode_s": timings["decode"].times,
        "upsample_s": up.times, "segment_s": segment.times,
        "ratio_decode_embed": t_batch / t_embed,
        "ratio_decode_upsample_embed": (t_batch + up.median) / t_embed,
    })
    cpu_ratio = timings["decode"].cpu_median / timings["embed"].cpu_median
    results["cpu_ratio_decode_embed"] = cpu_ratio
    print(f"RATIO decode({n}, one call) / embedding = {t_batch / t_embed:.3f}  (target <= 0.10); "
          f"cpu time {cpu_ratio:.3f}")
    print(f"ratio (decode + upsample) / embedding  = {(t_batch + up.median) / t_embed:.3f}")
    results.update({"group": group, "grouped_s": timings["grouped"].times,
                    "ratio_grouped_embed": t_group / t_embed})
    print(f"RATIO decode({n}, groups of {group}, as SamSegmenter) / embedding = "
          f"{t_group / t_embed:.3f}  (target <= 0.10); one call / groups = {t_batch / t_group:.2f}x")
    if loop is not None:
        results["loop_s"] = loop.times
        results["ratio_loop_embed"] = loop.median / t_embed
        results["ratio_loop_batch"] = loop.median / t_batch
        print(f"ratio decode(one by one) / embedding = {loop.median / t_embed:.3f}; "
              f"loop / one call = {loop.median / t_batch:.2f}x")
    print(f"ratio segment / (embedding + decode + upsample) = "
          f"{segment.median / (t_embed + t_batch + up.median):.3f}")
    if args.flops:
        share = results["decode_gflop"] / results["encoder_gflop"]
        results["flop_ratio_decode_embed"] = share
        print(f"FLOPs: encoder {results['encoder_gflop']:.1f} GFLOP, decode {n} boxes "
              f"{results['decode_gflop']:.1f} GFLOP ({share:.3f} of the encoder); "
              f"achieved {results['encoder_gflop'] / t_embed:.1f} GFLOP/s in the encoder, "
              f"{results['decode_gflop'] / t_batch:.1f} GFLOP/s in the decoder")
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
