"""Train the ``shapes-tiny`` models: a tiny Grounding DINO, SAM and CLIP on the shapes world.

All three are trained from scratch, on CPU, on scenes from :mod:`ovperc.shapes`, and saved
in the formats ovperc's public loaders read:

- ``grounding-dino/``: a transformers ``save_pretrained`` folder (model + processor);
- ``sam.pth`` + ``sam.json``: a segment-anything state dict and its architecture;
- ``clip/``: an open_clip folder (``open_clip_config.json`` + ``open_clip_model.safetensors``).

Usage (from the repository root). On 2 otherwise idle CPU cores the detector's 4000 steps
take about 0.45 s each (about 32 minutes with its scene pool), CLIP's 1200 steps about 6
minutes; SAM is slower per step (about 1 s). On a shared machine everything slows down::

    python train/shapes.py --out ovperc/data/shapes-tiny            # all three
    python train/shapes.py --out /tmp/shapes --only sam clip         # some of them

Every model has its own seed (``--seed`` plus a fixed offset), so training one model
again does not change the others. Training scenes come from seeds 1000 and up; the tests
hold out scenes generated from other seeds.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

MODELS = ("gdino", "sam", "clip")
_OFFSETS = {"gdino": 1000, "sam": 2000, "clip": 3000}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, train the chosen models and save them into ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the models into")
    parser.add_argument("--only", nargs="+", choices=MODELS, default=list(MODELS),
                        help="train only these models (default: all three)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--gdino-steps", type=int, default=None, help="override the detector's steps")
    parser.add_argument("--sam-steps", type=int, default=None, help="override SAM's steps")
    parser.add_argument("--clip-steps", type=int, default=None, help="override CLIP's steps")
    parser.add_argument("--snapshots", type=Path, default=None,
                        help="also save the detector every 1000 steps into this folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stdout)

    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        if name not in args.only:
            continue
        started = time.time()
        seed = args.seed + _OFFSETS[name]
        steps = getattr(args, f"{name}_steps")
        if name == "gdino":
            from shapes_gdino import GdinoSettings, train_gdino

            settings = GdinoSettings() if steps is None else GdinoSettings(steps=steps)
            train_gdino(args.out / "grounding-dino", seed=seed, settings=settings,
                        snapshots=args.snapshots)
        elif name == "sam":
            from shapes_sam import SamSettings, train_sam

            settings = SamSettings() if steps is None else SamSettings(steps=steps)
            train_sam(args.out / "sam.pth", seed=seed, settings=settings)
        else:
            from shapes_clip import ClipSettings, train_clip

            settings = ClipSettings() if steps is None else ClipSettings(steps=steps)
            train_clip(args.out / "clip", seed=seed, settings=settings)
        logging.info("%s: trained in %.1f min", name, (time.time() - started) / 60)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
