"""Memory over a long run: peak RSS of ``ovperc label`` after 100 vs after 1,000 images.

Runs the real command in a subprocess on a folder of generated images and reads the
child's memory from ``/proc/<pid>/status`` while it works; the number of finished images
comes from the run's manifest log (``.ovperc/done.jsonl``, one line per image). The
default chain is the packaged ``shapes-tiny`` preset (toy tagger, Grounding DINO, SAM and
CLIP trained on the synthetic shapes world), so every image gets real boxes and masks and
1,000 images take minutes on a CPU. Target: peak RSS grows < 5% from 100 to 1,000 images.

    python bench/bench_memory.py                           # 1,000 images, YOLO + masks
    python bench/bench_memory.py --format coco --images 300
    python bench/bench_memory.py -- --classes "red circle, blue square"   # extra label options
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common


def _status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (kB) of a live process, {} once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(1 for _ in handle)
    except OSError:
        return 0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000, help="images in the folder")
    parser.add_argument("--checkpoint", type=int, default=100, help="the early checkpoint")
    parser.add_argument("--size", type=int, default=192, help="image side in pixels")
    parser.add_argument("--format", default="yolo", choices=["yolo", "coco", "voc"])
    parser.add_argument("--preset", default="shapes-tiny")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument("--keep", default=None, help="keep the images and dataset in this folder")
    parser.add_argument("--segmenter", default="tiny",
                        help="SAM for the run: 'tiny' (a 128 px random SAM, so that the "
                             "preset's other models set the pace) or any --segmenter value")
    parser.add_argument("--models-dir", default=None, help="where the tiny SAM is kept")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("extra", nargs="*", help="more `ovperc label` options (after --)")
    args = parser.parse_args(argv)

    from ovperc.shapes.export import write_images
    from ovperc.shapes.world import generate_scenes

    info = common.print_header("memory: peak RSS of `ovperc label` over a long run")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ovperc-bench-mem-"))
    images, out = work / "images", work / "dataset"
    if not images.is_dir() or len(list(images.iterdir())) != args.images:
        shutil.rmtree(images, ignore_errors=True)
        start = time.perf_counter()
        for first in range(0, args.images, 100):  # in slices: never all scenes in memory
            count = min(100, args.images - first)
            scenes = generate_scenes(count, seed=first, size=(args.size, args.size))
            write_images(scenes, images, prefix=f"shapes_{first:05d}", suffix=".jpg")
        print(f"generated {args.images} images of {args.size}x{args.size} in "
              f"{time.perf_counter() - start:.1f} s")
    shutil.rmtree(out, ignore_errors=True)
    segmenter = args.segmenter
    if segmenter == "tiny":
        segmenter = str(common.build_tiny_sam(common.models_root(args.models_dir)))
    command = [sys.executable, "-m", "ovperc", "label", str(images), "--out", str(out),
               "--preset", args.preset, "--segmenter", segmenter, "--masks",
               "--format", args.format, "--no-progress", *args.extra]
    print("label command:", " ".join(command))

    log = out / ".ovperc" / "done.jsonl"
    samples: list[tuple[float, int, int, int]] = []  # (seconds, images done, rss kB, hwm kB)
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    while child.poll() is None:
        status = _status(child.pid)
        if status:
            samples.append((time.perf_counter() - start, _lines(log), status.get("VmRSS", 0),
                            status.get("VmHWM", 0)))
        time.sleep(args.interval)
    elapsed = time.perf_counter() - start
    output = child.stdout.read().decode(errors="replace") if child.stdout else ""
    peak_total = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # kB on Linux
    done = _lines(log)
    if child.returncode not in (0, 1) or done < args.images:
        print(output[-3000:])
        raise SystemExit(f"label run failed (exit {child.returncode}, {done} images done)")

    def hwm_at(count: int) -> tuple[int, float]:
        for seconds, n, _, hwm in samples:
            if n >= count:
                return hwm, seconds
        return samples[-1][3], samples[-1][0]

    early, early_s = hwm_at(args.checkpoint)
    late, late_s = hwm_at(done)
    growth = late / early - 1
    print(output.strip().splitlines()[0] if output.strip() else "")
    print(f"run: {done} images in {elapsed:.1f} s ({done / elapsed:.1f} images/s, start-up "
          f"included); {len(samples)} samples")
    print("images done -> peak RSS (MB), current RSS (MB)")
    marks = sorted({args.checkpoint, *range(0, args.images + 1, max(1, args.images // 10))})
    curve = []
    for mark in marks:
        row = next(((n, rss, hwm) for _, n, rss, hwm in samples if n >= mark), None)
        if row is not None:
            curve.append({"images": row[0], "rss_mb": row[1] / 1024, "peak_mb": row[2] / 1024})
            print(f"  {row[0]:5d}  {row[2] / 1024:8.1f}  {row[1] / 1024:8.1f}")
    print(f"peak RSS after {args.checkpoint} images: {early / 1024:.1f} MB (at {early_s:.1f} s)")
    print(f"peak RSS after {done} images: {late / 1024:.1f} MB (at {late_s:.1f} s)")
    print(f"peak RSS of the whole process (getrusage, final dataset files and exit included): "
          f"{peak_total / 1024:.1f} MB")
    print(f"RATIO growth = {100 * growth:+.2f}%  (target < 5%)")
    results = {"peak_early_mb": early / 1024, "peak_end_mb": late / 1024, "growth": growth,
               "process_peak_mb": peak_total / 1024,
               "images": done, "elapsed_s": elapsed, "curve": curve, "command": command,
               "machine": info}
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
