"""Labelling throughput: ``ovperc label`` on a folder vs the compute floor of the same chain.

The folder holds ``--images`` JPEG files. The label side is the code ``ovperc label`` runs:
the options are parsed by the real command-line parser, the pipeline is built by the
CLI's ``build_pipeline`` and ``label_folder`` scans, decodes in background threads,
batches, runs the chain and writes a YOLO dataset with masks (images copied, files
written atomically, manifest kept). The floor is the same ``Pipeline.run_batch`` calls on
the same images already decoded in memory, with nothing written. Models are loaded and
warmed up before timing, so both sides measure steady-state work.

Default chain: the packaged ``shapes-tiny`` preset (toy tagger, Grounding DINO, SAM and
CLIP trained on the synthetic shapes world, all four stages) on generated shapes scenes,
so every image gets real boxes and masks to write. These models are small, so the ratio
is a strict one: decoding and writing are a larger share of a tiny model's time than of a
full-size one's. ``--detector`` / ``--segmenter`` swap in other models, e.g. the random
full-size swin-T with a 256/384 px processor that ``bench/common.py`` builds.
Target: label images/s >= 0.95 x floor images/s.

    python bench/bench_label.py                           # 40 images, batch 4, 3 repeats
    python bench/bench_label.py --images 80 --cli         # also time the CLI subprocess once
    python bench/bench_label.py --detector /tmp/ovperc-bench-models/gdino-swin-t-256x384 \
        --box-threshold 0.8 --classes "person, car"
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--classes", default="red circle, blue square, green triangle, yellow star")
    parser.add_argument("--preset", default="shapes-tiny")
    parser.add_argument("--detector", default=None, help="another detector (folder)")
    parser.add_argument("--segmenter", default=None, help="another SAM (.pth or name)")
    parser.add_argument("--box-threshold", default=None)
    parser.add_argument("--cli", action="store_true",
                        help="also run `ovperc label` once as a subprocess (start-up and "
                             "model loading included)")
    common.add_common_args(parser)
    args = parser.parse_args(argv)

    from PIL import Image

    from ovperc.cli import build_parser
    from ovperc.cli.options import build_pipeline, choose_preset, ontology_from_args, run_signature
    from ovperc.image import load_image
    from ovperc.labeling.runner import label_folder
    from ovperc.shapes.world import generate_scenes

    common.setup_torch(args.threads)
    info = common.print_header("labelling throughput: ovperc label vs compute floor")
    work = Path(tempfile.mkdtemp(prefix="ovperc-bench-label-"))
    source, out = work / "images", work / "dataset"
    source.mkdir()
    scenes = generate_scenes(args.images, seed=0, size=(args.width, args.height))
    for index, scene in enumerate(scenes):
        Image.fromarray(scene.image).save(source / f"image_{index:04d}.jpg", quality=90)
    del scenes

    label_args = ["label", str(source), "--out", str(out), "--classes", args.classes,
                  "--preset", args.preset, "--masks", "--batch-size", str(args.batch_size),
                  "--device", "cpu", "--no-progress", "--overwrite"]
    for option in ("detector", "segmenter", "box_threshold"):
        if getattr(args, option) is not None:
            label_args += ["--" + option.replace("_", "-"), str(getattr(args, option))]
    print("label options: ovperc " + " ".join(label_args))
    cli = build_parser().parse_args(label_args)
    preset = choose_preset(cli, masks=True, tags=False)  # --preset wins
    pipeline = build_pipeline(cli, preset=preset)
    ontology = ontology_from_args(cli)
    arrays = [load_image(path) for path in sorted(source.iterdir())]
    pipeline.run_batch(arrays[:args.batch_size], classes=ontology)  # load models, warm up

    def label() -> None:
        shutil.rmtree(out, ignore_errors=True)
        report = label_folder(
            pipeline, cli.source, cli.out, classes=ontology, format=cli.format, masks=True,
            images=cli.images, batch_size=cli.batch_size, overwrite=True,
            signature=run_signature(cli, preset=preset), decode_workers=cli.decode_workers,
            max_pixels=cli.max_pixels, progress=False)
        assert report.images_done == args.images, report.summary()
        stats["boxes"] = sum(report.detections_per_class.values())
        stats["stages"] = report.time_per_stage
        stats["elapsed"] = report.elapsed_s

    def floor() -> None:
        for start in range(0, len(arrays), args.batch_size):
            pipeline.run_batch(arrays[start:start + args.batch_size], classes=ontology)

    stats: dict[str, Any] = {}
    timings = common.interleaved({"label": label, "floor": floor}, args.repeats)
    n = args.images
    ratio = timings["floor"].median / timings["label"].median
    print(f"{n} images {args.height}x{args.width}, batch {args.batch_size}, "
          f"{stats['boxes']} boxes written with masks")
    print(f"label_folder (ovperc label): {timings['label']}  "
          f"= {n / timings['label'].median:.3f} images/s")
    print(f"compute floor (run_batch):   {timings['floor']}  "
          f"= {n / timings['floor'].median:.3f} images/s")
    print("label run, seconds per stage (last run): "
          + ", ".join(f"{k} {v:.2f}" for k, v in stats["stages"].items()))
    models = sum(v for k, v in stats["stages"].items() if k not in ("decode", "write"))
    inside = models / stats["elapsed"]
    print(f"last label run: {inside:.3f} of its {stats['elapsed']:.2f} s inside the model stages "
          f"(waiting for decoding {stats['stages'].get('decode', 0):.2f} s, writing "
          f"{stats['stages'].get('write', 0):.2f} s)")
    print(f"RATIO label throughput / floor throughput = {ratio:.3f}  (target >= 0.95); "
          f"cpu time {timings['floor'].cpu_median / timings['label'].cpu_median:.3f}")
    results: dict[str, Any] = {"ratio": ratio, "label_s": timings["label"].times,
                               "floor_s": timings["floor"].times, "images": n,
                               "boxes": stats["boxes"], "stages": stats["stages"],
                               "share_in_model_stages": inside,
                               "machine": info}
    if args.cli:
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ovperc", *label_args], check=True,
                       stdout=subprocess.DEVNULL)
        results["cli_s"] = time.perf_counter() - start
        print(f"`ovperc label` subprocess, start-up and model loading included: "
              f"{results['cli_s']:.2f} s = {n / results['cli_s']:.3f} images/s")
    shutil.rmtree(work, ignore_errors=True)
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
