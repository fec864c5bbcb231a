"""Shared helpers of the benchmark scripts: timing, the machine header, random full-size models.

Every model here has the real architecture at its real size and random weights (they cost
the same time as trained ones), and is saved in the format a user would download, so the
benchmarks load it through ovperc's public stage constructors. Nothing is downloaded.

Built models are kept in ``--models-dir`` (default ``$TMPDIR/ovperc-bench-models``) and
reused by later runs; the weights come from fixed seeds, so a rebuilt copy is identical.

Example:
    >>> from bench.common import median_time  # doctest: +SKIP
    >>> median_time(lambda: sum(range(1000)), repeats=5).median  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: BERT uncased ids Grounding DINO relies on ([PAD], [UNK], [CLS], [SEP], [MASK], ".", "?").
_BERT_SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]",
                 1012: ".", 1029: "?"}
#: Words the benchmarks use as classes (besides the built-in tag vocabulary).
BENCH_CLASSES = ("person", "car", "dog", "cat", "bicycle", "bus", "truck", "bird", "horse",
                 "chair", "cup", "bottle", "boat", "kite", "tree", "bench", "sign", "light",
                 "ball", "bag")


def default_models_dir() -> Path:
    """Where built random models are kept between runs."""
    return Path(tempfile.gettempdir()) / "ovperc-bench-models"


# ---------------------------------------------------------------------- timing
@dataclass
class Timing:
    """Wall times (and this process's CPU times) of repeated runs of one thing, in seconds.

    On a shared machine the CPU time (all threads of this process) moves less with other
    people's load than the wall time; both are kept.
    """

    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """The median wall time."""
        return statistics.median(self.times)

    @property
    def cpu_median(self) -> float:
        """The median CPU time (0 when not recorded)."""
        return statistics.median(self.cpu) if self.cpu else 0.0

    def add(self, wall: float, cpu: float) -> None:
        """Record one run."""
        self.times.append(wall)
        self.cpu.append(cpu)

    def __str__(self) -> str:
        runs = ", ".join(f"{t:.3f}" for t in self.times)
        text = f"{self.median:.3f} s (median of {len(self.times)}: {runs})"
        return text + (f"; cpu {self.cpu_median:.3f} s" if self.cpu else "")


def median_time(fn: Callable[[], object], repeats: int) -> Timing:
    """Run ``fn`` ``repeats`` times and keep every wall time.

    Example:
        >>> median_time(lambda: None, 3).median < 1
        True
    """
    timing = Timing()
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        timing.add(time.perf_counter() - start, time.process_time() - cpu)
    return timing


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, Timing]:
    """Time several functions in turns (a, b, a, b, ...) so that load changes hit all alike.

    Example:
        >>> sorted(interleaved({"a": lambda: None, "b": lambda: None}, 2))
        ['a', 'b']
    """
    timings = {name: Timing() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, cpu = time.perf_counter(), time.process_time()
            fn()
            timings[name].add(time.perf_counter() - start, time.process_time() - cpu)
    return timings


# ---------------------------------------------------------------------- the machine
def cpu_model() -> str:
    """The CPU model name from ``/proc/cpuinfo`` (or the platform's answer)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, object]:
    """Date, CPU, cores, torch version and threads, load average, and the command line."""
    import torch

    info: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_header(title: str) -> dict[str, object]:
    """Print the benchmark title and the machine lines; returns the machine dict."""
    info = machine()
    print(f"# {title}")
    for key, value in info.items():
        print(f"{key}: {value}")
    return info


def print_footer(results: dict[str, object], json_path: str | None) -> None:
    """Print the load average at the end; write machine + results as JSON when asked."""
    load = [round(x, 2) for x in os.getloadavg()]
    print(f"load_avg at end: {load}")
    if json_path:
        data = {"machine": machine(), "load_avg_end": load, "results": results}
        Path(json_path).write_text(json.dumps(data, indent=2, default=str))


# ---------------------------------------------------------------------- inputs
def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random RGB ``uint8`` image (compresses like a photo, unlike pure noise).

    Example:
        >>> random_image(48, 64).shape
        (48, 64, 3)
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
    noise = rng.integers(-12, 13, smooth.shape)
    return np.clip(smooth.astype(int) + noise, 0, 255).astype(np.uint8)


def random_boxes(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """``count`` boxes ``(x1, y1, x2, y2)`` inside the image, 10% to 40% of its sides."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.1, 0.4, count) * width
    h = rng.uniform(0.1, 0.4, count) * height
    x1 = rng.uniform(0, 1, count) * (width - w)
    y1 = rng.uniform(0, 1, count) * (height - h)
    return np.stack([x1, y1, x1 + w, y1 + h], axis=1).astype(np.float32)


# ---------------------------------------------------------------------- random real-size models
def _wordpiece_vocab(size: int) -> list[str]:
    """A BERT-uncased-shaped vocabulary: special ids in place, the words the benchmarks use.

    Holds every word of the built-in tag vocabulary and :data:`BENCH_CLASSES`, single
    characters and ``##`` pieces (so any other word splits instead of becoming
    ``[UNK]``), and ``[unusedN]`` fillers up to ``size``.
    """
    from ovperc.stages.clip_tagger import builtin_vocabulary

    words: dict[str, None] = {}
    for text in [*builtin_vocabulary(), *BENCH_CLASSES]:
        for word in "".join(c if c.isalnum() else " " for c in text.lower()).split():
            words[word] = None
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    tokens = [*chars, *(f"##{c}" for c in chars), ",", "!", "-", "'", *words]
    tokens = [t for t in dict.fromkeys(tokens) if t not in _BERT_SPECIAL.values()]
    free = iter(tokens)
    vocab, filler = [], 0
    for index in range(size):
        if index in _BERT_SPECIAL:
            vocab.append(_BERT_SPECIAL[index])
            continue
        token = next(free, None) if index >= 104 else None
        if token is None:
            token = f"[unused{filler}]"
            filler += 1
        vocab.append(token)
    if next(free, None) is not None:
        raise ValueError(f"vocabulary of {size} tokens too small for the benchmark words")
    return vocab


def build_grounding_dino(
    folder: Path, *, shortest_edge: int = 800, longest_edge: int = 1333, seed: int = 0
) -> Path:
    """Random ``GroundingDinoConfig()`` (swin-T + BERT-base, as grounding-dino-tiny), saved.

    The folder holds what ``save_pretrained`` writes for the hub model: config, safetensors
    weights, a WordPiece ``vocab.txt`` of the real size (30,522) with BERT's special ids,
    and a processor resizing to ``shortest_edge`` / ``longest_edge`` (real: 800 / 1333).
    Built once; an existing complete folder is reused.
    """
    folder = Path(folder)
    if (folder / "model.safetensors").is_file() and (folder / "processor_config.json").is_file():
        return folder
    import torch
    from transformers import (
        BertTokenizerFast,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
    )

    folder.mkdir(parents=True, exist_ok=True)
    config = GroundingDinoConfig()
    vocab_path = folder / "vocab.txt"
    vocab_path.write_text("\n".join(_wordpiece_vocab(config.text_config.vocab_size)) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab_path), do_lower_case=True)
    torch.manual_seed(seed)
    model = GroundingDinoForObjectDetection(config).eval()
    with torch.no_grad():
        # Random logits are dot products of 256-wide unit-variance vectors: their sigmoid
        # saturates at 1.0 and no threshold can tell queries apart. A smaller final norm
        # spreads them over (0, 1); the model's compute is unchanged.
        model.model.decoder.layer_norm.weight.mul_(0.05)
        model.model.decoder.layer_norm.bias.mul_(0.05)
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(
            size={"shortest_edge": shortest_edge, "longest_edge": longest_edge}),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(folder)
    model.save_pretrained(folder)  # last: its file marks the folder complete
    return folder


def build_sam(folder: Path, variant: str = "vit_b", *, seed: int = 0) -> Path:
    """A random official-architecture SAM (``sam_model_registry[variant]()``) as a ``.pth``."""
    path = Path(folder) / f"random_sam_{variant}.pth"
    if path.is_file():
        return path
    import torch
    from segment_anything import sam_model_registry

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tmp = path.with_suffix(".tmp")
    torch.save(sam_model_registry[variant]().state_dict(), tmp)
    os.replace(tmp, path)
    return path


def build_tiny_sam(folder: Path) -> Path:
    """A tiny random SAM (128 px input, 8x8 embedding, width 32) as ``.pth`` + ``.json``.

    For long runs where the model's cost should not matter (the memory benchmark): the
    chain still embeds, decodes and upsamples a mask for every box.
    """
    path = Path(folder) / "tiny_sam_128.pth"
    if path.is_file():
        return path
    import dataclasses

    import torch

    from ovperc.stages.sam import SamArchitecture

    arch = SamArchitecture(
        encoder_embed_dim=32, encoder_depth=1, encoder_num_heads=2,
        encoder_global_attn_indexes=(0,), encoder_window_size=0, image_size=128,
        prompt_embed_dim=32, mask_in_chans=8, decoder_mlp_dim=64, decoder_num_heads=2,
        iou_head_hidden_dim=32,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    path.with_suffix(".json").write_text(json.dumps(dataclasses.asdict(arch)))
    tmp = path.with_suffix(".tmp")
    torch.save(arch.build().state_dict(), tmp)
    os.replace(tmp, path)
    return path


def models_root(models_dir: str | os.PathLike | None) -> Path:
    """``--models-dir`` or the default folder."""
    return Path(models_dir) if models_dir else default_models_dir()


def build_clip(folder: Path, name: str = "ViT-B-32", *, seed: int = 0) -> Path:
    """A random open_clip ``name`` saved as an open_clip folder (config + safetensors)."""
    folder = Path(folder)
    if (folder / "open_clip_config.json").is_file():
        return folder
    import open_clip
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.create_model(name, pretrained=None)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "open_clip_model.safetensors"))
    config = {
        "model_cfg": open_clip.get_model_config(name),
        "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                           "std": list(open_clip.OPENAI_DATASET_STD)},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    return folder


def models(models_dir: str | os.PathLike | None = None, *, gdino_edges: tuple[int, int] = (800, 1333)
           ) -> dict[str, Path]:
    """Build (once) and return the paths of the full-size random models.

    Returns:
        ``{"gdino": folder, "sam": vit_b .pth, "clip": open_clip folder}``.
    """
    root = models_root(models_dir)
    short, long = gdino_edges
    name = "gdino-swin-t" if gdino_edges == (800, 1333) else f"gdino-swin-t-{short}x{long}"
    return {
        "gdino": build_grounding_dino(root / name, shortest_edge=short, longest_edge=long),
        "sam": build_sam(root, "vit_b"),
        "clip": build_clip(root / "clip-vit-b-32"),
    }


def add_common_args(parser: object) -> None:
    """``--repeats``, ``--threads``, ``--models-dir``, ``--json`` on an argparse parser."""
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (median kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--models-dir", default=None,
                        help=f"where random models are built and kept (default "
                             f"{default_models_dir()})")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")


def setup_torch(threads: int) -> None:
    """Set torch's thread count when asked and seed it."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)


# ---------------------------------------------------------------------- fixed box counts
class TopBoxes:
    """A detector wrapper that keeps a fixed number of the most confident boxes per image.

    Random weights give confidences that mean nothing, so no threshold can fix how many
    boxes reach the segmenter; benchmarks that must compare equal work keep the top ones.
    ``per_class`` keeps ``per_class x (prompts of the image)``, else ``per_image`` boxes.

    Example:
        >>> TopBoxes(object(), per_image=20).count(["person", "car"])
        20
        >>> TopBoxes(object(), per_class=2).count(["person", "car"])
        4
    """

    def __init__(self, detector: object, *, per_class: int = 0, per_image: int = 0) -> None:
        if (per_class > 0) == (per_image > 0):
            raise ValueError(f"give one of per_class, per_image (got {per_class}, {per_image})")
        self.detector, self.per_class, self.per_image = detector, per_class, per_image

    def count(self, prompts: list[str]) -> int:
        """How many boxes an image with these prompts keeps."""
        return self.per_class * len(prompts) if self.per_class else self.per_image

    def detect(self, images: list[np.ndarray], prompts: list[list[str]]) -> list[object]:
        """The wrapped detector's boxes, the most confident :meth:`count` of each image."""
        found = self.detector.detect(images, prompts)
        return [d[np.argsort(-d.confidence, kind="stable")[: self.count(p)]]
                for d, p in zip(found, prompts)]
