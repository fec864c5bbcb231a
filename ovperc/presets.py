"""Named chains: which stages run, and which model each one loads by default."""

from __future__ import annotations

import importlib
from importlib import resources
from typing import Any

#: role -> (module, class) of the default implementation.
STAGE_CLASSES: dict[str, tuple[str, str]] = {
    "tagger": ("ovperc.stages.clip_tagger", "ClipTagger"),
    "detector": ("ovperc.stages.grounding_dino", "GroundingDinoDetector"),
    "segmenter": ("ovperc.stages.sam", "SamSegmenter"),
    "classifier": ("ovperc.stages.clip_classifier", "ClipClassifier"),
}

DEFAULT_MODELS: dict[str, str] = {
    "tagger": "ViT-B-32:laion2b_s34b_b79k",
    "detector": "IDEA-Research/grounding-dino-tiny",
    "segmenter": "vit_b",
    "classifier": "ViT-B-32:laion2b_s34b_b79k",
}

#: The ``fast`` preset's detector and segmenter (registry short names).
FAST_DETECTOR = "omdet-turbo"
FAST_SEGMENTER = "edgetam"

#: preset name -> role -> default model (roles absent from a preset do not run).
PRESETS: dict[str, dict[str, str]] = {
    "default": dict(DEFAULT_MODELS),
    "detect": {"detector": DEFAULT_MODELS["detector"]},
    "detect+segment": {r: DEFAULT_MODELS[r] for r in ("detector", "segmenter")},
    "detect+classify": {r: DEFAULT_MODELS[r] for r in ("detector", "classifier")},
    "tag+detect": {r: DEFAULT_MODELS[r] for r in ("tagger", "detector")},
    "tag+detect+segment": {r: DEFAULT_MODELS[r] for r in ("tagger", "detector", "segmenter")},
    "detect+segment+classify": {
        r: DEFAULT_MODELS[r] for r in ("detector", "segmenter", "classifier")
    },
    "segment": {"segmenter": DEFAULT_MODELS["segmenter"]},
    # SAM 3 finds and segments every class itself (no segmenter runs); add a tagger or a
    # CLIP classifier by naming their models. Gated weights (SAM License), see catalog.py.
    "sam3": {"detector": "sam3"},
    # Fast on a CPU (bench/bench_fast.py, bench/RESULTS.md "Fast on a CPU"): the same CLIP,
    # a detector and a segmenter chosen by measured seconds per image, int8 where it paid
    # (PRESET_OPTIONS).
    "fast": {
        "tagger": DEFAULT_MODELS["tagger"],
        "detector": FAST_DETECTOR,
        "segmenter": FAST_SEGMENTER,
        "classifier": DEFAULT_MODELS["classifier"],
    },
    # Toy models trained on the synthetic shapes world (ovperc.shapes, train/shapes.py):
    # shipped with the package for offline use and tests, useless on real photos.
    "shapes-tiny": {
        "tagger": "ovperc-data:shapes-tiny/clip",
        "detector": "ovperc-data:shapes-tiny/grounding-dino",
        "segmenter": "ovperc-data:shapes-tiny/sam.pth",
        "classifier": "ovperc-data:shapes-tiny/clip",
    },
}

#: A model or file shipped inside the ovperc package: ``"ovperc-data:<path under ovperc/data>"``.
PACKAGE_DATA = "ovperc-data:"

#: preset name -> role -> keyword arguments for that role's stage, used while the role keeps
#: the preset's own model (options given by the caller win).
PRESET_OPTIONS: dict[str, dict[str, dict[str, Any]]] = {
    # int8 where it paid on the CPU (bench/RESULTS.md "Fast on a CPU": CLIP 0.73x, OmDet-Turbo
    # 0.74x CPU time; EdgeTAM 0.97x, kept float32). On another device build_preset leaves it out.
    "fast": {role: {"quantize": "int8"} for role in ("tagger", "detector", "classifier")},
    "shapes-tiny": {
        "tagger": {"vocabulary": "ovperc-data:shapes-tiny/tags.txt", "threshold": 0.1, "top_k": 4},
        "detector": {"box_threshold": 0.3, "text_threshold": 0.25},
        "classifier": {"mode": "relabel"},
    },
}


def resolve_packaged(value: Any) -> Any:
    """The file path of an ``ovperc-data:`` name; any other value unchanged.

    Example:
        >>> resolve_packaged("ovperc-data:tags.txt").endswith("tags.txt")
        True
        >>> resolve_packaged("vit_b")
        'vit_b'
    """
    if isinstance(value, str) and value.startswith(PACKAGE_DATA):
        relative = value[len(PACKAGE_DATA):].strip("/")
        return str(resources.files("ovperc").joinpath("data", *relative.split("/")))
    return value


#: tagger names that select the native RAM models instead of the CLIP tagger.
RAM_VARIANTS = ("ram_plus", "ram")


def stage_class(role: str, model: str | None = None) -> type:
    """The class for a role and model spec, imported on demand.

    RAM checkpoints pick ``RamTagger``; everything else is looked up in the model registry
    (short names, hub ids, the ``model_type`` of a local folder; see :mod:`ovperc.registry`).

    Example:
        >>> stage_class("detector", "owlv2-base").__name__
        'OwlDetector'
    """
    if role == "tagger" and model is not None and _is_ram(model):
        return importlib.import_module("ovperc.stages.ram").RamTagger
    from ovperc.registry import resolve

    return resolve(role, model).stage


def _is_ram(model: str) -> bool:
    lowered = str(model).lower()
    return lowered in RAM_VARIANTS or (
        lowered.endswith((".pth", ".safetensors")) and "ram" in lowered.rsplit("/", 1)[-1]
    )


def _build(role: str, model: Any, device: str, dtype: str, options: dict[str, Any]) -> Any:
    if role == "tagger" and isinstance(model, str) and _is_ram(model):
        RamTagger = stage_class(role, model)
        if model.lower() in RAM_VARIANTS:
            options = {"variant": model.lower(), **options}
            model = None
        elif "variant" not in options and "plus" not in model.lower():
            options = {"variant": "ram", **options}
        return RamTagger(model, device=device, dtype=dtype, **options)
    from ovperc.registry import build_stage

    return build_stage(role, model, device=device, dtype=dtype, **options)


def build_preset(
    name: str,
    *,
    device: str,
    dtype: str,
    models: dict[str, Any],
    options: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Stage objects (not yet loaded) for a preset, keyed by role.

    A model given for a role the preset lacks adds that role. When the tagger and the
    classifier name the same CLIP model they share one loaded copy. A tagger named
    ``ram_plus`` / ``ram`` (or a RAM checkpoint path) is the native RAM tagger. Models and
    option values named ``ovperc-data:...`` are files shipped with the package; a role
    that keeps the preset's model also gets the preset's options (:data:`PRESET_OPTIONS`),
    except a preset's ``quantize`` when the device is not the CPU (int8 runs there only).

    Example:
        >>> sorted(build_preset("detect", device="cpu", dtype="float32", models={}, options={}))
        ['detector']
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    unknown = set(options) - set(STAGE_CLASSES)
    if unknown:
        raise ValueError(f"options for unknown roles {sorted(unknown)}; roles: {sorted(STAGE_CLASSES)}")
    chosen = dict(PRESETS[name])
    for role, model in models.items():
        if model is not None:
            chosen[role] = model
    role_options: dict[str, dict[str, Any]] = {}
    for role, model in chosen.items():
        own = PRESET_OPTIONS.get(name, {}).get(role, {}) if model == PRESETS[name].get(role) else {}
        if "quantize" in own and not _on_cpu(device):
            own = {key: value for key, value in own.items() if key != "quantize"}
        merged = {**own, **options.get(role, {})}
        role_options[role] = {key: resolve_packaged(value) for key, value in merged.items()}
        chosen[role] = resolve_packaged(model)
    for role in ("tagger", "classifier"):  # a CLIP short name -> its spec, so both can share it
        chosen[role] = _clip_spec(role, chosen[role]) if role in chosen else None
    chosen = {role: model for role, model in chosen.items() if model is not None}
    stages: dict[str, Any] = {}
    shared_clip = _shared_clip(chosen, device, dtype, role_options)
    for role, model in chosen.items():
        if not isinstance(model, str):
            stages[role] = model  # a ready stage object
            continue
        options = role_options[role]
        if shared_clip is not None and role in ("tagger", "classifier"):
            model = shared_clip
            options = {k: v for k, v in options.items() if k != "quantize"}  # the shared model's
        stages[role] = _build(role, model, device, dtype, options)
    return stages


def _on_cpu(device: str) -> bool:
    from ovperc.device import resolve_device

    return resolve_device(device).type == "cpu"


def _clip_spec(role: str, model: Any) -> Any:
    """The CLIP spec behind a registered CLIP short name; any other model unchanged."""
    from ovperc.registry import models

    for entry in models(role):
        if entry.name == model and entry.stage is None and entry.model is not None:
            return entry.model
    return model


def _shared_clip(chosen: dict[str, Any], device: str, dtype: str,
                 options: dict[str, dict[str, Any]]) -> Any:
    """One CLIP model for the tagger and the classifier when they name the same one with the
    same ``quantize`` option; ``None`` otherwise (each then loads its own)."""
    tagger, classifier = chosen.get("tagger"), chosen.get("classifier")
    quantize = {options.get(role, {}).get("quantize") for role in ("tagger", "classifier")}
    if isinstance(tagger, str) and tagger == classifier and len(quantize) == 1:
        from ovperc.stages.clip_model import ClipModel

        return ClipModel(tagger, device=device, dtype=dtype, quantize=quantize.pop())
    return None
