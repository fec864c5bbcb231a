"""ClipTagger start-up: cold (vocabulary text embeddings computed) vs warm (read from disk).

Real ViT-B-32 architecture with random weights, the built-in vocabulary and the default
templates; nothing is downloaded. Target: a warm start costs under 1/20 of a cold one.

    python bench/bench_tagger.py
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tags", type=int, default=0, help="use only the first N tags (0: all)")
    args = parser.parse_args()

    import open_clip
    import torch

    from ovperc.stages import ClipModel, ClipTagger
    from ovperc.stages.clip_tagger import builtin_vocabulary

    vocabulary = builtin_vocabulary()
    if args.tags:
        vocabulary = vocabulary[: args.tags]
    start = time.perf_counter()
    model, _, preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None)
    model = model.to(args.device)
    clip = ClipModel.from_modules(model, preprocess, open_clip.get_tokenizer(args.model),
                                  name=f"{args.model}:random-bench")
    build = time.perf_counter() - start
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)

    with tempfile.TemporaryDirectory() as cache:
        def start_and_tag() -> tuple[float, list]:
            begin = time.perf_counter()
            tagger = ClipTagger(clip, vocabulary=vocabulary, cache_dir=cache)
            tags = tagger.tag([image])
            return time.perf_counter() - begin, tags

        cold, cold_tags = start_and_tag()
        warm, warm_tags = start_and_tag()
        templates = len(ClipTagger(clip, vocabulary=vocabulary, cache_dir=cache).templates)

    same = [t.name for t in cold_tags[0]] == [t.name for t in warm_tags[0]]
    print(f"model {args.model} (random weights) on {args.device}, torch threads "
          f"{torch.get_num_threads()}; model build {build:.2f} s")
    print(f"vocabulary {len(vocabulary)} tags x {templates} templates")
    print(f"cold start (construct + tag 1 image, cache empty): {cold:.2f} s")
    print(f"warm start (construct + tag 1 image, cache on disk): {warm:.3f} s")
    print(f"warm/cold = 1/{cold / warm:.0f} (target <= 1/20); same tags: {same}")
    print(f"counting the model build in both: warm/cold = 1/{(cold + build) / (warm + build):.1f}")


if __name__ == "__main__":
    main()
