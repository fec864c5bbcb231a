"""ClipTagger start-up: cold (vocabulary text embeddings computed) vs warm (read from disk).

A random ViT-B-32 saved as an open_clip folder (random weights cost the same time as
trained ones), the built-in vocabulary (about 1,900 tags) and the default templates;
nothing is downloaded. Each start constructs a ``ClipTagger`` and tags one image: a cold
start with an empty cache folder, a warm one with the cache the previous cold start wrote.
The model itself is loaded once before timing (it is the same for both).
Target: warm / cold <= 1/20.

    python bench/bench_tagger.py               # built-in vocabulary, 3 repeats
    python bench/bench_tagger.py --tags 500
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import common


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tags", type=int, default=0, help="use only the first N tags (0: all)")
    common.add_common_args(parser)
    args = parser.parse_args(argv)

    from ovperc.stages import ClipModel, ClipTagger
    from ovperc.stages.clip_tagger import builtin_vocabulary

    common.setup_torch(args.threads)
    info = common.print_header("ClipTagger start: warm vs cold")
    vocabulary = builtin_vocabulary()
    if args.tags:
        vocabulary = vocabulary[: args.tags]
    folder = common.build_clip(common.models_root(args.models_dir) / "clip-vit-b-32")
    start = time.perf_counter()
    clip = ClipModel(str(folder), device=args.device).load()
    build = time.perf_counter() - start
    image = common.random_image(480, 640)
    ClipTagger(clip, vocabulary=vocabulary[:5], cache_dir=tempfile.mkdtemp()).tag([image])  # warm-up

    cold, warm = common.Timing(), common.Timing()
    same = True
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as cache:
            begin = time.perf_counter()
            cold_tags = ClipTagger(clip, vocabulary=vocabulary, cache_dir=cache).tag([image])
            cold.times.append(time.perf_counter() - begin)
            begin = time.perf_counter()
            tagger = ClipTagger(clip, vocabulary=vocabulary, cache_dir=cache)
            warm_tags = tagger.tag([image])
            warm.times.append(time.perf_counter() - begin)
            same &= [t.name for t in cold_tags[0]] == [t.name for t in warm_tags[0]]

    print(f"model ViT-B-32 (random weights) on {args.device}; model load {build:.2f} s (not timed)")
    print(f"vocabulary {len(vocabulary)} tags x {len(tagger.templates)} templates")
    print(f"cold start (construct + tag 1 image, empty cache): {cold}")
    print(f"warm start (construct + tag 1 image, cache on disk): {warm}")
    ratio = warm.median / cold.median
    print(f"RATIO warm / cold = {ratio:.4f} = 1/{1 / ratio:.0f}  (target <= 1/20); "
          f"same tags: {same}")
    results = {"cold_s": cold.times, "warm_s": warm.times, "ratio": ratio, "same_tags": same,
               "tags": len(vocabulary), "model_load_s": build, "machine": info}
    common.print_footer(results, args.json)
    return results


if __name__ == "__main__":
    main()
