"""Video segmenter: SAM 2.1, EdgeTAM and the SAM 3 tracker from transformers, streaming.

Frames go into a transformers inference session one at a time (``Sam2VideoModel`` and its
siblings in streaming mode). Each object is started or re-anchored from a box prompt and
carried forward by the model's memory: the last ``num_maskmem`` frames' memory features,
its conditioning (prompted) frames and up to ``max_object_pointers_in_encoder`` object
pointers.

A transformers session keeps every frame it was given and every output it made, so an
hour-long video would fill the memory. Here, after each frame, the session is pruned to what
the model can still read: frame pixels and full-size masks are dropped once the frame's
memory is encoded, tracked outputs older than ``window`` frames are dropped, and only the
``max_cond_frames`` most recent prompted frames of each object are kept. Memory and time
per frame therefore stay flat however long the video (``bench/bench_track.py`` measures
it).

The architecture comes from the folder's ``config.json`` ``model_type`` (see
:data:`VIDEO_ARCHITECTURES`); short names come from ovperc's model catalog (``sam2.1-tiny``,
``sam2.1-small``, ``sam2.1-base-plus``, ``sam2.1-large``, ``edgetam``, ``sam3-tracker``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ovperc.device import resolve_device, resolve_dtype
from ovperc.stages.hf_loading import from_pretrained, model_type
from ovperc.stages.sam_hf import SAM3_LICENCE

if TYPE_CHECKING:
    from ovperc.video.types import VideoFrame

logger = logging.getLogger(__name__)

#: ``model_type`` in ``config.json`` -> (transformers video model class, its processor class).
#: The image checkpoints (``sam2``, ``edgetam``, ``sam3_tracker``; ``sam3_video`` is the
#: combined ``facebook/sam3`` checkpoint) load into the video classes with their weights.
VIDEO_ARCHITECTURES: dict[str, tuple[str, str]] = {
    "sam2": ("Sam2VideoModel", "Sam2VideoProcessor"),
    "sam2_video": ("Sam2VideoModel", "Sam2VideoProcessor"),
    "edgetam": ("EdgeTamVideoModel", "Sam2VideoProcessor"),
    "edgetam_video": ("EdgeTamVideoModel", "Sam2VideoProcessor"),
    "sam3_tracker": ("Sam3TrackerVideoModel", "Sam3TrackerVideoProcessor"),
    "sam3_tracker_video": ("Sam3TrackerVideoModel", "Sam3TrackerVideoProcessor"),
    "sam3_video": ("Sam3TrackerVideoModel", "Sam3TrackerVideoProcessor"),
}

DEFAULT_MODEL = "facebook/sam2.1-hiera-tiny"
#: The session's per-object tables (keyed by the model's object index).
_PER_OBJECT = ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj", "frames_tracked_per_obj")


class Sam2VideoSegmenter:
    """Follow objects through a stream of frames with a transformers video tracker.

    Args:
        model: a short name from the catalog (``sam2.1-tiny``, ``edgetam``, ...), a hub id
            (default ``facebook/sam2.1-hiera-tiny``) or a local ``save_pretrained`` folder.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        dtype: ``float32``; ``float16``/``bfloat16`` on a GPU.
        window: frames of tracked outputs kept per object (default: what the model reads,
            ``max(num_maskmem, max_object_pointers_in_encoder)``, 16 for SAM 2.1); smaller
            saves memory and time at some cost in memory the model can use.
        max_cond_frames: prompted (conditioning) frames kept per object, the most recent
            ones (default: the model's ``max_cond_frame_num`` when set, else 4).
        cache_dir: Hugging Face cache folder for hub downloads.
        revision: hub revision (branch, tag or commit).

    Example:
        >>> segmenter = Sam2VideoSegmenter("sam2.1-tiny", device="cpu")  # doctest: +SKIP
        >>> masks = segmenter.propagate(frame, {1: np.array([10, 20, 110, 220])})  # doctest: +SKIP
        >>> masks = segmenter.propagate(next_frame)  # doctest: +SKIP
        >>> masks[1].shape  # doctest: +SKIP
        (480, 640)
    """

    def __init__(
        self,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        device: str = "auto",
        dtype: str = "float32",
        window: int | None = None,
        max_cond_frames: int | None = None,
        cache_dir: str | None = None,
        revision: str | None = None,
    ) -> None:
        if not isinstance(model, (str, os.PathLike)) or not os.fspath(model):
            raise TypeError(f"model must be a short name, hub id or folder path, got {model!r}")
        for label, value in (("window", window), ("max_cond_frames", max_cond_frames)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{label} must be a positive int, got {value!r}")
        self.model_name = _hub_name(os.fspath(model))
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.cache_dir = cache_dir
        self.revision = revision
        self._window = window
        self._max_cond_frames = max_cond_frames
        self.architecture: str | None = None
        self._model: Any = None
        self._processor: Any = None
        self._session: Any = None
        self._position = 0  # the session's frame counter (consecutive, whatever the frame indices)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Sam2VideoSegmenter({self.model_name!r}, device={str(self.device)!r}, "
                f"dtype={str(self.dtype).removeprefix('torch.')!r})")

    # ------------------------------------------------------------------ loading
    def load(self) -> Sam2VideoSegmenter:
        """Load processor and model now instead of on first use; returns ``self``.

        Raises:
            ValueError: the folder's ``model_type`` is not a video tracker architecture.
            ModelNotAvailableError: a hub id that cannot be fetched (gated, offline).

        Example:
            >>> segmenter = Sam2VideoSegmenter("./sam2.1-hiera-tiny").load()  # doctest: +SKIP
        """
        with self._lock:
            if self._model is None:
                self._load_locked()
        return self

    def _load_locked(self) -> None:
        import transformers

        hub = {"cache_dir": self.cache_dir, "revision": self.revision}
        kind = model_type(self.model_name, licence=SAM3_LICENCE, **hub)
        if kind not in VIDEO_ARCHITECTURES:
            raise ValueError(f"{self.model_name!r} is a {kind!r} model, not a video tracker; "
                             f"supported model_type values: {', '.join(VIDEO_ARCHITECTURES)}")
        model_name, processor_name = VIDEO_ARCHITECTURES[kind]
        processor = _load_processor(getattr(transformers, processor_name), self.model_name, hub)
        model = from_pretrained(getattr(transformers, model_name), self.model_name,
                                licence=SAM3_LICENCE, **hub)
        self._processor = processor
        self._model = model.to(device=self.device, dtype=self.dtype).eval()
        self.architecture = kind
        logger.info("loaded video tracker %s (%s) on %s (%s)", self.model_name, kind, self.device, self.dtype)

    @property
    def model(self) -> Any:
        """The loaded transformers video model (loaded on first access, once)."""
        return self.load()._model

    @property
    def processor(self) -> Any:
        """The model's video processor (frame resizing, box rescaling, mask post-processing)."""
        return self.load()._processor

    @property
    def window(self) -> int:
        """Frames of tracked outputs kept per object."""
        if self._window is not None:
            return self._window
        config = self.model.config
        return max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder))

    @property
    def max_cond_frames(self) -> int:
        """Prompted frames kept per object."""
        if self._max_cond_frames is not None:
            return self._max_cond_frames
        configured = int(getattr(self.model.config, "max_cond_frame_num", -1))
        return configured if configured > 0 else 4

    # ------------------------------------------------------------------ tracking
    def propagate(self, frame: VideoFrame, boxes: Mapping[int, np.ndarray] | None = None
                  ) -> dict[int, np.ndarray]:
        """Masks on ``frame`` for every object followed (see
        :class:`~ovperc.video.segmenter.VideoSegmenter`).

        Example:
            >>> masks = segmenter.propagate(frame, {1: np.array([10, 20, 110, 220])})  # doctest: +SKIP
        """
        import torch

        model, processor = self.model, self.processor
        image = frame.image
        height, width = image.shape[:2]
        session = self._open_session()
        position = self._position
        self._position += 1
        with torch.inference_mode():
            if boxes:
                ids = [int(i) for i in boxes]
                limits = np.array([width, height, width, height], dtype=np.float64)
                prompts = [np.clip(np.asarray(boxes[i], dtype=np.float64).reshape(4), 0, limits).tolist()
                           for i in boxes]
                processor.add_inputs_to_inference_session(
                    session, frame_idx=position, obj_ids=ids, input_boxes=[prompts],
                    original_size=(height, width))
            if session.get_obj_num() == 0:
                return {}
            pixels = processor(images=image, return_tensors="pt").pixel_values[0]
            out = model(inference_session=session, frame_idx=position, frame=pixels.to(self.device))
            masks = processor.post_process_masks([out.pred_masks], original_sizes=[[height, width]],
                                                 binarize=True)[0][:, 0]
            present = (out.object_score_logits.reshape(-1) > 0).cpu().numpy()
            masks = masks.cpu().numpy().astype(bool) & present[:, None, None]
        self._prune(session, position)
        return {int(obj_id): masks[row] for row, obj_id in enumerate(out.object_ids)}

    def remove(self, ids: Iterable[int]) -> None:
        """Stop following these objects and free their memory.

        Example:
            >>> segmenter.remove([3])  # doctest: +SKIP
        """
        gone = {int(i) for i in ids}
        session = self._session
        if session is None or not gone & set(session.obj_ids):
            return
        keep = [i for i in session.obj_ids if i not in gone]
        old = dict(session._obj_id_to_idx)
        for name in _PER_OBJECT:
            table = getattr(session, name)
            setattr(session, name, {new: table[old[obj_id]] for new, obj_id in enumerate(keep)})
        session._obj_id_to_idx.clear()
        session._obj_idx_to_id.clear()
        for new, obj_id in enumerate(keep):
            session._obj_id_to_idx[obj_id] = new
            session._obj_idx_to_id[new] = obj_id
        session.obj_ids = list(keep)
        session.obj_with_new_inputs = [i for i in session.obj_with_new_inputs if i not in gone]

    def reset(self) -> None:
        """Forget every object and frame.

        Example:
            >>> segmenter.reset()  # doctest: +SKIP
        """
        self._session = None
        self._position = 0

    def memory_frames(self) -> int:
        """How many frames the session holds anything of (pixels, outputs, inputs): stays
        at most ``window + max_cond_frames`` however long the video.

        Example:
            >>> segmenter.memory_frames()  # doctest: +SKIP
            17
        """
        session = self._session
        if session is None:
            return 0
        held = set(session.processed_frames or {})
        for name in _PER_OBJECT:
            for table in getattr(session, name).values():
                if name == "output_dict_per_obj":
                    held.update(table["cond_frame_outputs"], table["non_cond_frame_outputs"])
                else:
                    held.update(table)
        return len(held)

    # ------------------------------------------------------------------ helpers
    def _open_session(self) -> Any:
        if self._session is None:
            self._session = self.processor.init_video_session(
                inference_device=self.device, dtype=self.dtype, max_vision_features_cache_size=1)
        return self._session

    def _prune(self, session: Any, position: int) -> None:
        """Drop what the model can no longer read after ``position``."""
        oldest = position - self.window + 1
        keep_cond = self.max_cond_frames
        if session.processed_frames:
            session.processed_frames.clear()  # pixels are needed only until the frame is encoded
        for obj_idx in list(session.output_dict_per_obj):
            outputs = session.output_dict_per_obj[obj_idx]
            tracked = outputs["non_cond_frame_outputs"]
            for frame_idx in [f for f in tracked if f < oldest]:
                del tracked[frame_idx]
            prompted = outputs["cond_frame_outputs"]
            for frame_idx in sorted(prompted)[:-keep_cond]:
                del prompted[frame_idx]
            for table in (tracked, prompted):  # full-size masks: read only by this frame's memory encoding
                if position in table:
                    table[position].pop("high_res_masks", None)
            seen = session.frames_tracked_per_obj[obj_idx]
            for frame_idx in [f for f in seen if f < oldest]:
                del seen[frame_idx]
            for name in ("point_inputs_per_obj", "mask_inputs_per_obj"):
                inputs = getattr(session, name)[obj_idx]
                for frame_idx in [f for f in inputs if f <= position]:
                    del inputs[frame_idx]


def _hub_name(spec: str) -> str:
    """A catalog short name's hub id; any other spec unchanged."""
    if any(c in spec for c in "/\\:") or os.path.exists(spec):
        return spec
    from ovperc.registry import models

    trackers = {m.name: m.hub_id for m in models("segmenter")
                if m.hub_id and m.name.startswith(("sam2", "edgetam", "sam3"))}
    if spec not in trackers:
        raise ValueError(f"unknown video tracker {spec!r}; known: {', '.join(trackers)} (or the hub id or "
                         "local folder of a SAM 2.1, EdgeTAM or SAM 3 tracker model)")
    return trackers[spec]


def _load_processor(cls: Any, model: str, hub: dict[str, Any]) -> Any:
    """The video processor; a folder saved with the image processor only gets a default
    video processor (a streaming session never uses it: frames go through the image one)."""
    try:
        return from_pretrained(cls, model, licence=SAM3_LICENCE, **hub)
    except OSError:
        if not os.path.isdir(model):
            raise
        import transformers

        logger.info("%s has no video processor config; using its image processor", model)
        image_processor = transformers.AutoImageProcessor.from_pretrained(model, **hub)
        return cls(image_processor=image_processor, video_processor=transformers.Sam2VideoVideoProcessor())
