"""One registry of models: short names, hub ids and local folders to stage classes.

A model is named three ways, for every role (``detector``, ``segmenter``, ``classifier``,
``tagger``):

- a short name from the registry (``llmdet-tiny``, ``gdino-tiny``, ``owlv2-base``,
  ``vit_b``, ...): see :func:`models` or ``ovperc models``;
- a Hugging Face hub id (``IDEA-Research/grounding-dino-base``);
- a local folder (``./my-detector``) or file (``sam_vit_b.pth``).

The architecture of a folder comes from its ``config.json`` ``model_type`` (never from the
file name): each ``model_type`` is served by one stage class (:func:`register_stage`). A
hub id that is not in the registry is looked up the same way when its ``config.json`` is in
the local Hugging Face cache, otherwise it goes to the role's default stage, which checks
the model type when it loads. Other specs (``ViT-B-32:laion2b_s34b_b79k`` CLIP specs,
``.pth`` checkpoints) go to the role's default stage unchanged.

Third parties add models without editing ovperc, with :func:`register_model` /
:func:`register_stage` or from a package entry point in the ``ovperc.models`` group (a
callable run once, with no arguments, when the registry is first used). Stage classes may
be given as ``"module:Class"`` strings, imported only when a stage is built.

Example:
    >>> import ovperc
    >>> [m.name for m in ovperc.models("detector")][:2]
    ['gdino-tiny', 'gdino-base']
    >>> resolve("detector", "llmdet-tiny").model
    'iSEE-Laboratory/llmdet_tiny'
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: The roles of the chain, in order.
ROLES = ("tagger", "detector", "segmenter", "classifier")
#: Package entry-point group whose callables register third-party models.
ENTRY_POINT_GROUP = "ovperc.models"
#: Endings of weight/config files: such a spec is a (missing) file, not a short name.
_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".json", ".txt", ".onnx")


@dataclass(frozen=True)
class ModelEntry:
    """One known model: what it is called, what it does, what it costs.

    Attributes:
        name: short name (``llmdet-tiny``).
        roles: the roles it can fill (``("detector",)``).
        stage: the stage class, or its ``"module:Class"`` path (imported on use);
            ``None``: the default stage of each role (as for a CLIP model that is both
            tagger and classifier).
        hub_id: Hugging Face repo id, when it lives on the hub.
        model: what the stage is given as its model; default ``hub_id`` (``None`` for
            both: the stage's own default).
        licence: licence of the weights (``Apache-2.0``).
        gated: the hub repo asks users to accept terms before downloading.
        params_m: published parameter count in millions (``None``: not published).
        input_size: the model's input resolution as published (``"800-1333"``).
        options: keyword arguments the stage gets for this model.
        quality: one published quality figure with its benchmark (``"LVIS minival AP 44.7"``).
        source: where ``params_m`` / ``quality`` were published.

    Example:
        >>> ModelEntry("my-det", ("detector",), "my_pkg.det:MyDetector").model is None
        True
    """

    name: str
    roles: tuple[str, ...]
    stage: str | type | None = None
    hub_id: str | None = None
    model: str | None = None
    licence: str = "unknown"
    gated: bool = False
    params_m: float | None = None
    input_size: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    quality: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"a model entry needs a non-empty name, got {self.name!r}")
        if isinstance(self.roles, str):
            object.__setattr__(self, "roles", (self.roles,))
        unknown = [r for r in self.roles if r not in ROLES]
        if not self.roles or unknown:
            raise ValueError(f"model {self.name!r}: roles must be some of {ROLES}, got {self.roles!r}")
        if self.model is None and self.hub_id is not None:
            object.__setattr__(self, "model", self.hub_id)

    def stage_class(self, role: str) -> type:
        """The stage class for ``role``, imported now if it was given as ``"module:Class"``."""
        if self.stage is None:
            return _default_stage(role)
        return import_stage(self.stage, what=f"model {self.name!r}")


@dataclass(frozen=True)
class Resolved:
    """What a model spec turned into: the stage class and what to give it.

    Attributes:
        stage: the stage class.
        model: the model argument for the stage (hub id, path or spec).
        options: keyword arguments from the registry entry (the caller's win).
        entry: the registry entry, when the spec named one.
        model_type: the ``config.json`` ``model_type`` the choice was made from, if any.
    """

    stage: type
    model: Any
    options: Mapping[str, Any]
    entry: ModelEntry | None = None
    model_type: str | None = None


@dataclass
class _Registry:
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    by_type: dict[str, tuple[str | type, tuple[str, ...]]] = field(default_factory=dict)


_LOCK = threading.RLock()
_STATE: list[_Registry] = []  # the process's one registry, built on first use


def _registry() -> _Registry:
    with _LOCK:
        if not _STATE:
            from ovperc import catalog

            state = _Registry()
            _STATE.append(state)
            for entry in catalog.MODELS:
                state.entries[entry.name] = entry
            for model_type, (stage, roles) in catalog.MODEL_TYPES.items():
                state.by_type[model_type] = (stage, roles)
            _load_entry_points()
        return _STATE[0]


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()()
        except Exception as error:  # a broken plug-in must not stop ovperc
            logger.warning("model plug-in %s (%s) failed to register: %s", point.name, point.value, error)


def register_model(entry: ModelEntry, *, replace: bool = False) -> ModelEntry:
    """Add a model under its short name, so every ``--detector`` / ``model=`` option takes it.

    Args:
        entry: the model (its stage may be a ``"module:Class"`` string).
        replace: allow replacing an entry of the same name.

    Raises:
        ValueError: the name is taken and ``replace`` is false.

    Example:
        >>> register_model(ModelEntry("my-det", ("detector",), "my_pkg.det:MyDetector",
        ...                           hub_id="me/my-det"))  # doctest: +SKIP
    """
    if not isinstance(entry, ModelEntry):
        raise TypeError(f"register_model takes a ModelEntry, got {type(entry).__name__}")
    with _LOCK:
        state = _registry()
        if entry.name in state.entries and not replace:
            raise ValueError(f"model {entry.name!r} is already registered; pass replace=True")
        state.entries[entry.name] = entry
    return entry


def register_stage(
    model_type: str, stage: str | type, *, roles: tuple[str, ...] | str = ("detector",),
    replace: bool = False,
) -> None:
    """Serve every folder whose ``config.json`` says ``model_type`` with ``stage``.

    Args:
        model_type: the ``model_type`` of the model's ``config.json`` (``"owlv2"``).
        stage: the stage class or its ``"module:Class"`` path; it is built as
            ``stage(model, device=..., dtype=..., **options)``.
        roles: the roles that stage fills.
        replace: allow replacing the stage of an already served ``model_type``.

    Raises:
        ValueError: the model type is served already and ``replace`` is false, or a role
            is unknown.

    Example:
        >>> register_stage("my-arch", "my_pkg.det:MyDetector")  # doctest: +SKIP
    """
    roles = (roles,) if isinstance(roles, str) else tuple(roles)
    if not roles or any(r not in ROLES for r in roles):
        raise ValueError(f"roles must be some of {ROLES}, got {roles!r}")
    with _LOCK:
        state = _registry()
        if model_type in state.by_type and not replace:
            raise ValueError(f"model_type {model_type!r} is already served by "
                             f"{_stage_name(state.by_type[model_type][0])}; pass replace=True")
        state.by_type[model_type] = (stage, roles)


def models(role: str | None = None) -> list[ModelEntry]:
    """Every registered model (or those that can fill ``role``), in registration order.

    Example:
        >>> "llmdet-tiny" in [m.name for m in models("detector")]
        True
    """
    if role is not None:
        _check_role(role)
    return [m for m in _registry().entries.values() if role is None or role in m.roles]


def model_types(role: str | None = None) -> dict[str, str]:
    """``model_type`` -> stage class path, for the types that can fill ``role``.

    Example:
        >>> model_types("detector")["owlv2"]
        'ovperc.stages.owl:OwlDetector'
    """
    return {t: _stage_name(stage) for t, (stage, roles) in _registry().by_type.items()
            if role is None or role in roles}


def get_model(name: str) -> ModelEntry:
    """The entry registered under a short name.

    Raises:
        ValueError: no such name; the message lists the known ones.

    Example:
        >>> get_model("owlv2-base").hub_id
        'google/owlv2-base-patch16-ensemble'
    """
    entries = _registry().entries
    if name not in entries:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(entries)}")
    return entries[name]


def resolve(role: str, spec: Any) -> Resolved:
    """The stage class and model argument for a role's model spec.

    Args:
        role: ``tagger``, ``detector``, ``segmenter`` or ``classifier``.
        spec: a short name, hub id, local folder/file, a role-specific spec (CLIP
            ``ARCH:PRETRAINED``), or ``None`` for the role's default stage with its own
            default model.

    Raises:
        ValueError: an unknown short name (the message lists the role's names), a model
            of another role, or a folder whose ``model_type`` no stage serves for the role.

    Example:
        >>> resolve("detector", "gdino-tiny").stage.__name__
        'GroundingDinoDetector'
    """
    _check_role(role)
    state = _registry()
    if spec is None:
        return Resolved(_default_stage(role), None, {})
    if isinstance(spec, os.PathLike):
        spec = os.fspath(spec)
    if not isinstance(spec, str):  # a model object the role's stage takes (a shared ClipModel)
        return Resolved(_default_stage(role), spec, {})
    if spec in state.entries:
        entry = state.entries[spec]
        if role not in entry.roles:
            raise ValueError(f"{spec!r} is a {'/'.join(entry.roles)} model, not a {role}; "
                             f"{role} models: {_names(role)}")
        return Resolved(entry.stage_class(role), entry.model, dict(entry.options), entry)
    path = Path(spec).expanduser()
    if path.exists():
        model_type = _local_model_type(path)
        if model_type is None:
            return Resolved(_default_stage(role), spec, {})
        return _by_type(role, model_type, spec, strict=True)
    for entry in state.entries.values():
        if entry.hub_id == spec and role in entry.roles:
            return Resolved(entry.stage_class(role), spec, dict(entry.options), entry)
    if _looks_like_name(spec):
        raise ValueError(f"unknown {role} model {spec!r}; known {role} models: {_names(role)} "
                         "(or give a hub id such as org/name, or a local folder)")
    if "/" in spec and ":" not in spec:
        model_type = _cached_model_type(spec)
        if model_type is not None:
            return _by_type(role, model_type, spec, strict=role == "detector")
    return Resolved(_default_stage(role), spec, {})


def build_stage(role: str, spec: Any, *, device: str = "auto", dtype: str = "float32",
                **options: Any) -> Any:
    """A stage object (not yet loaded) for a role's model spec.

    Example:
        >>> detector = build_stage("detector", "llmdet-tiny", device="cpu")  # doctest: +SKIP
    """
    found = resolve(role, spec)
    kwargs = {**found.options, **options}
    return found.stage(found.model, device=device, dtype=dtype, **kwargs)


def stage_for_model_type(role: str, model_type: str) -> type:
    """The stage class serving ``model_type`` for ``role``.

    Raises:
        ValueError: no stage serves it; the message lists the types that are served.

    Example:
        >>> stage_for_model_type("detector", "mm-grounding-dino").__name__
        'GroundingDinoDetector'
    """
    return _by_type(role, model_type, None, strict=True).stage


def import_stage(stage: str | type, *, what: str = "stage") -> type:
    """A stage class from a class or a ``"module:Class"`` path.

    Raises:
        ImportError: the module or class does not exist (in this install).
    """
    if not isinstance(stage, str):
        return stage
    module_name, _, attr = stage.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{what}: a stage path must look like 'package.module:Class', got {stage!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ImportError(f"{what} needs the stage class {stage}, which this install of ovperc "
                          f"does not provide ({error})") from error


# ---------------------------------------------------------------------- helpers
def _check_role(role: str) -> None:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")


def _names(role: str) -> str:
    return ", ".join(m.name for m in models(role)) or "(none)"


def _default_stage(role: str) -> type:
    from ovperc.presets import STAGE_CLASSES

    module, name = STAGE_CLASSES[role]
    return import_stage(f"{module}:{name}", what=f"the default {role}")


def _stage_name(stage: str | type) -> str:
    return stage if isinstance(stage, str) else f"{stage.__module__}:{stage.__qualname__}"


def _by_type(role: str, model_type: str, spec: str | None, *, strict: bool) -> Resolved:
    served = _registry().by_type.get(model_type)
    if served is not None and role in served[1]:
        return Resolved(import_stage(served[0], what=f"model_type {model_type!r}"), spec, {},
                        model_type=model_type)
    if not strict:
        return Resolved(_default_stage(role), spec, {}, model_type=model_type)
    known = ", ".join(model_types(role)) or "(none)"
    where = f"{spec!r} has model_type {model_type!r}" if spec else f"model_type {model_type!r}"
    raise ValueError(f"{where}, which no {role} stage serves; {role} model types: {known} "
                     "(ovperc.register_stage adds one)")


def _read_model_type(config: Path) -> str | None:
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(f"cannot read the model_type of {config}: {error}") from error
    return value if isinstance(value, str) and value else None


def _local_model_type(path: Path) -> str | None:
    config = path / "config.json"
    return _read_model_type(config) if path.is_dir() and config.is_file() else None


def _cached_model_type(repo_id: str) -> str | None:
    """``model_type`` of a hub repo whose ``config.json`` is already cached (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return _read_model_type(Path(cached)) if isinstance(cached, str) else None


def _looks_like_name(spec: str) -> bool:
    """A bare word (no ``/``, ``:``, ``\\``, no file suffix): only a short name can mean it."""
    return not any(c in spec for c in "/:\\") and not spec.lower().endswith(_FILE_SUFFIXES)
