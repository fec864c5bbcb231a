"""Class scaling of Grounding DINO: K classes in one pass vs 1 class, and the per-class loop.

Times ``GroundingDinoDetector.detect`` end to end (tokenising, forward, post-processing)
on a random full-size model saved like the hub's ``IDEA-Research/grounding-dino-tiny``
(``GroundingDinoConfig()``: swin-T + BERT-base, processor 800/1333; random weights cost the
same time as trained ones; nothing is downloaded), or on a real model with ``--model``.

- one pass, 1 class vs K classes (ovperc's way: every class in one caption);
- the per-class loop other tools run: K passes of one class each, measured.

Targets: K-class / 1-class <= 1.3 (K = 20).

    python bench/bench_detector.py                        # 480x640 image, K = 20, 3 repeats
    python bench/bench_detector.py --classes 40 --loop-repeats 0
    python bench/bench_detector.py --model ./grounding-dino-tiny --height 600 --width 800
"""

from __future__ import annotations

import argparse
from typing import Any

import common


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None,
                        help="a Grounding DINO folder or cached hub id (default: random swin-T)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--classes", type=int, default=20, help="K for the K-class caption")
    parser.add_argument("--loop-repeats", type=int, default=1,
                        help="runs of the per-class loop (K passes each; 0 skips it)")
    parser.add_argument("--device", default="cpu")
    common.add_common_args(parser)
    args = parser.parse_args(argv)

    from ovperc.stages import GroundingDinoDetector

    common.setup_torch(args.threads)
    info = common.print_header("Grounding DINO class scaling")
    model = args.model or str(common.models(args.models_dir)["gdino"])
    detector = GroundingDinoDetector(model, device=args.device).load()
    image = common.random_image(args.height, args.width)
    words = list(common.BENCH_CLASSES)
    many = [words[k % len(words)] + ("" if k < len(words) else f" {k // len(words)}")
            for k in range(args.classes)]
    print(f"model {model}, image {args.height}x{args.width}, K = {args.classes}: "
          f"{', '.join(many)}")

    detector.detect([image], [many[:1]])  # warm-up
    timings = common.interleaved({
        "one": lambda: detector.detect([image], [many[:1]]),
        "many": lambda: detector.detect([image], [many]),
    }, args.repeats)
    one, k = timings["one"].median, args.classes
    print(f"1 class, one pass:            {timings['one']}")
    print(f"{k} classes, one pass:          {timings['many']}")
    results: dict[str, Any] = {
        "one_s": timings["one"].times, "many_s": timings["many"].times,
        "ratio_many_one": timings["many"].median / one, "machine": info,
        "cpu_ratio_many_one": timings["many"].cpu_median / timings["one"].cpu_median,
    }
    print(f"RATIO {k}-class / 1-class (one pass) = {results['ratio_many_one']:.3f}  "
          "(target <= 1.3); cpu time "
          f"{results['cpu_ratio_many_one']:.3f}")

    if args.loop_repeats:
        loop = common.median_time(
            lambda: [detector.detect([image], [[name]]) for name in many], args.loop_repeats)
        results["loop_s"] = loop.times
        results["ratio_loop_one"] = loop.median / one
        results["ratio_loop_many"] = loop.median / timings["many"].median
        print(f"per-class loop ({k} passes):   {loop}")
        print(f"RATIO per-class loop / 1-class = {results['ratio_loop_one']:.2f}; "
              f"per-class loop / one {k}-class pass = {results['ratio_loop_many']:.2f}")
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
