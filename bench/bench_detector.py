"""Time Grounding DINO: one forward with K classes against one class, and a per-class loop.

By default this builds the real swin-T architecture (``GroundingDinoConfig()``, the
architecture of ``IDEA-Research/grounding-dino-tiny``) with random weights, which cost the
same time as trained ones, and feeds it an image-sized tensor and a synthetic caption:
nothing is downloaded. With ``--model`` it times ``GroundingDinoDetector.detect`` on a real
model folder or cached hub id instead (preprocessing and post-processing included).

Usage:
    python bench/bench_detector.py                      # random swin-T, 800x1066
    python bench/bench_detector.py --classes 20 --threads 2
    python bench/bench_detector.py --model ./grounding-dino-tiny --height 480 --width 640
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

CLS, SEP, DOT = 101, 102, 1012


def _timed(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` calls, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _caption_ids(classes: int, words_per_class: int = 2) -> list[int]:
    """A caption of ``classes`` phrases of ``words_per_class`` ordinary word ids each."""
    ids = [CLS]
    for k in range(classes):
        ids += [2000 + 7 * k + w for w in range(words_per_class)] + [DOT]
    return ids + [SEP]


def bench_random(args: argparse.Namespace) -> dict[str, float]:
    """One forward of a random full-size model, 1 class vs ``args.classes`` classes."""
    import torch
    from transformers import GroundingDinoConfig, GroundingDinoForObjectDetection

    torch.manual_seed(0)
    model = GroundingDinoForObjectDetection(GroundingDinoConfig()).eval()
    pixels = torch.randn(1, 3, args.height, args.width)

    def forward(classes: int) -> None:
        ids = torch.tensor([_caption_ids(classes)])
        with torch.inference_mode():
            model(pixel_values=pixels, input_ids=ids, attention_mask=torch.ones_like(ids),
                  token_type_ids=torch.zeros_like(ids))

    with torch.inference_mode():  # warm-up on a small input: allocator, kernels
        small = torch.tensor([_caption_ids(1)])
        model(pixel_values=torch.randn(1, 3, 256, 256), input_ids=small)
    return {"one": _timed(lambda: forward(1), args.repeats),
            "many": _timed(lambda: forward(args.classes), args.repeats)}


def bench_detector(args: argparse.Namespace) -> dict[str, float]:
    """``GroundingDinoDetector.detect`` end to end on a real model."""
    import numpy as np

    from ovperc.stages import GroundingDinoDetector

    detector = GroundingDinoDetector(args.model, device=args.device).load()
    image = np.random.default_rng(0).integers(0, 256, (args.height, args.width, 3), np.uint8)
    words = ["person", "car", "dog", "cat", "bicycle", "bus", "truck", "bird", "horse", "chair",
             "cup", "bottle", "boat", "kite", "tree", "bench", "sign", "light", "ball", "bag"]
    many = [words[k % len(words)] + ("" if k < len(words) else f" {k}") for k in range(args.classes)]
    detector.detect([image], [words[:1]])  # warm-up
    return {"one": _timed(lambda: detector.detect([image], [words[:1]]), args.repeats),
            "many": _timed(lambda: detector.detect([image], [many]), args.repeats)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="time GroundingDinoDetector on this folder / cached hub id "
                             "(default: random full-size swin-T forward)")
    parser.add_argument("--height", type=int, default=800)
    parser.add_argument("--width", type=int, default=1066)
    parser.add_argument("--classes", type=int, default=20, help="K for the K-class caption")
    parser.add_argument("--repeats", type=int, default=1, help="runs per timing (best kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="auto", help="with --model: cpu, cuda, ...")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    what = f"detector {args.model}" if args.model else "random GroundingDinoConfig() (swin-T)"
    print(f"{what}, image {args.height}x{args.width}, torch threads {torch.get_num_threads()}")
    times = bench_detector(args) if args.model else bench_random(args)
    k = args.classes
    print(f"1 class:              {times['one']:.2f} s")
    print(f"{k} classes, 1 pass:   {times['many']:.2f} s")
    print(f"ratio {k}-class / 1-class:          {times['many'] / times['one']:.2f}")
    print(f"per-class loop ({k} passes, est.):  {k * times['one']:.2f} s")
    print(f"ratio per-class loop / one pass:    {k * times['one'] / times['many']:.2f}")


if __name__ == "__main__":
    main()
