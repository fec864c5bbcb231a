"""Loading transformers models by architecture: ``model_type`` from ``config.json``, clear errors.

The architecture of a hub id or a local ``save_pretrained`` folder is read from its
``config.json`` (``model_type``), never guessed from a file or repository name. Hub errors
become :class:`ovperc.hub.ModelNotAvailableError` with what to do; a gated repository (one
that needs its licence accepted on the hub first) says so, with the page to ask on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ovperc.hub import ModelNotAvailableError, hub_unavailable, is_local

HUB_URL = "https://huggingface.co"


@dataclass(frozen=True)
class Licence:
    """What a gated model's error tells the user about its terms.

    Attributes:
        name: the licence's name, e.g. ``"SAM License"``.
        note: one sentence on how it differs from the permissive default.
    """

    name: str
    note: str = ""


def model_type(model: str | os.PathLike, *, cache_dir: str | None = None,
               revision: str | None = None, licence: Licence | None = None) -> str:
    """The ``model_type`` in the ``config.json`` of a hub id or local folder.

    Raises:
        ModelNotAvailableError: a hub id that cannot be fetched (gated, offline, missing).
        ValueError: a local path without a ``config.json`` naming a ``model_type``.

    Example:
        >>> model_type("./sam2.1-hiera-tiny")  # doctest: +SKIP
        'sam2'
    """
    from transformers import PretrainedConfig

    name = os.fspath(model)
    try:
        config, _ = PretrainedConfig.get_config_dict(name, cache_dir=cache_dir, revision=revision)
    except OSError as error:
        if is_local(name):
            raise ValueError(f"{name!r} is not a transformers model folder (no readable config.json): "
                             f"{error}") from error
        raise load_error(name, error, licence) from error
    kind = config.get("model_type")
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"the config.json of {name!r} names no model_type; cannot tell its architecture")
    return kind


def from_pretrained(cls: Any, model: str, *, licence: Licence | None = None, **kwargs: Any) -> Any:
    """``cls.from_pretrained(model, ...)`` without remote code, hub errors made clear.

    Example:
        >>> from transformers import Sam2Model
        >>> from_pretrained(Sam2Model, "./sam2.1-hiera-tiny")  # doctest: +SKIP
    """
    try:
        return cls.from_pretrained(model, trust_remote_code=False, **kwargs)
    except OSError as error:
        if is_local(model):
            raise
        raise load_error(model, error, licence) from error


def load_with_processor(model: str, model_class_for: Callable[[str], Any], *, device: Any, dtype: Any,
                        cache_dir: str | None = None, revision: str | None = None,
                        licence: Licence | None = None) -> tuple[Any, Any, Any]:
    """Config, processor and model of a hub id or folder, the model class chosen by
    ``model_class_for(config.model_type)`` (which raises ``ValueError`` for a type it does
    not serve); the model is moved to ``device``/``dtype`` in eval mode.

    Raises:
        ModelNotAvailableError: a hub model that cannot be fetched (gated ones say so).
        ValueError: the config's ``model_type`` is not one ``model_class_for`` serves.

    Example:
        >>> config, processor, model = load_with_processor(  # doctest: +SKIP
        ...     "./owlv2", lambda kind: Owlv2ForObjectDetection, device="cpu", dtype=torch.float32)
    """
    from transformers import AutoConfig, AutoProcessor

    kwargs: dict[str, Any] = {"cache_dir": cache_dir, "revision": revision, "trust_remote_code": False}
    try:
        config = AutoConfig.from_pretrained(model, **kwargs)
        model_class = model_class_for(config.model_type)
        processor = AutoProcessor.from_pretrained(model, **kwargs)
        network = model_class.from_pretrained(model, config=config, **kwargs)
    except OSError as error:
        if is_local(model):
            raise
        raise load_error(model, error, licence) from error
    return config, processor, network.to(device=device, dtype=dtype).eval()


def load_error(model: str, error: BaseException, licence: Licence | None = None) -> ModelNotAvailableError:
    """The error to raise when a hub model could not be loaded; gated repositories say so."""
    if is_gated(error):
        terms = ""
        if licence is not None:
            note = f": {licence.note}" if licence.note else ""
            terms = f" Its licence is the {licence.name}, not Apache-2.0{note}."
        return ModelNotAvailableError(
            f"{model!r} is a gated model: the hub gives its weights only to accounts that accepted "
            f"its terms. Request access at {HUB_URL}/{model}, then log in (`hf auth login`) or set "
            f"HF_TOKEN; or pass a local folder that holds the model.{terms}"
        )
    return hub_unavailable(model, error if isinstance(error, Exception) else RuntimeError(str(error)))


def is_gated(error: BaseException) -> bool:
    """True when ``error`` or one of its causes is huggingface_hub's ``GatedRepoError``."""
    from huggingface_hub.errors import GatedRepoError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, GatedRepoError):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
