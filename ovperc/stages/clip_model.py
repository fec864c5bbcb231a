"""One open_clip model, loaded lazily once and shared by the CLIP tagger and classifier.

A model is named by a spec string (``"ViT-B-32:laion2b_s34b_b79k"``, ``"hf-hub:..."``, a
local open_clip folder, or ``"ViT-B-32:/path/to/checkpoint.pt"``); the forms are described
in :mod:`ovperc.stages.clip_spec`. Weights are read with safetensors or
``torch.load(weights_only=True)``, never unpickled.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.hub import ModelNotAvailableError, offline
from ovperc.stages.clip_pixels import rgb_array, split_transform, trim_to_center
from ovperc.stages.clip_spec import (  # noqa: F401  (re-exported)
    _HF_HUB,
    _LOCAL_DIR,
    ClipSource,
    SourceKind,
    _file_identity,
    parse_spec,
)
from ovperc.stages.quantize import check_quantize, quantize_linear

if TYPE_CHECKING:
    import torch
    from PIL import Image

logger = logging.getLogger(__name__)

_PRECISION = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


class ClipModel:
    """A lazily loaded open_clip model with its preprocessing and tokenizer.

    Nothing loads until the first ``encode_*`` call (or :meth:`load`); the weights are then
    read once and kept. The CLIP tagger and classifier share one instance when they name
    the same model (``Pipeline.from_preset`` does this).

    Args:
        spec: the model, as described in :mod:`ovperc.stages.clip_spec`:
            ``"ViT-B-32:laion2b_s34b_b79k"``, ``"hf-hub:org/repo"``, a local open_clip
            folder, or ``"ViT-B-32:/path/to/checkpoint.pt"``.
        device: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:1``, ...
        dtype: ``float32`` (default), ``float16`` or ``bfloat16`` (GPU only).
        batch_size: images or texts per forward pass.
        quantize: ``"int8"``: the image tower's linear layers as dynamic int8, CPU only
            (:mod:`ovperc.stages.quantize`); the text tower stays float32, so cached text
            embeddings stay valid. Default ``None``, the float model.

    Raises:
        ValueError: the spec is malformed (checked at construction, without loading).

    Example:
        >>> clip = ClipModel("ViT-B-32:laion2b_s34b_b79k", device="cpu")  # doctest: +SKIP
        >>> clip.encode_texts(["a photo of a cat."]).shape  # doctest: +SKIP
        torch.Size([1, 512])
    """

    def __init__(
        self,
        spec: str,
        *,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 64,
        quantize: str | None = None,
    ) -> None:
        if dtype not in _PRECISION:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_PRECISION)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.source = parse_spec(spec)
        self.spec = self.source.spec
        self.device_name = device
        self.dtype_name = dtype
        self.batch_size = batch_size
        self.quantize = check_quantize(quantize, dtype=dtype)
        self._lock = threading.Lock()
        self._model: Any = None
        self._preprocess: Callable[[Image.Image], torch.Tensor] | None = None
        self._tokenizer: Any = None
        self._device: torch.device | None = None
        self._cache_key: str | None = None

    @classmethod
    def from_modules(
        cls,
        model: Any,
        preprocess: Callable[[Image.Image], torch.Tensor],
        tokenizer: Any,
        *,
        name: str,
        batch_size: int = 64,
    ) -> ClipModel:
        """Wrap an open_clip model you built yourself (fine-tuned, in memory, ...).

        ``name`` becomes the :attr:`cache_key`, so it must change whenever the weights do:
        on-disk caches of text embeddings are keyed by it.

        Example:
            >>> model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32")  # doctest: +SKIP
            >>> clip = ClipModel.from_modules(model, preprocess,
            ...     open_clip.get_tokenizer("ViT-B-32"), name="my-finetune-v3")  # doctest: +SKIP
        """
        import torch

        self = cls.__new__(cls)
        self.source = ClipSource("pretrained", name, None, name)
        self.spec = name
        self.device_name = "given"
        self.dtype_name = "given"
        self.batch_size = batch_size
        self.quantize = None
        self._lock = threading.Lock()
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = tokenizer
        self._device = next(model.parameters(), torch.empty(0)).device
        self._cache_key = f"modules:{name}"
        return self

    # ------------------------------------------------------------------ loading
    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory."""
        return self._model is not None

    def load(self) -> ClipModel:
        """Load the model now (otherwise the first ``encode_*`` call does it).

        Raises:
            ModelNotAvailableError: the weights are neither on disk nor downloadable.
            ValueError: unknown architecture or pretrained tag.

        Example:
            >>> ClipModel("ViT-B-32:laion2b_s34b_b79k").load()  # doctest: +SKIP
        """
        with self._lock:
            if self._model is None:
                self._load()
        return self

    def _load(self) -> None:
        import open_clip

        from ovperc.device import resolve_device, resolve_dtype

        device = resolve_device(self.device_name)
        resolve_dtype(self.dtype_name, device)  # same checks as every other stage
        source = self.source
        if source.kind in ("pretrained", "checkpoint"):
            known = open_clip.list_models()
            if source.name not in known:
                raise ValueError(
                    f"unknown open_clip architecture {source.name!r} in {source.spec!r}; "
                    f"known ones include {', '.join(known[:12])}, ... (open_clip.list_models())"
                )
        if source.kind == "pretrained":
            tags = open_clip.list_pretrained_tags_by_model(source.name)
            if source.pretrained not in tags:
                raise ValueError(
                    f"{source.pretrained!r} is neither a pretrained tag of {source.name} nor an "
                    f"existing file; tags: {', '.join(tags) or 'none'}"
                )
        logger.info("loading CLIP %s on %s (%s)", source.spec, device, self.dtype_name)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                source.name,
                pretrained=source.pretrained,
                device=device,
                precision=_PRECISION[self.dtype_name],
                weights_only=True,
                require_pretrained=True,
            )
        except (RuntimeError, OSError) as error:
            raise self._unavailable(error) from error
        quantize_linear(model.visual, check_quantize(self.quantize, device=device, dtype=self.dtype_name))
        self._model = model.eval()
        self._preprocess = preprocess
        self._tokenizer = open_clip.get_tokenizer(source.name)
        self._device = device

    def _unavailable(self, error: Exception) -> ModelNotAvailableError:
        source = self.source
        if source.kind == "pretrained":
            import open_clip

            cfg = open_clip.get_pretrained_cfg(source.name, source.pretrained or "") or {}
            repo = str(cfg.get("hf_hub", "")).strip("/")
            how = (
                f"download it once with `hf download {repo}` on a machine with network access"
                if repo else f"download {cfg.get('url', 'the checkpoint')} and pass "
                f"'{source.name}:/path/to/checkpoint'"
            )
        elif source.kind == "hub":
            how = f"download it once with `hf download {source.name[len(_HF_HUB):]}`"
        else:
            how = "check that the folder or checkpoint holds complete open_clip weights"
        state = "offline mode (HF_HUB_OFFLINE=1) and not in the cache" if offline() else str(error)
        return ModelNotAvailableError(
            f"cannot load CLIP model {source.spec!r}: {state}. To fix: {how}, "
            "or pass a local open_clip folder."
        )

    # ------------------------------------------------------------------ identity
    @property
    def cache_key(self) -> str:
        """A stable identity of the weights, for on-disk caches of embeddings.

        Pretrained tags and hub repos are named as given; local files add their size and
        modification time, so replacing the weights invalidates old caches.

        Example:
            >>> ClipModel("ViT-B-32:laion2b_s34b_b79k").cache_key
            'open_clip:ViT-B-32:laion2b_s34b_b79k'
        """
        if self._cache_key is None:
            source = self.source
            if source.kind == "folder":
                folder = Path(source.name[len(_LOCAL_DIR):])
                files = sorted(
                    p for p in folder.iterdir()
                    if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".pth", ".pt")
                )
                parts = [str(folder)] + [_file_identity(p) for p in files]
                self._cache_key = "folder:" + "|".join(parts)
            elif source.kind == "checkpoint":
                path = Path(source.pretrained or "")
                self._cache_key = f"checkpoint:{source.name}:{path}:{_file_identity(path)}"
            elif source.kind == "hub":
                self._cache_key = source.name
            else:
                self._cache_key = f"open_clip:{source.name}:{source.pretrained}"
        return self._cache_key

    # ------------------------------------------------------------------ encoding
    @property
    def model(self) -> Any:
        """The open_clip model (loads it on first access)."""
        return self.load()._model

    @property
    def device(self) -> torch.device:
        """The device the model runs on (loads it on first access)."""
        self.load()
        assert self._device is not None
        return self._device

    @property
    def logit_scale(self) -> float:
        """CLIP's learned softmax temperature (``exp`` of the stored log scale)."""
        return float(self.model.logit_scale.detach().float().exp().item())

    @property
    def image_mean(self) -> tuple[float, float, float]:
        """The RGB mean (0..1) the model normalises images with."""
        import open_clip

        cfg = getattr(self.model.visual, "preprocess_cfg", None) or {}
        return tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN))  # type: ignore[return-value]

    def encode_images(
        self, images: Sequence[np.ndarray | Image.Image], *, batch_size: int | None = None
    ) -> torch.Tensor:
        """L2-normalised embeddings ``(N, D)`` (float32, on CPU) of RGB images or crops.

        Images go through the model's own preprocessing and are embedded
        ``batch_size`` (default: the model's) at a time.

        Example:
            >>> clip.encode_images([image]).shape  # doctest: +SKIP
            torch.Size([1, 512])
        """
        import torch
        from PIL import Image as PILImage

        model = self.model
        if len(images) == 0:
            return torch.zeros(0, self.embed_dim)
        dtype = self._input_dtype()
        step = batch_size or self.batch_size
        out = []
        for start in range(0, len(images), step):
            chunk = [img if isinstance(img, PILImage.Image) else PILImage.fromarray(rgb_array(img))
                     for img in images[start:start + step]]
            pixels = self._pixels(chunk).to(self.device, dtype=dtype)
            with torch.inference_mode():
                out.append(model.encode_image(pixels).float().cpu())
        return torch.nn.functional.normalize(torch.cat(out), dim=-1)

    def _pixels(self, images: list[Image.Image]) -> torch.Tensor:
        """The preprocessed batch ``(N, 3, H, W)``.

        With open_clip's usual transform (PIL steps, then to-tensor and normalise) the
        PIL steps run per image and the tensor steps once for the whole batch: the same
        arithmetic, without two small tensor operations per image (they dominate the cost
        of small crops, and far more so when the CPU is shared with other processes).
        Any other transform runs per image.
        """
        import torch

        images = [trim_to_center(img, self._preprocess) for img in images]
        split = split_transform(self._preprocess)
        if split is not None:
            pil_steps, normalize = split
            arrays = [np.asarray(pil_steps(img)) for img in images]
            if all(a.dtype == np.uint8 and a.ndim == 3 and a.shape == arrays[0].shape
                   and a.shape[2] == 3 for a in arrays):
                batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
                batch = batch.to(torch.get_default_dtype()).div(255)
                mean = torch.as_tensor(normalize.mean, dtype=batch.dtype).view(1, -1, 1, 1)
                std = torch.as_tensor(normalize.std, dtype=batch.dtype).view(1, -1, 1, 1)
                return batch.sub_(mean).div_(std)
        return torch.stack([self._preprocess(img) for img in images])

    def encode_texts(
        self, texts: Sequence[str], *, batch_size: int | None = None
    ) -> torch.Tensor:
        """L2-normalised embeddings ``(N, D)`` (float32, on CPU) of texts, batched.

        Texts are embedded in order of token length, so each batch is cut to its longest
        text instead of the full context (exact for CLIP's causal text encoder).

        Example:
            >>> clip.encode_texts(["a photo of a cat.", "a photo of a dog."]).shape  # doctest: +SKIP
            torch.Size([2, 512])
        """
        import torch

        self.load()
        if len(texts) == 0:
            return torch.zeros(0, self.embed_dim)
        tokens = self._tokenizer(list(texts))
        lengths = (tokens != 0).sum(dim=1)
        order = torch.argsort(lengths, descending=True, stable=True)
        result = torch.empty(len(texts), self.embed_dim)
        step = batch_size or self.batch_size
        for start in range(0, len(texts), step):
            idx = order[start:start + step]
            batch = tokens[idx]
            with torch.inference_mode():
                result[idx] = self._encode_tokens(batch.to(self.device)).float().cpu()
        return torch.nn.functional.normalize(result, dim=-1)

    @property
    def embed_dim(self) -> int:
        """Size of the joint image-text embedding."""
        model = self.model
        proj = getattr(model, "text_projection", None)
        if proj is not None and hasattr(proj, "shape"):
            return int(proj.shape[-1])
        return int(model.encode_text(self._tokenizer(["a"]).to(self.device)).shape[-1])

    def _encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        import torch
        from open_clip.transformer import text_global_pool

        model = self.model
        if not self._can_trim(model):
            return model.encode_text(tokens)
        used = int((tokens != 0).sum(dim=1).max().item())
        tokens = tokens[:, :used]
        cast = model.transformer.get_cast_dtype()
        x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:used].to(cast)
        x = model.transformer(x, attn_mask=model.attn_mask[:used, :used])
        x = model.ln_final(x)
        x = text_global_pool(x, tokens, model.text_pool_type,
                             eos_token_id=getattr(model, "text_eos_id", None))
        proj = model.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj

    def _can_trim(self, model: Any) -> bool:
        """Cutting padding is exact only for a causal encoder pooled at the end token."""
        from open_clip.model import CLIP
        from open_clip.tokenizer import SimpleTokenizer

        return (
            type(model) is CLIP
            and isinstance(self._tokenizer, SimpleTokenizer)
            and getattr(model, "attn_mask", None) is not None
            and getattr(model, "text_pool_type", None) in ("argmax", "eos")
        )

    def _input_dtype(self) -> torch.dtype:
        """The dtype of the image tower's first convolution or linear layer (its input's).

        open_clip's half precision casts only the convolutions, linear layers and
        projections; embeddings such as ``class_embedding`` stay float32, so the first
        parameter does not tell what the pixels must be.
        """
        import torch

        for module in self.model.visual.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                return module.weight.dtype
        return torch.float32

    def __repr__(self) -> str:
        state = "loaded" if self.loaded else "not loaded"
        return f"ClipModel({self.spec!r}, device={self.device_name!r}, {state})"


def resolve_clip(
    model: str | ClipModel, *, device: str = "auto", dtype: str = "float32",
    quantize: str | None = None,
) -> ClipModel:
    """A :class:`ClipModel` for a spec string, or the given one unchanged.

    Raises:
        ValueError: ``quantize`` given with a ready :class:`ClipModel` that was built
            with another ``quantize``.

    Example:
        >>> resolve_clip("ViT-B-32:laion2b_s34b_b79k").spec
        'ViT-B-32:laion2b_s34b_b79k'
    """
    if isinstance(model, ClipModel):
        own = getattr(model, "quantize", None)  # subclasses may skip __init__
        if check_quantize(quantize) not in (None, own):
            raise ValueError(f"quantize={quantize!r} given with a ClipModel built with "
                             f"quantize={own!r}; build the ClipModel with it instead")
        return model
    if isinstance(model, str):
        return ClipModel(model, device=device, dtype=dtype, quantize=quantize)
    raise TypeError(f"model must be a spec string or a ClipModel, got {type(model).__name__}")


def text_key(*parts: Sequence[str] | str) -> str:
    """A short stable hash of strings and string lists (for cache keys)."""
    digest = hashlib.sha256()
    for part in parts:
        items = [part] if isinstance(part, str) else list(part)
        digest.update(str(len(items)).encode())
        for item in items:
            digest.update(b"\x00" + item.encode("utf-8"))
        digest.update(b"\x01")
    return digest.hexdigest()[:32]
