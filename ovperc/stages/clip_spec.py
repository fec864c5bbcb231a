"""How a CLIP model is named: spec strings, parsed into where the weights come from.

A model is named by a *spec* string:

- ``"ViT-B-32:laion2b_s34b_b79k"``: an open_clip architecture and one of its pretrained
  tags (``open_clip.list_pretrained()``); open_clip downloads the weights on first use into
  the Hugging Face cache.
- ``"hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"``: a Hugging Face repo in open_clip's hub
  format (``open_clip_config.json`` plus weights).
- ``"/path/to/folder"`` (or ``"local-dir:/path/to/folder"``): a local folder in that same
  format: ``open_clip_config.json`` and ``open_clip_model.safetensors`` or
  ``open_clip_pytorch_model.bin``.
- ``"ViT-B-32:/path/to/checkpoint.pt"``: an open_clip architecture and a local checkpoint
  file (a state dict, ``.pt``/``.bin``/``.pth`` or ``.safetensors``).

Weights are read with safetensors or ``torch.load(weights_only=True)``, never unpickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

SourceKind = Literal["pretrained", "hub", "folder", "checkpoint"]
_LOCAL_DIR = "local-dir:"
_HF_HUB = "hf-hub:"


@dataclass(frozen=True)
class ClipSource:
    """Where a CLIP model comes from, parsed from a spec string.

    Attributes:
        kind: ``pretrained`` (architecture + tag), ``hub`` (``hf-hub:`` repo), ``folder``
            (local open_clip hub-format folder) or ``checkpoint`` (architecture + file).
        name: the open_clip name to build (``ViT-B-32``, ``hf-hub:org/repo``,
            ``local-dir:/path``).
        pretrained: the pretrained tag or checkpoint path, when there is one.
        spec: the string it was parsed from.
    """

    kind: SourceKind
    name: str
    pretrained: str | None
    spec: str


def parse_spec(spec: str) -> ClipSource:
    """Parse a CLIP model spec (see the module docstring for the accepted forms).

    Raises:
        ValueError: the spec matches none of the accepted forms.

    Example:
        >>> parse_spec("ViT-B-32:laion2b_s34b_b79k").kind
        'pretrained'
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"a CLIP model spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    if spec.startswith(_HF_HUB):
        if not spec[len(_HF_HUB):].strip("/"):
            raise ValueError(f"{spec!r} names no repo; use 'hf-hub:org/repo'")
        return ClipSource("hub", spec, None, spec)
    path_text = spec[len(_LOCAL_DIR):] if spec.startswith(_LOCAL_DIR) else spec
    path = Path(path_text).expanduser()
    if path.is_dir():
        if not (path / "open_clip_config.json").is_file():
            raise ValueError(
                f"{path} is a folder without open_clip_config.json; a local CLIP model is a "
                "folder in open_clip's hub format (open_clip_config.json + "
                "open_clip_model.safetensors), or 'ModelName:/path/to/checkpoint'"
            )
        return ClipSource("folder", _LOCAL_DIR + str(path.resolve()), None, spec)
    if spec.startswith(_LOCAL_DIR):
        raise ValueError(f"folder {path} does not exist (from spec {spec!r})")
    if path.is_file():
        raise ValueError(
            f"{spec!r} is a checkpoint file without an architecture; write it as "
            f"'ModelName:{spec}', e.g. 'ViT-B-32:{spec}'"
        )
    name, sep, pretrained = spec.partition(":")
    if not sep or not name or not pretrained:
        raise ValueError(
            f"cannot read CLIP model spec {spec!r}; accepted: 'ViT-B-32:laion2b_s34b_b79k' "
            "(architecture:pretrained tag), 'hf-hub:org/repo', a local open_clip folder, or "
            "'ViT-B-32:/path/to/checkpoint.pt'"
        )
    if Path(pretrained).expanduser().is_file():
        return ClipSource("checkpoint", name, str(Path(pretrained).expanduser().resolve()), spec)
    return ClipSource("pretrained", name, pretrained, spec)


def _file_identity(path: Path) -> str:
    """Size and mtime of a file: cheap, and changes whenever the weights are replaced."""
    stat = path.stat()
    return f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
