"""ovperc's side of ``bench/peer.sh``, and its report: the same images, models and box counts.

``prepare`` builds (once) the random models of the real architectures both sides run:
Grounding DINO swin-T (``bench/common.py``; its ``vocab.txt`` also becomes the peer's BERT
vocabulary, so a prompt is the same tokens on both sides), SAM ViT-H (what the peer
hard-codes; the peer reads this very file) and SAM ViT-B (ovperc's default), and writes the
images as PNG files that both sides read from disk. It prints the paths as JSON.

``time`` runs ``Pipeline(detector=GroundingDinoDetector, segmenter=SamSegmenter, nms="none")``
on each image at each K, once with SAM ViT-H (the peer's architectures) and once with ViT-B
(ovperc's defaults, GD-T + SAM-B). Random weights give no meaningful confidences, so the
detector keeps the ``boxes_per_class x K`` most confident boxes of an image, the number the
peer's harness lets through (``--boxes-per-class`` of each per-class call).

``report`` prints the table of both sides, and the ratios peer / ovperc per K.

    python bench/peer_ovperc.py prepare --images 1 --out DIR
    python bench/peer_ovperc.py time --paths DIR/paths.json --ks 1,5,20 --out ovperc.json
    python bench/peer_ovperc.py report ovperc.json peer.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import common


def prepare(models_dir: str | None, count: int, height: int, width: int, out: Path) -> dict[str, Any]:
    """Build the models, write ``count`` images; returns (and writes) their paths."""
    from PIL import Image

    root = common.models_root(models_dir)
    gdino = common.build_grounding_dino(root / "gdino-swin-t")
    paths: dict[str, Any] = {
        "gdino": str(gdino), "vocab": str(gdino / "vocab.txt"),
        "sam_vit_h": str(common.build_sam(root, "vit_h")),
        "sam_vit_b": str(common.build_sam(root, "vit_b")),
        "classes": list(common.BENCH_CLASSES), "images": [],
    }
    out.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        path = out / f"image_{index}.png"
        Image.fromarray(common.random_image(height, width, seed=index)).save(path)
        paths["images"].append(str(path))
    (out / "paths.json").write_text(json.dumps(paths, indent=2))
    return paths


def time_ovperc(paths: dict[str, Any], ks: list[int], sams: list[str], boxes_per_class: int,
                threads: int, out: Path) -> None:
    """Time the chain per image, K and SAM; write the records to ``out``."""
    import torch

    from ovperc import Pipeline
    from ovperc.stages import GroundingDinoDetector, SamSegmenter

    torch.set_num_threads(threads)
    detector = GroundingDinoDetector(paths["gdino"], device="cpu", box_threshold=0.0,
                                     text_threshold=0.0).load()
    records = []
    for sam in sams:
        segmenter = SamSegmenter(paths[f"sam_{sam}"], variant=sam, device="cpu").load()
        top = common.TopBoxes(detector, per_class=boxes_per_class)
        pipe = Pipeline(detector=top, segmenter=segmenter, nms="none")
        for k in ks:
            classes = paths["classes"][:k]
            for index, image in enumerate(paths["images"]):
                wall, cpu = time.perf_counter(), time.process_time()
                result = pipe(image, classes=classes)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                record = {"side": "ovperc", "sam": sam, "k": k, "image": index, "wall_s": wall,
                          "cpu_s": cpu, "boxes": len(result.detections),
                          "seconds": dict(result.timings), "load_avg": list(os.getloadavg())}
                records.append(record)
                print(f"ovperc sam={sam} K={k:2d} img={index} wall={wall:.1f}s cpu={cpu:.1f}s "
                      f"boxes={len(result.detections)} detect={result.timings.get('detect', 0):.1f}s "
                      f"segment={result.timings.get('segment', 0):.1f}s load={os.getloadavg()[0]:.1f}",
                      flush=True)
                # after every image: an interrupted run keeps what it measured
                out.write_text(json.dumps({"threads": threads, "torch": torch.__version__,
                                           "records": records}, indent=2))
        del pipe, segmenter


def _mean(records: list[dict[str, Any]], side: str, sam: str, k: int, key: str) -> float | None:
    values = [r[key] for r in records if r["side"] == side and r["sam"] == sam and r["k"] == k]
    return statistics.mean(values) if values else None


def report(files: list[Path]) -> list[dict[str, Any]]:
    """Print per K: seconds per image of each side, and peer / ovperc (wall and CPU time)."""
    records = [r for f in files for r in json.loads(Path(f).read_text())["records"]]
    ks = sorted({r["k"] for r in records})
    columns = [("peer", "vit_h"), ("ovperc", "vit_h"), ("ovperc", "vit_b")]
    names = {("peer", "vit_h"): "peer GD-T + SAM-H", ("ovperc", "vit_h"): "ovperc GD-T + SAM-H",
             ("ovperc", "vit_b"): "ovperc GD-T + SAM-B"}
    print("seconds per image (mean over images): wall, cpu (this process, all threads); boxes to SAM")
    print(f"{'':>3} | " + " | ".join(f"{names[c]:<21}" for c in columns))
    print(f"{'K':>3} | " + " | ".join(f"{'wall':>7} {'cpu':>7} {'boxes':>5}" for _ in columns))
    rows = []
    for k in ks:
        cells = {c: {key: _mean(records, *c, k, key) for key in ("wall_s", "cpu_s", "boxes")}
                 for c in columns}
        print(f"{k:>3} | " + " | ".join(
            f"{_fmt(cells[c]['wall_s'])} {_fmt(cells[c]['cpu_s'])} {_fmt(cells[c]['boxes'], 5, 0)}"
            for c in columns))
        rows.append({"k": k, **{f"{s}_{m}": v for (s, m), v in cells.items()}})
    print("RATIO peer (GD-T + SAM-H) / ovperc, seconds per image, wall (cpu):")
    for row in rows:
        peer = row["peer_vit_h"]
        parts = []
        for sam, label in (("vit_h", "same models, GD-T + SAM-H"),
                           ("vit_b", "ovperc defaults, GD-T + SAM-B")):
            ours = row[f"ovperc_{sam}"]
            if peer["wall_s"] and ours["wall_s"]:
                parts.append(f"{label}: {peer['wall_s'] / ours['wall_s']:.1f}x "
                             f"({peer['cpu_s'] / ours['cpu_s']:.1f}x)")
        print(f"  K={row['k']:>2}: " + ("; ".join(parts) or "not measured on both sides"))
    return rows


def _fmt(value: float | None, width: int = 7, digits: int = 1) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("prepare", help="build the models and write the images")
    build.add_argument("--models-dir", default=None)
    build.add_argument("--images", type=int, default=1)
    build.add_argument("--height", type=int, default=480)
    build.add_argument("--width", type=int, default=640)
    build.add_argument("--out", type=Path, required=True)
    timing = sub.add_parser("time", help="time ovperc's chain at each K")
    timing.add_argument("--paths", type=Path, required=True, help="the paths.json prepare wrote")
    timing.add_argument("--ks", default="1,5,20")
    timing.add_argument("--sams", default="vit_h,vit_b")
    timing.add_argument("--boxes-per-class", type=int, default=2)
    timing.add_argument("--threads", type=int, default=2)
    timing.add_argument("--out", type=Path, required=True)
    summary = sub.add_parser("report", help="the table and the ratios")
    summary.add_argument("files", type=Path, nargs="+")
    args = parser.parse_args(argv)
    if args.command == "prepare":
        print(json.dumps(prepare(args.models_dir, args.images, args.height, args.width, args.out)))
    elif args.command == "time":
        time_ovperc(json.loads(args.paths.read_text()), [int(k) for k in args.ks.split(",")],
                    args.sams.split(","), args.boxes_per_class, args.threads, args.out)
    else:
        report(args.files)


if __name__ == "__main__":
    main()
