"""Moving shapes: seeded clips of the shapes world with exact ground-truth tracks.

A clip is a fixed textured background with shapes gliding along straight paths, each
turning slowly. Shapes are drawn in a fixed depth order, so a shape passing over another
hides part of it (and sometimes all of it, for a few frames); some shapes enter the frame
from an edge after the clip has begun, others leave it before the end. Every frame is
rendered on demand from the clip's seed, so a long clip never sits in memory.

The ground truth of a frame lists each shape with at least :data:`MIN_VISIBLE` visible
pixels: its track id (1, 2, ... in order of first appearance, never reused), its class,
the box of its visible mask and that mask (the still world's half-coverage rule, with a
shape in front owning the pixels it covers).

Example:
    >>> clip = generate_clip(seed=0, frames=12, size=(96, 64))
    >>> frame = clip.frame(5)
    >>> frame.image.shape, len(frame.track_ids) == len(frame.xyxy)
    ((64, 96, 3), True)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ovperc.shapes.drawing import background as draw_background
from ovperc.shapes.drawing import coverage, outline, shape_colour
from ovperc.shapes.world import CLASSES, _masks

if TYPE_CHECKING:
    import supervision as sv

    from ovperc.video.types import FrameTracks

#: A shape with fewer visible pixels in a frame is not in that frame's ground truth.
MIN_VISIBLE = 20


@dataclass(frozen=True)
class Mover:
    """One shape's script: where it is in every frame of its life.

    Attributes:
        track_id: the shape's ground-truth id (1-based, in order of first appearance).
        class_id: index into :data:`~ovperc.shapes.world.CLASSES`.
        radius: outer radius in pixels.
        start, end: ``(x, y)`` centre at the ``first`` and ``last`` frame (it moves in a
            straight line between them; either may lie outside the frame).
        first, last: the frames (inclusive) during which the shape is drawn.
        angle, spin: rotation at ``first`` and its change per frame, in radians.
        colour: RGB of the shape.
    """

    track_id: int
    class_id: int
    radius: float
    start: tuple[float, float]
    end: tuple[float, float]
    first: int
    last: int
    angle: float
    spin: float
    colour: tuple[float, float, float]

    @property
    def class_name(self) -> str:
        """The class, e.g. ``"red circle"``."""
        return CLASSES[self.class_id]

    def pose(self, index: int) -> tuple[tuple[float, float], float] | None:
        """Centre and rotation at frame ``index``, or ``None`` outside the shape's life."""
        if not self.first <= index <= self.last:
            return None
        t = 0.0 if self.last == self.first else (index - self.first) / (self.last - self.first)
        x = self.start[0] + t * (self.end[0] - self.start[0])
        y = self.start[1] + t * (self.end[1] - self.start[1])
        return (x, y), self.angle + self.spin * (index - self.first)


@dataclass(frozen=True)
class ClipFrame:
    """One rendered frame and its exact ground truth (shapes in depth order, front last).

    Example:
        >>> clip = generate_clip(seed=1, frames=6, size=(64, 64))
        >>> clip.frame(0).detections().tracker_id is not None
        True
    """

    index: int
    image: np.ndarray = field(repr=False)
    track_ids: np.ndarray
    class_ids: np.ndarray
    xyxy: np.ndarray
    masks: np.ndarray = field(repr=False)

    @property
    def class_names(self) -> list[str]:
        """Class name of each visible shape."""
        return [CLASSES[int(i)] for i in self.class_ids]

    def detections(self) -> sv.Detections:
        """The ground truth as ``sv.Detections`` with ``tracker_id`` and ``class_name``."""
        import supervision as sv

        return sv.Detections(
            xyxy=self.xyxy.astype(np.float32),
            mask=self.masks,
            class_id=self.class_ids.astype(int),
            confidence=np.ones(len(self.track_ids), dtype=np.float32),
            tracker_id=self.track_ids.astype(int),
            data={"class_name": np.array(self.class_names, dtype=object)},
        )


@dataclass(frozen=True)
class MovingClip:
    """A seeded clip: a background, the shapes' scripts, and how many frames.

    Use :func:`generate_clip`. Frames render on demand (:meth:`frame`, iteration).

    Attributes:
        size: ``(width, height)`` in pixels.
        num_frames: frames in the clip.
        fps: the frame rate written to a video file.
        movers: every shape's script, ordered back to front.
        seed: the seed the clip was drawn from (also seeds each frame's pixel noise).
    """

    size: tuple[int, int]
    num_frames: int
    fps: float
    movers: tuple[Mover, ...]
    seed: int
    backdrop: np.ndarray = field(repr=False)
    noise: float = 3.0

    def __len__(self) -> int:
        return self.num_frames

    def __iter__(self) -> Iterator[ClipFrame]:
        for index in range(self.num_frames):
            yield self.frame(index)

    def frame(self, index: int) -> ClipFrame:
        """Render frame ``index`` with its ground truth."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} is outside the clip's {self.num_frames} frames")
        width, height = self.size
        canvas = self.backdrop.copy()
        covers, movers = [], []
        for mover in self.movers:
            pose = mover.pose(index)
            if pose is None:
                continue
            centre, angle = pose
            cover = coverage(outline(mover.class_name.split()[1], centre, mover.radius, angle), self.size)
            if not cover.any():
                continue
            colour = np.asarray(mover.colour, dtype=np.float32)
            canvas = canvas * (1 - cover[..., None]) + colour * cover[..., None]
            covers.append(cover)
            movers.append(mover)
        rng = np.random.default_rng([self.seed, index])
        canvas = canvas + rng.normal(0, self.noise, canvas.shape)
        image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
        ids, classes, boxes, masks = [], [], [], []
        for mover, mask in zip(movers, _masks(covers)):
            if mask.sum() < MIN_VISIBLE:
                continue
            ys, xs = np.nonzero(mask)
            ids.append(mover.track_id)
            classes.append(mover.class_id)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
            masks.append(mask)
        return ClipFrame(
            index=index, image=image,
            track_ids=np.array(ids, dtype=int), class_ids=np.array(classes, dtype=int),
            xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4),
            masks=np.stack(masks) if masks else np.zeros((0, height, width), dtype=bool),
        )

    def ground_truth(self) -> Iterator[FrameTracks]:
        """Every frame's ground truth as :class:`~ovperc.video.types.FrameTracks`.

        Example:
            >>> tracks = list(generate_clip(seed=0, frames=4, size=(64, 64)).ground_truth())
            >>> [t.index for t in tracks]
            [0, 1, 2, 3]
        """
        from ovperc.video.types import FrameTracks

        for frame in self:
            yield FrameTracks(index=frame.index, timestamp=frame.index / self.fps, size=self.size,
                              detections=frame.detections(), keyframe=True, class_names=list(CLASSES))

    def entering(self) -> list[Mover]:
        """The shapes that come in from outside the frame after the first frame."""
        return [m for m in self.movers if m.first > 0 and _outside(m.start, m.radius, self.size)]

    def leaving(self) -> list[Mover]:
        """The shapes that leave the frame before the last frame."""
        return [m for m in self.movers if _outside(m.end, m.radius, self.size)]


def generate_clip(
    seed: int,
    *,
    frames: int = 48,
    size: tuple[int, int] = (256, 192),
    objects: int = 3,
    fps: float = 10.0,
    radius: tuple[float, float] = (16.0, 28.0),
    speed: tuple[float, float] = (1.0, 3.0),
    enter: bool = True,
    leave: bool = True,
    cross: bool = True,
) -> MovingClip:
    """Draw a clip of moving shapes from ``seed``.

    Args:
        seed: the clip's seed; the same seed and options give the same clip.
        frames: number of frames.
        size: ``(width, height)`` of each frame.
        objects: shapes present from the first frame.
        fps: the clip's frame rate (for timestamps and video files).
        radius: range of the shapes' outer radius in pixels.
        speed: range of the shapes' speed in pixels per frame.
        enter: add one shape that enters from an edge a third of the way in and stays.
        leave: add one shape that leaves through an edge two thirds of the way in.
        cross: make the first two shapes pass over each other mid-clip (an occlusion).

    Raises:
        ValueError: options that leave no room for the shapes.

    Example:
        >>> clip = generate_clip(seed=3, frames=30)
        >>> len(clip.entering()) == 1 and clip.entering()[0].first > 0
        True
    """
    width, height = size
    if frames < 2:
        raise ValueError(f"frames must be at least 2, got {frames}")
    if objects < 0:
        raise ValueError(f"objects must be >= 0, got {objects}")
    low, high = radius
    if not 2 <= low <= high or 2 * high + 4 > min(width, height):
        raise ValueError(f"radius {radius} does not fit frames of size {size}")
    rng = np.random.default_rng(seed)
    backdrop = draw_background(size, rng).astype(np.float32)
    plans: list[dict] = []
    middle = (frames - 1) / 2
    for k in range(objects):
        r = float(rng.uniform(low, high))
        v = float(rng.uniform(*speed))
        heading = float(rng.uniform(0, 2 * math.pi))
        if cross and k < 2 and objects >= 2:
            meet = (width / 2, height / 2)
            heading = float(rng.uniform(0, math.pi / 4)) + (0.0 if k == 0 else math.pi / 2)
            path = _through(meet, heading, v, middle, 0, frames - 1)
        else:
            path = _inside_path(rng, r, heading, v, frames - 1, size)
        plans.append({"r": r, "start": path[0], "end": path[1], "first": 0, "last": frames - 1})
    if cross and objects >= 2:  # the second shape passes in front and is smaller: it cannot hide all
        plans[0]["r"], plans[1]["r"] = max(plans[0]["r"], plans[1]["r"]), min(plans[0]["r"], plans[1]["r"])
    if enter:
        r = float(rng.uniform(low, high))
        first = max(1, frames // 3)
        plans.append({"r": r, **_edge_path(rng, r, size, first, frames - 1, inward=True)})
    if leave:
        r = float(rng.uniform(low, high))
        plans.append({"r": r, **_edge_path(rng, r, size, 0, max(1, (2 * frames) // 3), inward=False)})
    order = sorted(range(len(plans)), key=lambda i: (plans[i]["first"], i))
    ids = {plan_index: rank + 1 for rank, plan_index in enumerate(order)}
    movers = []
    for i, plan in enumerate(plans):
        class_id = int(rng.integers(len(CLASSES)))
        colour = shape_colour(CLASSES[class_id].split()[0], rng)
        movers.append(Mover(
            track_id=ids[i], class_id=class_id, radius=plan["r"],
            start=tuple(map(float, plan["start"])), end=tuple(map(float, plan["end"])),  # type: ignore[arg-type]
            first=int(plan["first"]), last=int(plan["last"]),
            angle=float(rng.uniform(0, 2 * math.pi)), spin=float(rng.uniform(-0.05, 0.05)),
            colour=tuple(float(c) for c in colour),  # type: ignore[arg-type]
        ))
    return MovingClip(size=size, num_frames=frames, fps=float(fps), movers=tuple(movers), seed=seed,
                      backdrop=backdrop)


def _through(point: tuple[float, float], heading: float, v: float, at: float, first: int, last: int
             ) -> tuple[tuple[float, float], tuple[float, float]]:
    dx, dy = math.cos(heading) * v, math.sin(heading) * v
    start = (point[0] + dx * (first - at), point[1] + dy * (first - at))
    end = (point[0] + dx * (last - at), point[1] + dy * (last - at))
    return start, end


def _inside_path(rng: np.random.Generator, r: float, heading: float, v: float, steps: int,
                 size: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """A straight path that stays inside the frame: shortened (slower) where it must be."""
    width, height = size
    x0, x1, y0, y1 = r + 1, width - r - 1, r + 1, height - r - 1
    start = (float(rng.uniform(x0, x1)), float(rng.uniform(y0, y1)))
    dx, dy = math.cos(heading) * v * steps, math.sin(heading) * v * steps
    scale = 1.0
    for d, s, lo, hi in ((dx, start[0], x0, x1), (dy, start[1], y0, y1)):
        if d > 0:
            scale = min(scale, (hi - s) / d)
        elif d < 0:
            scale = min(scale, (lo - s) / d)
    return start, (start[0] + dx * scale, start[1] + dy * scale)


def _edge_path(rng: np.random.Generator, r: float, size: tuple[int, int], first: int, last: int,
               *, inward: bool) -> dict:
    """A path from just outside an edge to a point inside the frame (``inward``), or back out."""
    width, height = size
    edge = int(rng.integers(4))
    margin = r + 2
    inner = (float(rng.uniform(width * 0.3, width * 0.7)), float(rng.uniform(height * 0.3, height * 0.7)))
    along_x, along_y = float(rng.uniform(r, width - r)), float(rng.uniform(r, height - r))
    outer = [(-margin, along_y), (width + margin, along_y),
             (along_x, -margin), (along_x, height + margin)][edge]
    start, end = (outer, inner) if inward else (inner, outer)
    return {"start": start, "end": end, "first": first, "last": last}


def _outside(point: Sequence[float], r: float, size: tuple[int, int]) -> bool:
    x, y = point
    width, height = size
    return x < -r or y < -r or x > width + r or y > height + r


def write_clip_video(clip: MovingClip, path: str | os.PathLike, *, quality: int = 16) -> Path:
    """Encode the clip as an H.264 ``.mp4`` (PyAV) at the clip's frame rate.

    Args:
        clip: the clip.
        path: the video file to write.
        quality: x264 constant rate factor (lower is closer to the rendered pixels).

    Example:
        >>> write_clip_video(generate_clip(seed=0), "clip.mp4")  # doctest: +SKIP
        PosixPath('clip.mp4')
    """
    from ovperc.video.encode import VideoEncoder

    with VideoEncoder(path, fps=clip.fps, size=clip.size, quality=quality) as encoder:
        for frame in clip:
            encoder.write(frame.image)
    return Path(path)


def write_clip_frames(clip: MovingClip, folder: str | os.PathLike) -> list[Path]:
    """Write every frame as ``frame_000000.png`` (lossless) into ``folder``.

    Example:
        >>> write_clip_frames(generate_clip(seed=0, frames=3), "frames/")  # doctest: +SKIP
        [PosixPath('frames/frame_000000.png'), ...]
    """
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for frame in clip:
        path = folder / f"frame_{frame.index:06d}.png"
        Image.fromarray(frame.image).save(path)
        paths.append(path)
    return paths
