"""GPU throughput: the full chain in images/s at batch 1 and 8, per dtype; SAM decode; peak memory.

The chain is ``Pipeline(detector=GroundingDinoDetector, segmenter=SamSegmenter,
classifier=ClipClassifier)``, ovperc's default models at their real sizes with random
weights (Grounding DINO swin-T, SAM ViT-B, CLIP ViT-B-32; ``bench/common.py`` builds them,
nothing is downloaded), loaded through the public constructors with ``dtype=`` each of
``--dtypes``. Every image of a batch has ``--classes`` classes and keeps its ``--boxes`` most
confident boxes (random confidences mean nothing, so a threshold cannot fix the work), which
SAM segments and CLIP rescores. Images are decoded beforehand; the figure is the models'
rate through ``Pipeline.run_batch`` (masks and scores back on the host, so every timed call
ends synchronised; ``torch.cuda.synchronize`` is called around the clock as well).

Printed, all measured in this run: images/s per (dtype, batch), the batch-8 / batch-1 and
dtype / float32 ratios, SAM's decode of ``--sam-boxes`` boxes in one call against
``SamSegmenter``'s cpu groups of 4 and one by one (boxes/s and their ratio, with the
upsampling to image size the stage does), and the peak GPU memory of each run
(``torch.cuda.max_memory_allocated``; on a cpu the process's peak RSS). Target on one
H100-class GPU: >= 10 images/s.

``--tiny`` runs the same code on tiny random models of the same architectures (the test
suite's builders) on small images, for a smoke run on a cpu in seconds; half precision is
GPU only in ovperc, so on a cpu those dtypes are reported as skipped.

    bash bench/gpu.sh                                   # cuda, real sizes, the three dtypes
    python bench/bench_gpu.py --device cpu --tiny       # smoke run
"""

from __future__ import annotations

import argparse
import functools
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common

ROOT = Path(__file__).resolve().parents[1]
TARGET_IMAGES_PER_S = 10.0


def _models(args: argparse.Namespace) -> dict[str, Any]:
    """Paths of the detector, segmenter and CLIP, and the SAM variant (None: from its .json)."""
    if not args.tiny:
        return {**common.models(args.models_dir), "variant": "vit_b"}
    sys.path.insert(0, str(ROOT))
    from tests.tiny.clip import build_tiny_clip
    from tests.tiny.gdino import build_tiny_grounding_dino

    folder = Path(tempfile.mkdtemp(prefix="ovperc-bench-gpu-tiny-"))
    return {"gdino": build_tiny_grounding_dino(folder / "gdino"),
            "sam": common.build_tiny_sam(folder / "sam"),
            "clip": build_tiny_clip(folder / "clip"), "variant": None}


class _Clock:
    """Wall time with the device synchronised before reading the clock."""

    def __init__(self, device: Any) -> None:
        import torch

        self.cuda = device.type == "cuda"
        self.torch = torch

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def rate(self, fn: Callable[[], object], items: int, seconds: float, min_runs: int) -> dict[str, Any]:
        """Items per second of ``fn`` after one warm-up call, over >= ``min_runs`` and ``seconds``."""
        fn()
        self.sync()
        times: list[float] = []
        while len(times) < min_runs or sum(times) < seconds:
            start = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - start)
        return {"rate": items * len(times) / sum(times), "runs": len(times),
                "median_rate": items / statistics.median(times)}

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_mib(self) -> float:
        """Peak GPU memory allocated since :meth:`reset_peak`; on a cpu this process's peak RSS."""
        if self.cuda:
            return self.torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _chain(paths: dict[str, Any], device: str, dtype: str, boxes: int) -> Any:
    from ovperc import Pipeline
    from ovperc.stages import ClipClassifier, ClipModel, GroundingDinoDetector, SamSegmenter

    detector = GroundingDinoDetector(str(paths["gdino"]), device=device, dtype=dtype,
                                     box_threshold=0.0, text_threshold=0.0)
    segmenter = SamSegmenter(paths["sam"], device=device, dtype=dtype, variant=paths["variant"])
    classifier = ClipClassifier(ClipModel(str(paths["clip"]), device=device, dtype=dtype),
                                mode="rescore")
    detector.load()
    segmenter.load()
    return Pipeline(detector=common.TopBoxes(detector, per_image=boxes), segmenter=segmenter,
                    classifier=classifier, nms="none")


def _sam_decode(segmenter: Any, image: Any, count: int, clock: _Clock, seconds: float,
                min_runs: int) -> dict[str, Any]:
    """Boxes/s of SamSegmenter's decode (+ upsampling) in one call, in groups of 4, one by one."""
    import torch

    xyxy = common.random_boxes(count, *image.shape[:2])
    with torch.inference_mode():
        pixels, [input_size] = segmenter._preprocess([image])
        embed = clock.rate(lambda: segmenter.sam.image_encoder(pixels), 1, seconds, min_runs)
        embedding = segmenter.sam.image_encoder(pixels)[0]
        default = segmenter.max_boxes_per_call
        out: dict[str, Any] = {"embed_images_per_s": embed["rate"], "boxes": count}
        try:
            for name, group in (("one_call", count), ("groups_of_4", 4), ("one_by_one", 1)):
                segmenter.max_boxes_per_call = group
                out[name] = clock.rate(lambda: segmenter._decode(embedding, xyxy, input_size,
                                                                 image.shape[:2]),
                                       count, seconds, min_runs)["rate"]
        finally:
            segmenter.max_boxes_per_call = default
    return out


def _measure(pipe: Any, dtype: str, images: list[Any], ontology: Any, batches: list[int],
             clock: _Clock, rows: dict[int, dict[str, Any]], sam: dict[str, dict[str, Any]], *,
             seconds: float, min_runs: int, sam_boxes: int, deadline: float) -> None:
    """Chain images/s and peak memory per batch size into ``rows``; SAM's decode into ``sam``."""
    for batch in batches:
        if time.perf_counter() > deadline:
            print(f"{dtype} batch {batch}: skipped (time budget spent)")
            continue
        clock.reset_peak()
        run = functools.partial(pipe.run_batch, images[:batch], classes=ontology)
        measured = clock.rate(run, batch, seconds, min_runs)
        measured["peak_mib"] = clock.peak_mib()
        rows[batch] = measured
        print(f"chain {dtype:<8} batch {batch}: {measured['rate']:8.2f} images/s "
              f"({measured['runs']} runs; median run {measured['median_rate']:.2f} images/s); "
              f"peak {'GPU memory' if clock.cuda else 'RSS'} {measured['peak_mib']:.0f} MiB")
    if time.perf_counter() > deadline:
        print(f"SAM {dtype}: skipped (time budget spent)")
        return
    s = sam[dtype] = _sam_decode(pipe.segmenter, images[0], sam_boxes, clock, seconds, min_runs)
    print(f"SAM {dtype:<8} decode {s['boxes']} boxes (+ upsampling): one call "
          f"{s['one_call']:.0f} boxes/s, groups of 4 {s['groups_of_4']:.0f}, one by one "
          f"{s['one_by_one']:.0f}; embedding {s['embed_images_per_s']:.2f} images/s")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny random models: a smoke run")
    parser.add_argument("--dtypes", default="float32,float16,bfloat16")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--classes", type=int, default=10, help="classes per image (<= 20)")
    parser.add_argument("--boxes", type=int, default=10, help="boxes kept per image")
    parser.add_argument("--sam-boxes", type=int, default=None,
                        help="boxes of the SAM decode test (default 50; tiny: 12)")
    parser.add_argument("--height", type=int, default=None, help="default 480 (tiny: 96)")
    parser.add_argument("--width", type=int, default=None, help="default 640 (tiny: 128)")
    parser.add_argument("--seconds", type=float, default=None,
                        help="least time per measurement (default 5; tiny: 0)")
    parser.add_argument("--min-runs", type=int, default=None, help="least runs per measurement "
                        "after one warm-up (default 3; tiny: 1)")
    parser.add_argument("--budget", type=float, default=420.0,
                        help="seconds after which the remaining measurements are skipped")
    common.add_common_args(parser)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    height = args.height or (96 if args.tiny else 480)
    width = args.width or (128 if args.tiny else 640)
    seconds = args.seconds if args.seconds is not None else (0.0 if args.tiny else 5.0)
    min_runs = args.min_runs or (1 if args.tiny else 3)
    sam_boxes = args.sam_boxes or (12 if args.tiny else 50)
    batches = [int(b) for b in args.batches.split(",")]
    if not 1 <= args.classes <= len(common.BENCH_CLASSES):
        parser.error(f"--classes must be 1..{len(common.BENCH_CLASSES)}, got {args.classes}")

    from ovperc import Ontology
    from ovperc.device import resolve_device

    common.setup_torch(args.threads)
    device = resolve_device(args.device)
    info = common.print_header(f"GPU throughput: GD-T + SAM-B + CLIP-B chain on {device}"
                               + (" (tiny models)" if args.tiny else ""))
    clock = _Clock(device)
    paths = _models(args)
    images = [common.random_image(height, width, seed=i) for i in range(max(batches))]
    ontology = Ontology(list(common.BENCH_CLASSES[:args.classes]))
    print(f"images {height}x{width}, {args.classes} classes, {args.boxes} boxes per image to SAM "
          f"and CLIP; >= {min_runs} runs and >= {seconds:g} s per figure after a warm-up")

    chain: dict[str, dict[int, dict[str, Any]]] = {}
    sam: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for dtype in args.dtypes.split(","):
        try:
            pipe = _chain(paths, args.device, dtype, args.boxes)
        except ValueError as error:  # half precision on a cpu: ovperc refuses it, says why
            print(f"{dtype}: skipped ({error})")
            skipped[dtype] = str(error)
            continue
        chain[dtype] = {}
        try:
            _measure(pipe, dtype, images, ontology, batches, clock, chain[dtype], sam,
                     seconds=seconds, min_runs=min_runs, sam_boxes=sam_boxes,
                     deadline=started + args.budget)
        except Exception as error:  # one dtype failing must not lose the others' figures
            print(f"{dtype}: failed ({type(error).__name__}: {error})")
            skipped[dtype] = f"{type(error).__name__}: {error}"
        finally:
            pipe = None
            if clock.cuda:
                clock.torch.cuda.empty_cache()

    print("RATIOS (this run)")
    for dtype, rows in chain.items():
        if len(batches) > 1 and batches[0] in rows and batches[-1] in rows:
            print(f"  {dtype}: batch {batches[-1]} / batch {batches[0]} images/s = "
                  f"{rows[batches[-1]]['rate'] / rows[batches[0]]['rate']:.2f}")
    for dtype, rows in chain.items():
        if dtype != "float32" and "float32" in chain:
            print(f"  {dtype} / float32 images/s: " + ", ".join(
                f"batch {b} {rows[b]['rate'] / chain['float32'][b]['rate']:.2f}"
                for b in batches if b in rows and b in chain["float32"]))
    for dtype, s in sam.items():
        print(f"  SAM {dtype}: one call / groups of 4 = {s['one_call'] / s['groups_of_4']:.2f}x, "
              f"one call / one by one = {s['one_call'] / s['one_by_one']:.2f}x (boxes/s)")
    best = max(((row["rate"], dtype, batch) for dtype, rows in chain.items()
                for batch, row in rows.items()), default=None)
    if best is not None:
        holds = "holds" if best[0] >= TARGET_IMAGES_PER_S else "does not hold"
        where = ("" if clock.cuda and not args.tiny
                 else " (not the target's conditions: tiny models or no GPU)")
        print(f"TARGET >= {TARGET_IMAGES_PER_S:g} images/s: best {best[0]:.2f} images/s "
              f"({best[1]}, batch {best[2]}): {holds}{where}")
    elapsed = time.perf_counter() - started
    print(f"whole run {elapsed:.0f} s")
    results = {"chain": chain, "sam": sam, "skipped": skipped, "machine": info,
               "height": height, "width": width, "classes": args.classes, "boxes": args.boxes,
               "tiny": args.tiny, "elapsed_s": elapsed}
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
