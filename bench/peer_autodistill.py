"""The peer side of ``bench/peer.sh``: Roboflow's ``autodistill-grounded-sam`` 0.1.2, unmodified.

Runs in the peer's own virtual environment (``bench/peer.sh setup`` makes it), never in
ovperc's: it imports only the peer's libraries and the standard library.

``setup`` puts random-weight checkpoints of the real architectures where the peer looks
before it would download anything, under a private home folder (``--home``; ``peer.sh``
runs the peer with ``HOME`` set to it, so nothing in the user's own caches is touched):

- ``~/.cache/autodistill/groundingdino/GroundingDINO_SwinT_OGC.py`` (the config file shipped
  inside ``groundingdino``) and ``groundingdino_swint_ogc.pth`` (``{"model": state_dict}``);
- ``~/.cache/autodistill/segment_anything/sam_vit_h_4b8939.pth``: a link to the ViT-H state
  dict ovperc's side loads, so both sides run the very same weights;
- ``bert-base-uncased`` in the Hugging Face cache layout: ``BertConfig()`` (the real
  architecture) with random weights and ``--vocab`` as its vocabulary (the vocabulary of
  ovperc's Grounding DINO folder, so every prompt becomes the same tokens on both sides).

``time`` runs ``GroundedSAM(CaptionOntology(K classes)).predict(path)`` on each image and
writes one JSON record per (K, image). Random weights pass hundreds of boxes per class; the
harness keeps the ``--boxes-per-class`` most confident of each per-class Grounding DINO call
before they reach the peer's SAM loop (ovperc's side keeps the same number per image). Only
timing wrappers are attached to the peer's Grounding DINO and SAM calls.

    HOME=<root>/home python bench/peer_autodistill.py setup --home <root>/home --vocab V --sam-vit-h P
    HOME=<root>/home python bench/peer_autodistill.py time --images a.png b.png --ks 1,5,20 --out peer.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

#: An arbitrary 40-hex revision name for the stand-in's snapshot folder.
_REVISION = "0" * 40


def _bert_folder(home: Path) -> Path:
    return home / ".cache/huggingface/hub/models--bert-base-uncased/snapshots" / _REVISION


def setup(home: Path, vocab: Path, sam_vit_h: Path) -> None:
    """Write the BERT stand-in, the Grounding DINO config and checkpoint, and link SAM ViT-H."""
    import torch

    bert = _bert_folder(home)
    if not (bert / "model.safetensors").is_file():
        from transformers import BertConfig, BertModel, BertTokenizerFast

        bert.mkdir(parents=True, exist_ok=True)
        (bert.parents[1] / "refs").mkdir(exist_ok=True)
        (bert.parents[1] / "refs" / "main").write_text(_REVISION)
        # transformers 4.x names the argument vocab_file (5.x: vocab).
        BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True,
                          model_max_length=512).save_pretrained(bert)
        torch.manual_seed(0)
        BertModel(BertConfig()).save_pretrained(bert)
        print(f"[peer setup] BERT-base stand-in -> {bert}", flush=True)

    cache = home / ".cache/autodistill"
    gd_dir = cache / "groundingdino"
    gd_dir.mkdir(parents=True, exist_ok=True)
    config = gd_dir / "GroundingDINO_SwinT_OGC.py"
    if not config.is_file():
        import groundingdino

        shutil.copyfile(Path(groundingdino.__file__).parent / "config" / config.name, config)
    checkpoint = gd_dir / "groundingdino_swint_ogc.pth"
    if not checkpoint.is_file():
        from groundingdino.models import build_model
        from groundingdino.util.slconfig import SLConfig

        os.environ["HF_HUB_OFFLINE"] = "1"
        args = SLConfig.fromfile(str(config))
        args.device = "cpu"
        torch.manual_seed(0)
        model = build_model(args)
        tmp = checkpoint.with_suffix(".tmp")
        torch.save({"model": model.state_dict()}, tmp)
        os.replace(tmp, checkpoint)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"[peer setup] random Grounding DINO swin-T OGC ({params:.1f}M) -> {checkpoint}", flush=True)

    sam = cache / "segment_anything" / "sam_vit_h_4b8939.pth"
    sam.parent.mkdir(parents=True, exist_ok=True)
    if sam.is_symlink() and sam.resolve() != sam_vit_h.resolve():
        sam.unlink()  # our own link from an earlier setup, to another file
    if not sam.exists():
        sam.symlink_to(sam_vit_h.resolve())
    print(f"[peer setup] SAM ViT-H -> {sam} (-> {sam.resolve()})", flush=True)


class _Probe:
    """Wall and CPU seconds and call counts of the peer's model calls, per image."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def wrap(self, name: str, fn):  # noqa: ANN001, ANN202
        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.calls[name] = self.calls.get(name, 0) + 1
            return out

        return timed


def time_peer(images: list[str], ks: list[int], classes: list[str], boxes_per_class: int,
              threads: int, out: Path) -> None:
    """Time ``GroundedSAM.predict`` per image at each K; write the records to ``out``."""
    import torch

    torch.set_num_threads(threads)
    from importlib.metadata import version

    start = time.perf_counter()
    from autodistill.detection import CaptionOntology
    from autodistill_grounded_sam import GroundedSAM

    def ontology(k: int) -> CaptionOntology:
        return CaptionOntology({c: c for c in classes[:k]})

    model = GroundedSAM(ontology=ontology(ks[0]))
    load_s = time.perf_counter() - start
    encoder = model.sam_predictor.model.image_encoder
    print(f"peer: GroundedSAM loaded in {load_s:.1f} s; SAM encoder width "
          f"{encoder.patch_embed.proj.out_channels} (1280 = ViT-H)", flush=True)

    probe = _Probe()
    dino = model.grounding_dino_model
    predict_with_classes = probe.wrap("detect", dino.predict_with_classes)

    def capped(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        found = predict_with_classes(*args, **kwargs)
        probe.calls["raw_boxes"] = probe.calls.get("raw_boxes", 0) + len(found)
        if boxes_per_class and len(found) > boxes_per_class:
            found = found[found.confidence.argsort()[::-1][:boxes_per_class]]
        return found

    dino.predict_with_classes = capped
    predictor = model.sam_predictor
    predictor.set_image = probe.wrap("sam_embed", predictor.set_image)
    predictor.predict = probe.wrap("sam_decode", predictor.predict)

    versions = {name: version(name) for name in (
        "autodistill-grounded-sam", "autodistill", "rf-groundingdino", "rf-segment-anything",
        "torch", "transformers", "supervision")}
    records: list[dict] = []
    for k in ks:
        model.ontology = ontology(k)
        for index, path in enumerate(images):
            probe.reset()
            wall, cpu = time.perf_counter(), time.process_time()
            found = model.predict(path)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            record = {"side": "peer", "sam": "vit_h", "k": k, "image": index, "wall_s": wall,
                      "cpu_s": cpu, "boxes": len(found), "seconds": dict(probe.seconds),
                      "calls": dict(probe.calls), "load_avg": list(os.getloadavg())}
            records.append(record)
            print(f"peer sam=vit_h K={k:2d} img={index} wall={wall:.1f}s cpu={cpu:.1f}s "
                  f"boxes={len(found)} gdino_calls={probe.calls.get('detect', 0)} "
                  f"gdino={probe.seconds.get('detect', 0):.1f}s "
                  f"sam_embed={probe.seconds.get('sam_embed', 0):.1f}s "
                  f"sam_decodes={probe.calls.get('sam_decode', 0)} "
                  f"sam_decode={probe.seconds.get('sam_decode', 0):.1f}s "
                  f"load={os.getloadavg()[0]:.1f}", flush=True)
            # after every image: an interrupted run keeps what it measured
            out.write_text(json.dumps({"versions": versions, "threads": threads, "load_s": load_s,
                                       "records": records}, indent=2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prepare = sub.add_parser("setup", help="random checkpoints where the peer looks for them")
    prepare.add_argument("--home", type=Path, required=True)
    prepare.add_argument("--vocab", type=Path, required=True)
    prepare.add_argument("--sam-vit-h", type=Path, required=True)
    timing = sub.add_parser("time", help="time GroundedSAM.predict at each K")
    timing.add_argument("--images", nargs="+", required=True)
    timing.add_argument("--ks", default="1,5,20")
    timing.add_argument("--classes", required=True, help="comma-separated, at least max(K)")
    timing.add_argument("--boxes-per-class", type=int, default=2)
    timing.add_argument("--threads", type=int, default=2)
    timing.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "setup":
        if Path(os.path.expanduser("~")).resolve() != args.home.resolve():
            sys.exit(f"run with HOME={args.home} (the peer reads its checkpoints from ~/.cache)")
        setup(args.home, args.vocab, args.sam_vit_h)
    else:
        time_peer(args.images, [int(k) for k in args.ks.split(",")], args.classes.split(","),
                  args.boxes_per_class, args.threads, args.out)


if __name__ == "__main__":
    main()
