"""Detector backends side by side: detect seconds at K = 1 and K = 20 classes, one image.

Times ``detector.detect([image], [classes])`` end to end (image processing, tokenising,
forward, post-processing) for each backend at its real size with random weights
(:mod:`zero_shot_models`; random weights cost the same time as trained ones; nothing is
downloaded), each loaded through the registry from its folder, on the same image in one
run, in turns (backend a K=1, a K=20, b K=1, ...).

    python bench/bench_backends.py                          # all four, 480x640, 2 repeats
    python bench/bench_backends.py --only owlv2-base omdet-turbo --repeats 3
"""

from __future__ import annotations

import argparse
from typing import Any

import common
import zero_shot_models

BACKENDS = ("gdino-tiny", "mm-gdino-tiny", "owlv2-base", "omdet-turbo")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--classes", type=int, default=20, help="K for the many-class run")
    parser.add_argument("--device", default="cpu")
    common.add_common_args(parser)
    parser.set_defaults(repeats=2)
    args = parser.parse_args(argv)

    from ovperc.registry import build_stage

    common.setup_torch(args.threads)
    info = common.print_header("Detector backends: detect seconds at K = 1 and K = "
                               f"{args.classes}")
    folders = zero_shot_models.build_all(common.models_root(args.models_dir))
    image = common.random_image(args.height, args.width)
    words = list(common.BENCH_CLASSES)
    many = [words[k % len(words)] + ("" if k < len(words) else f" {k // len(words)}")
            for k in range(args.classes)]
    print(f"image {args.height}x{args.width}; K = {args.classes}: {', '.join(many)}")

    rows: dict[str, Any] = {}
    for name in args.only:
        detector = build_stage("detector", str(folders[name]), device=args.device).load()
        detector.detect([image], [many])  # warm-up
        timings = common.interleaved({
            "one": lambda d=detector: d.detect([image], [many[:1]]),
            "many": lambda d=detector: d.detect([image], [many]),
        }, args.repeats)
        params = sum(p.numel() for p in detector._model.parameters()) / 1e6
        rows[name] = {"stage": type(detector).__name__, "params_m": round(params, 1),
                      "k1": timings["one"].median, "k_many": timings["many"].median,
                      "k1_runs": timings["one"].times, "k_many_runs": timings["many"].times}
        print(f"{name:14s} {type(detector).__name__:22s} {params:7.1f}M params  "
              f"K=1 {timings['one']}  K={args.classes} {timings['many']}")
        del detector

    print()
    print(f"| backend | stage | params (built) | K=1 s | K={args.classes} s | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['stage']} | {row['params_m']}M | {row['k1']:.2f} | "
              f"{row['k_many']:.2f} | {row['k_many'] / row['k1']:.2f} |")
    results = {"machine": info, "image": [args.height, args.width], "classes": args.classes,
               "repeats": args.repeats, "backends": rows}
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
