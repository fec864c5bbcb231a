"""Costs of the transformers segmenters and of SAM 3's many-class detection, on one image.

Every model is the real transformers class with its published configuration and random
weights (they cost the same time as trained ones), saved with ``save_pretrained`` and
loaded through ovperc's own stages; nothing is downloaded:

- ``sam2.1-tiny`` / ``-small`` / ``-base-plus`` / ``-large``: ``Sam2Model``, Hiera
  backbones as in the SAM 2.1 configs, 1024 px;
- ``sam-hq-vit-b``: ``SamHQModel`` with ``SamHQConfig()`` (ViT-B), 1024 px;
- ``edgetam``: ``EdgeTamModel`` with its timm RepViT-M1 backbone, 1024 px;
- ``sam3-tracker``: ``Sam3TrackerModel`` with ``Sam3TrackerConfig()`` (SAM 3's ViT), 1008 px;
- ``sam3``: ``Sam3Model`` with ``Sam3Config()`` (848M parameters) and a CLIP tokenizer
  built from open_clip's copy of the CLIP vocabulary.

For each segmenter (``HfSamSegmenter``): the image embedding, the decode of N boxes in
the groups the stage uses (mask decoder and ``post_process_masks``), and ``segment`` end to
end. For SAM 3 (``Sam3Detector``): ``detect`` with K = 1, 5, 20 classes, against K single-
class runs of transformers' own path (processor with one phrase, full forward, post-
processing; one such run is timed and multiplied by K, as each repeats the same work).

Target: SAM 3 with K = 20 classes <= 1.5x K = 1.

``--vit-layers N`` builds SAM 3's ViT (detector and tracker) with N of its 32 layers, for
a CPU that cannot afford the full one; the script then also prints the ratio expected at
full depth, with the vision pass scaled by 32 / N (marked as an extrapolation).

    python bench/bench_segmenters.py                                # every model, 20 boxes
    python bench/bench_segmenters.py --segmenters sam2.1-tiny edgetam --no-sam3
    python bench/bench_segmenters.py --vit-layers 8 --repeats 1     # a small CPU
"""

from __future__ import annotations

import argparse
import gzip
import json
from importlib import resources
from pathlib import Path
from typing import Any

import common

SAM3_VIT_LAYERS = 32
#: Hiera settings of the SAM 2.1 checkpoints (the ``sam2.1_hiera_*.yaml`` configs).
HIERA = {
    "sam2.1-tiny": {},  # Sam2Config()'s defaults are hiera-tiny
    "sam2.1-small": {"blocks_per_stage": [1, 2, 11, 2], "global_attention_blocks": [7, 10, 13]},
    "sam2.1-base-plus": {"hidden_size": 112, "num_attention_heads": 2, "blocks_per_stage": [2, 3, 16, 3],
                         "embed_dim_per_stage": [112, 224, 448, 896], "global_attention_blocks": [12, 16, 20],
                         "window_positional_embedding_background_size": [14, 14]},
    "sam2.1-large": {"hidden_size": 144, "num_attention_heads": 2, "blocks_per_stage": [2, 6, 36, 4],
                     "embed_dim_per_stage": [144, 288, 576, 1152], "window_size_per_stage": [8, 4, 16, 8],
                     "global_attention_blocks": [23, 33, 43]},
}
SEGMENTERS = (*HIERA, "sam-hq-vit-b", "edgetam", "sam3-tracker")


def build(name: str, folder: Path, vit_layers: int) -> Path:
    """Build (once) the random model ``name`` with its processor in ``folder``."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    import transformers as tf

    torch.manual_seed(0)
    if name in HIERA:
        hiera = {"model_type": "sam2_hiera_det_model", **HIERA[name]}
        channels = list(reversed(hiera.get("embed_dim_per_stage", [96, 192, 384, 768])))
        config = tf.Sam2Config(vision_config={"backbone_config": hiera, "backbone_channel_list": channels})
        model, processor = tf.Sam2Model(config), tf.Sam2Processor(image_processor=tf.Sam2ImageProcessor())
    elif name == "sam-hq-vit-b":
        model = tf.SamHQModel(tf.SamHQConfig())
        processor = tf.SamHQProcessor(image_processor=tf.SamImageProcessor())
    elif name == "edgetam":
        repvit = tf.TimmWrapperConfig(architecture="repvit_m1", model_args={
            "in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]})
        model = tf.EdgeTamModel(tf.EdgeTamConfig(vision_config={"backbone_config": repvit}))
        processor = tf.Sam2Processor(image_processor=tf.Sam2ImageProcessor())
    elif name == "sam3-tracker":
        model = tf.Sam3TrackerModel(tf.Sam3TrackerConfig(vision_config=_sam3_vision(vit_layers)))
        processor = tf.Sam3TrackerProcessor(image_processor=tf.Sam3ImageProcessor())
    elif name == "sam3":
        model = tf.Sam3Model(tf.Sam3Config(vision_config=_sam3_vision(vit_layers)))
        processor = tf.Sam3Processor(image_processor=tf.Sam3ImageProcessor(), tokenizer=clip_tokenizer())
    else:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(SEGMENTERS)}, sam3")
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _sam3_vision(layers: int) -> dict[str, Any]:
    """SAM 3's vision config, with ``layers`` of its 32 ViT layers (global attention kept
    on every 8th, as in the full model)."""
    every = max(1, layers // 4)
    globals_ = [i for i in range(layers) if i % every == every - 1][:4]
    return {"backbone_config": {"model_type": "sam3_vit_model", "num_hidden_layers": layers,
                                "global_attn_indexes": globals_}}


def clip_tokenizer() -> Any:
    """CLIP's byte-level BPE tokenizer from the vocabulary open_clip ships (49,408 tokens)."""
    from open_clip.tokenizer import bytes_to_unicode
    from transformers import CLIPTokenizer

    raw = resources.files("open_clip").joinpath("bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1:49152 - 256 - 2 + 1]]
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)


def bench_segmenter(name: str, folder: Path, image: Any, boxes: Any, args: argparse.Namespace) -> dict:
    import supervision as sv
    import torch

    from ovperc.stages import HfSamSegmenter

    segmenter = HfSamSegmenter(folder, device=args.device).load()
    model = segmenter.model
    params = sum(p.numel() for p in model.parameters()) / 1e6
    dets = sv.Detections(xyxy=boxes)
    inputs = segmenter._prompt_inputs(image, boxes)
    pixels = inputs["pixel_values"].to(segmenter.device, segmenter.dtype)
    with torch.inference_mode():
        embeddings = model.get_image_embeddings(pixels)
        timings = {
            "embed": common.median_time(lambda: model.get_image_embeddings(pixels), args.repeats),
            "decode": common.median_time(lambda: segmenter._decode(embeddings, inputs), args.repeats),
        }
    timings["segment"] = common.median_time(lambda: segmenter.segment([image], [dets]), args.repeats)
    print(f"{name} ({params:.1f}M parameters, {tuple(pixels.shape[-2:])} input):")
    for key, timing in timings.items():
        print(f"  {key:<8} {timing}")
    ratio = timings["decode"].median / timings["embed"].median
    print(f"  decode({len(boxes)} boxes) / embedding = {ratio:.3f}")
    return {"params_m": round(params, 1), **{k: t.median for k, t in timings.items()},
            "decode_over_embed": ratio}


def bench_sam3(folder: Path, image: Any, args: argparse.Namespace) -> dict:
    import torch
    from transformers import Sam3Model, Sam3Processor

    from ovperc.stages import Sam3Detector

    detector = Sam3Detector(folder, device=args.device).load()
    model = detector.model
    params = sum(p.numel() for p in model.parameters()) / 1e6
    classes = list(common.BENCH_CLASSES)
    counts = [k for k in (1, 5, 20) if k <= len(classes)]
    print(f"sam3 ({params:.0f}M parameters, ViT {args.vit_layers}/{SAM3_VIT_LAYERS} layers):")
    pixels = detector.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    with torch.inference_mode():
        vision = common.median_time(lambda: model.get_vision_features(pixel_values=pixels), args.repeats)
    print(f"  vision pass      {vision}")
    runs = {k: common.median_time(lambda k=k: detector.detect([image], [classes[:k]]), args.repeats)
            for k in counts}
    for k, timing in runs.items():
        print(f"  detect K={k:<3}     {timing}")
    reference_model = Sam3Model.from_pretrained(folder).eval()
    processor = Sam3Processor.from_pretrained(folder)

    def single() -> None:
        inputs = processor(images=image, text=classes[0], return_tensors="pt")
        with torch.inference_mode():
            outputs = reference_model(**inputs)
        processor.post_process_instance_segmentation(outputs, target_sizes=[image.shape[:2]])

    one = common.median_time(single, args.repeats)
    print(f"  one single-class transformers run  {one}")
    results: dict[str, Any] = {"params_m": round(params), "vit_layers": args.vit_layers,
                               "vision": vision.median, "single_class_run": one.median}
    base = runs[1].median
    for k, timing in runs.items():
        results[f"detect_k{k}"] = timing.median
        results[f"ratio_k{k}_k1"] = timing.median / base
        results[f"loop_k{k}_over_detect"] = k * one.median / timing.median
        print(f"  RATIO K={k} / K=1 = {timing.median / base:.2f}; K single-class runs "
              f"({k} x {one.median:.1f} s) / detect K={k} = {k * one.median / timing.median:.1f}x")
    if args.vit_layers != SAM3_VIT_LAYERS and 20 in runs:
        full_vision = vision.median * SAM3_VIT_LAYERS / args.vit_layers
        extra = full_vision - vision.median
        ratio = (runs[20].median + extra) / (base + extra)
        results["ratio_k20_k1_full_depth_extrapolated"] = ratio
        print(f"  EXTRAPOLATED to the full 32-layer ViT (vision pass x {SAM3_VIT_LAYERS}/"
              f"{args.vit_layers}): K=20 / K=1 = {ratio:.2f}")
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segmenters", nargs="*", default=["sam2.1-tiny", "sam-hq-vit-b", "edgetam",
                                                            "sam3-tracker"], choices=SEGMENTERS)
    parser.add_argument("--no-sam3", action="store_true", help="skip the SAM 3 detector")
    parser.add_argument("--boxes", type=int, default=20)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--vit-layers", type=int, default=SAM3_VIT_LAYERS,
                        help="layers of SAM 3's ViT (32: the real model)")
    parser.add_argument("--device", default="cpu")
    common.add_common_args(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.vit_layers <= SAM3_VIT_LAYERS:
        parser.error(f"--vit-layers must be in 1..{SAM3_VIT_LAYERS}")

    common.setup_torch(args.threads)
    info = common.print_header("Transformers segmenters and SAM 3 classes")
    root = common.models_root(args.models_dir) / "hf-segmenters"
    image = common.random_image(args.height, args.width)
    boxes = common.random_boxes(args.boxes, args.height, args.width)
    print(f"image {args.height}x{args.width}, {args.boxes} boxes, device {args.device}")
    results: dict[str, Any] = {"machine": info}
    for name in args.segmenters:
        suffix = f"-vit{args.vit_layers}" if name == "sam3-tracker" else ""
        folder = build(name, root / f"{name}{suffix}", args.vit_layers)
        results[name] = bench_segmenter(name, folder, image, boxes, args)
    if not args.no_sam3:
        folder = build("sam3", root / f"sam3-vit{args.vit_layers}", args.vit_layers)
        results["sam3"] = bench_sam3(folder, image, args)
    common.print_footer(results, args.json)
    print(json.dumps({k: v for k, v in results.items() if k != "machine"}, default=str))
    return results


if __name__ == "__main__":
    main()
