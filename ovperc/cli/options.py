"""Command-line options shared by the subcommands: models, device, thresholds, batching.

A subcommand calls :func:`add_class_options`, :func:`add_model_options` and
:func:`add_threshold_options` on its parser, then :func:`build_pipeline` with the parsed
arguments. :func:`run_signature` says which of them define a run's output (for resuming).

Example:
    >>> parser = argparse.ArgumentParser()
    >>> add_model_options(parser); add_threshold_options(parser)
    >>> args = parser.parse_args(["--detector", "./tiny-gdino", "--box-threshold", "0.3"])
    >>> args.box_threshold
    0.3
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ovperc.device import DTYPES

R = TypeVar("R")

if TYPE_CHECKING:
    from ovperc.ontology import Ontology
    from ovperc.pipeline import Pipeline

ROLES = ("tagger", "detector", "segmenter", "classifier")
CLASSIFIER_MODES = ("relabel", "rescore", "reject")
NMS_MODES = ("class", "agnostic", "none")


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def iou_value(text: str) -> float:
    """An argparse ``type``: an IoU above 0 and at most 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an IoU such as 0.5, got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse ``type``: an integer of 1 or more."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse ``type``: a number of 0 or more."""
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def add_class_options(parser: argparse.ArgumentParser) -> None:
    """``--classes``, ``--ontology``, ``--tag-merge``: what to detect."""
    group = parser.add_argument_group("what to detect")
    exclusive = group.add_mutually_exclusive_group()
    exclusive.add_argument(
        "--classes", metavar="LIST",
        help='comma-separated class names, e.g. "person, car, dog" (each name is also its '
             "prompt). Without --classes or --ontology, a tagger names what is in each image "
             "and those tags are detected; the dataset's classes then grow as new tags appear")
    exclusive.add_argument(
        "--ontology", metavar="FILE", type=Path,
        help="a prompt -> class mapping file: YAML/JSON mapping (e.g. 'man: person') or list, "
             "or a text file with one 'class' or 'prompt: class' per line; several prompts "
             "may name one class")
    group.add_argument(
        "--tag-merge", action="store_true",
        help="with --classes/--ontology, also detect what the tagger names in each image "
             "(adds a tagger to the chain)")


def add_model_options(parser: argparse.ArgumentParser, *, default_preset: str | None = None) -> None:
    """``--preset``, one option per role's model, ``--device``, ``--dtype``.

    Without ``default_preset`` the subcommand picks the preset from what it is asked to
    write (see :func:`choose_preset`).
    """
    from ovperc.presets import DEFAULT_MODELS, PRESETS

    group = parser.add_argument_group(
        "models", "each model is a short name (list them with `ovperc models`), a hub id, or a "
        "local folder/file (for offline use); weights load once, on first use")
    default = (f"Default: {default_preset}" if default_preset else
               "Default: detect, plus segment when masks are written, plus tag when no "
               "classes are given")
    group.add_argument(
        "--preset", choices=sorted(PRESETS), metavar="NAME", default=default_preset,
        help="which stages run: " + ", ".join(sorted(PRESETS)) + f". {default}. A model "
             "option for a stage the preset lacks adds that stage")
    group.add_argument("--detector", metavar="MODEL",
                       help="open-vocabulary detector: a short name from `ovperc models` "
                            "(gdino-tiny, llmdet-tiny, owlv2-base, omdet-turbo, ...), a hub id or "
                            "a save_pretrained folder (architecture from its config.json) "
                            f"(default {DEFAULT_MODELS['detector']})")
    group.add_argument("--segmenter", metavar="MODEL",
                       help="a short name from `ovperc models` (SAM vit_b, vit_l, vit_h, ...), "
                            f"a .pth checkpoint, hub id or folder (default {DEFAULT_MODELS['segmenter']})")
    group.add_argument("--classifier", metavar="MODEL",
                       help="CLIP that re-scores, re-labels or rejects each box: "
                            "'ARCH:PRETRAINED' open_clip name, hf-hub id or local checkpoint "
                            f"(default when the preset has one: {DEFAULT_MODELS['classifier']})")
    group.add_argument("--tagger", metavar="MODEL",
                       help="image tagger (CLIP over a tag vocabulary, or a RAM++ checkpoint) "
                            f"(default {DEFAULT_MODELS['tagger']})")
    group.add_argument("--device", default="auto",
                       help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps "
                            "(default auto)")
    group.add_argument("--dtype", default="float32", choices=DTYPES,
                       help="model precision; float16/bfloat16 need a GPU (default float32)")


def add_threshold_options(parser: argparse.ArgumentParser, *, batching: bool = True) -> None:
    """Detection thresholds, NMS, classifier/tagger settings and (optionally) batching."""
    group = parser.add_argument_group("thresholds")
    group.add_argument("--box-threshold", type=_probability, metavar="P",
                       help="keep boxes whose best class score is at least P (detector "
                            "default 0.35)")
    group.add_argument("--text-threshold", type=_probability, metavar="P",
                       help="minimum score of a class's prompt tokens for the box to take "
                            "that class (detector default 0.25)")
    group.add_argument("--nms", choices=NMS_MODES, default="class",
                       help="suppress overlapping boxes of the same class (class), of any "
                            "class (agnostic), or keep all (none) (default class)")
    group.add_argument("--nms-iou", type=iou_value, default=0.5, metavar="IOU",
                       help="IoU above which the weaker of two boxes is suppressed (default 0.5)")
    group.add_argument("--classifier-mode", choices=CLASSIFIER_MODES,
                       help="what the classifier does with each box: rescore (blend CLIP's "
                            "score into the confidence), relabel (take CLIP's class), reject "
                            "(drop boxes CLIP disagrees with) (classifier default rescore)")
    group.add_argument("--tag-threshold", type=_probability, metavar="P",
                       help="minimum tag score for a tag to be used (tagger default)")
    group.add_argument("--max-tags", type=positive_int, metavar="N",
                       help="use at most N tags per image (tagger default 10)")
    group.add_argument("--thresholds", type=Path, metavar="FILE",
                       help="per-class confidence thresholds (YAML 'default' and 'classes', as "
                            "ovperc tune writes); boxes below their class's threshold are dropped")
    if batching:
        speed = parser.add_argument_group("throughput")
        speed.add_argument("--batch-size", type=positive_int, default=4, metavar="N",
                           help="images per model call (default 4; raise it on a GPU)")
        speed.add_argument("--decode-workers", type=positive_int, default=2, metavar="N",
                           help="background threads decoding images while the models run "
                                "(default 2)")


def ontology_from_args(args: argparse.Namespace) -> Ontology | None:
    """The classes asked for with ``--classes`` or ``--ontology`` (``None`` for neither).

    Raises:
        ValueError: an empty class list or an unreadable ontology file.
    """
    from ovperc.ontology import Ontology

    if getattr(args, "ontology", None) is not None:
        if not args.ontology.is_file():
            raise ValueError(f"ontology file not found: {args.ontology}")
        return Ontology.from_file(args.ontology)
    if getattr(args, "classes", None) is not None:
        return Ontology(args.classes)
    return None


def choose_preset(args: argparse.Namespace, *, masks: bool, tags: bool) -> str:
    """``--preset`` if given, else the smallest preset that does the job.

    Example:
        >>> choose_preset(argparse.Namespace(preset=None), masks=True, tags=False)
        'detect+segment'
    """
    if getattr(args, "preset", None):
        return args.preset
    name = "tag+detect" if tags else "detect"
    return name + "+segment" if masks and not _detector_segments(args) else name


def _detector_segments(args: argparse.Namespace) -> bool:
    """Whether ``--detector`` names a model that gives masks itself (SAM 3): no SAM needed."""
    model = getattr(args, "detector", None)
    if not model:
        return False
    from ovperc.registry import resolve

    try:
        return bool(getattr(resolve("detector", model).stage, "provides_masks", False))
    except (ValueError, OSError, ImportError):
        return False  # the pipeline build reports a bad name with the full message


def _spec(model: str | None) -> str | None:
    """A model spec as recorded in a run signature: local paths made absolute."""
    if model is None:
        return None
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def stage_options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per-role keyword arguments for the options the user set (others keep stage defaults)."""
    wanted = {
        "detector": {"box_threshold": args.box_threshold, "text_threshold": args.text_threshold},
        "classifier": {"mode": args.classifier_mode},
        "tagger": {"threshold": args.tag_threshold, "top_k": args.max_tags},
    }
    return {role: {k: v for k, v in kw.items() if v is not None} for role, kw in wanted.items()}


def chosen_models(args: argparse.Namespace, preset: str) -> dict[str, str]:
    """Role -> model spec of the chain that will run (preset defaults plus overrides)."""
    from ovperc.presets import PRESETS

    models = dict(PRESETS[preset])
    for role in ROLES:
        given = getattr(args, role, None)
        if given is not None:
            models[role] = given
    return models


def build_pipeline(args: argparse.Namespace, *, preset: str, keep_images: bool = False) -> Pipeline:
    """The :class:`~ovperc.Pipeline` the options describe (models load on first use).

    Example:
        >>> pipe = build_pipeline(args, preset="detect+segment")  # doctest: +SKIP
    """
    from ovperc.pipeline import Pipeline
    from ovperc.thresholds import read_thresholds

    models = chosen_models(args, preset)
    options = {role: kw for role, kw in stage_options(args).items() if role in models and kw}
    thresholds = getattr(args, "thresholds", None)
    return Pipeline.from_preset(
        preset,
        device=args.device,
        dtype=args.dtype,
        options=options,
        nms=args.nms,
        nms_iou=args.nms_iou,
        keep_images=keep_images,
        class_thresholds=None if thresholds is None else read_thresholds(thresholds),
        **{role: getattr(args, role, None) for role in ROLES},
    )


def run_signature(args: argparse.Namespace, *, preset: str) -> dict[str, Any]:
    """The options that change a run's output: models, precision and thresholds.

    Device, batch size and decoding threads are left out, so a run may be resumed on
    another machine or with another batch size.
    """
    from ovperc.thresholds import read_thresholds

    models = chosen_models(args, preset)
    thresholds = getattr(args, "thresholds", None)
    extra = {} if thresholds is None else {"class_thresholds": read_thresholds(thresholds).to_dict()}
    return {
        "preset": preset,
        "models": {role: _spec(models[role]) for role in ROLES if role in models},
        "dtype": args.dtype,
        "nms": args.nms,
        "nms_iou": args.nms_iou,
        "stage_options": {r: kw for r, kw in stage_options(args).items() if r in models and kw},
        **extra,
    }


def describe_error(error: BaseException) -> str:
    """A one-line message for an error the CLI reports instead of a traceback."""
    text = str(error) or type(error).__name__
    return text if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {text}"


def run_resumable(work: Callable[[], R]) -> R | int:
    """Run a resumable job (``label``, ``track``) the way every subcommand does.

    SIGTERM stops it like Ctrl-C (the job records what it finished, so the same command
    resumes). Returns what ``work`` returned, or the exit code after saying why: 130 when
    interrupted, 2 for a run in the folder with other settings or an error that is not about
    one image (a model that cannot load, disk full).

    Example:
        >>> run_resumable(lambda: "report")
        'report'
    """
    from ovperc.labeling.manifest import ManifestMismatchError

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _stop)
    try:
        return work()
    except ManifestMismatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as error:  # models that cannot load, disk full, ...
        print(f"error: {describe_error(error)}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
