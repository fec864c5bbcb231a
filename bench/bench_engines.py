"""Throughput of ``ovperc label`` on the local engine against the Ray engine (1..N workers).

Labels one folder of generated images with each engine into fresh datasets and prints
images/s. Tiny random models of the real architectures by default (weights do not change
the cost of a forward, only the model size does); pass ``--detector``/``--segmenter`` to
time real ones. Ray runs on one local instance started once (its start-up time is printed
apart); each Ray run includes starting its actors and loading the models in them. The
local engine runs first and again last, to show how much the machine's load drifted.

    python bench/bench_engines.py --images 40 --workers 1 2
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _make_images(folder: Path, n: int, width: int, height: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        image = (rng.random((height, width, 3)) * 80 + 60).astype(np.uint8)
        x, y = rng.integers(0, width // 2), rng.integers(0, height // 2)
        image[y : y + height // 3, x : x + width // 3] = rng.integers(0, 255, 3)
        path = folder / f"part{i % 4}" / f"img{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=90)


def _tiny_models(folder: Path) -> tuple[str, str]:
    sys.path.insert(0, str(ROOT))
    from tests.tiny.gdino import build_tiny_grounding_dino
    from tests.tiny.sam import build_tiny_sam

    return str(build_tiny_grounding_dino(folder / "gdino")), str(build_tiny_sam(folder / "sam"))


def _pipeline(detector: str, segmenter: str | None):
    from ovperc import Pipeline

    preset = "detect+segment" if segmenter else "detect"
    kwargs = {"segmenter": segmenter} if segmenter else {}
    return Pipeline.from_preset(preset, detector=detector, device="cpu",
                                options={"detector": {"box_threshold": 0.1, "text_threshold": 0.1}},
                                **kwargs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="Ray actor counts to time (each gets CPUs / workers cores)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--detector", help="Grounding DINO folder (default: a tiny random one)")
    parser.add_argument("--segmenter", help="SAM checkpoint (default: a tiny random one)")
    parser.add_argument("--no-masks", action="store_true", help="detect only")
    parser.add_argument("--classes", default="person, car, dog, bicycle")
    args = parser.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import torch

    from ovperc.labeling.ray_engine import RayEngine
    from ovperc.labeling.runner import label_folder

    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        detector, segmenter = args.detector, args.segmenter
        if detector is None or (segmenter is None and not args.no_masks):
            tiny_d, tiny_s = _tiny_models(tmp_path / "models")
            detector = detector or tiny_d
            segmenter = segmenter or tiny_s
        if args.no_masks:
            segmenter = None
        src = tmp_path / "src"
        _make_images(src, args.images, args.width, args.height)
        factory = functools.partial(_pipeline, detector, segmenter)
        common = {"classes": args.classes, "format": "coco", "masks": segmenter is not None,
                  "batch_size": args.batch_size, "progress": False, "signature": {"bench": 1}}

        print(f"{args.images} images {args.width}x{args.height}, batch {args.batch_size}, "
              f"{'detect+segment' if segmenter else 'detect'}, {cpus} CPUs, "
              f"load average before: {os.getloadavg()[0]:.2f}")
        rows = []
        report = label_folder(factory(), src, tmp_path / "local", **common)
        rows.append(("local", f"1 process, {torch.get_num_threads()} threads", report))

        start = time.perf_counter()
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
        print(f"ray.init (local instance): {time.perf_counter() - start:.1f} s")
        try:
            for workers in args.workers:
                engine = RayEngine(factory, num_workers=workers)
                report = label_folder(factory(), src, tmp_path / f"ray{workers}", engine=engine,
                                      **common)
                threads = max(1, cpus // workers)
                rows.append(("ray", f"{workers} actors x {threads} threads", report))
        finally:
            ray.shutdown()
        # the local engine once more, last: the load on a shared machine drifts during a run
        report = label_folder(factory(), src, tmp_path / "local-again", **common)
        rows.append(("local", f"again, {torch.get_num_threads()} threads", report))

        print(f"load average after: {os.getloadavg()[0]:.2f}")
        print(f"{'engine':8} {'workers':24} {'images':>6} {'seconds':>8} {'images/s':>9} "
              f"{'ratio':>6} {'write ms/img':>12}")
        base = rows[0][2].images_per_second
        for engine_name, workers_text, rep in rows:
            ratio = rep.images_per_second / base if base else float("nan")
            write_ms = 1000 * rep.time_per_stage.get("write", 0.0) / max(rep.done_this_run, 1)
            print(f"{engine_name:8} {workers_text:24} {rep.done_this_run:6d} {rep.elapsed_s:8.1f} "
                  f"{rep.images_per_second:9.3f} {ratio:6.2f} {write_ms:12.1f}")
        same = all(_tree(tmp_path / f"ray{w}") == _tree(tmp_path / "local") for w in args.workers)
        print(f"datasets byte-identical to local: {same}"
              + ("" if same else " (float sums differ with the threads per worker)"))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".ovperc" not in p.parts and p.name != "report.json"}


if __name__ == "__main__":
    main()
