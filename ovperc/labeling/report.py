"""The end-of-run report: ``report.json`` and the summary printed by ``ovperc label``."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from ovperc.atomic import atomic_write_text

#: per stage: what to change when it takes most of the time (model names from ``ovperc models``).
SPEED_HINTS: dict[str, str] = {
    "decode": "images wait to be decoded: more --decode-workers, or the images on a faster disk",
    "tag": "give --classes (no tagging needed), or a lighter --tagger",
    "detect": "--preset fast (int8 OmDet-Turbo + EdgeTAM, about 0.2x the default's time on a CPU), a faster "
              "detector (--detector omdet-turbo, several times faster than Grounding DINO on a CPU), "
              "a GPU (--device cuda), or --engine ray on more machines",
    "segment": "--preset fast, a lighter segmenter (--segmenter edgetam or sam2.1-tiny), no masks, "
               "or a GPU (--device cuda)",
    "classify": "no CLIP classifier (a preset without 'classify'), or a GPU (--device cuda)",
    "write": "--images symlink or none (no copies), or the dataset on a faster disk",
}

#: exit codes of a labelling run.
EXIT_OK, EXIT_FAILURES, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


@dataclass
class Report:
    """What a labelling run did.

    Attributes:
        source: the scanned folder.
        out: the dataset folder.
        format: dataset format.
        images_found: image files found by the scan.
        images_done: images in the dataset now (this run and earlier, resumed runs).
        done_this_run: images labelled by this run.
        already_done: images skipped because an earlier run had finished them.
        skipped: ``{"path", "reason"}`` of every image this run could not label.
        detections_per_class: boxes per class in the whole dataset.
        classes: the dataset's classes, by id.
        time_per_stage: seconds this run spent per stage (``decode`` is time spent waiting
            for images, ``write`` writing files; model stages as the pipeline reports them).
        elapsed_s: wall time of this run.
        interrupted: the run was stopped (Ctrl-C) before the end.
        error: a fatal error that stopped the run, if any.
        notes: what else a person should know (folders not scanned, files left alone, ...).

    Example:
        >>> report = label_folder(pipe, "photos/", "dataset/", classes="dog")  # doctest: +SKIP
        >>> report.exit_code, report.detections_per_class  # doctest: +SKIP
        (0, {'dog': 12})
    """

    source: str
    out: str
    format: str
    images_found: int = 0
    images_done: int = 0
    done_this_run: int = 0
    already_done: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    detections_per_class: dict[str, int] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    time_per_stage: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    interrupted: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def skip(self, path: str, reason: str) -> None:
        """Record an image that could not be labelled."""
        self.skipped.append({"path": path, "reason": reason})

    def add_time(self, stage: str, seconds: float) -> None:
        """Add seconds to a stage's total."""
        self.time_per_stage[stage] = self.time_per_stage.get(stage, 0.0) + seconds

    @property
    def exit_code(self) -> int:
        """0: every image labelled; 1: some skipped; 2: a fatal error; 130: interrupted."""
        if self.error is not None:
            return EXIT_ERROR
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILURES if self.skipped else EXIT_OK

    @property
    def images_per_second(self) -> float:
        """Images labelled per second of wall time in this run."""
        return self.done_this_run / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def speed_advice(self) -> str | None:
        """Which stage took most of this run's time, and what to change to go faster.

        Example:
            >>> report = Report("src", "out", "yolo", done_this_run=3,
            ...                 time_per_stage={"detect": 9.0, "segment": 1.0})
            >>> report.speed_advice().split(";")[0]
            'to go faster: detect takes 90% of the time'
        """
        if not self.time_per_stage or self.done_this_run == 0:
            return None
        stage, seconds = max(self.time_per_stage.items(), key=lambda kv: kv[1])
        share = seconds / (sum(self.time_per_stage.values()) or 1.0)
        hint = SPEED_HINTS.get(stage)
        if hint is None:
            return None
        return f"to go faster: {stage} takes {100 * share:.0f}% of the time; try {hint}"

    def skipped_by_reason(self) -> dict[str, int]:
        """How many images were skipped per kind of reason (the reason before any detail)."""
        return dict(Counter(item["reason"].split(" (")[0] for item in self.skipped).most_common())

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["time_per_stage"] = {k: round(v, 3) for k, v in self.time_per_stage.items()}
        data["elapsed_s"] = round(self.elapsed_s, 3)
        data["images_per_second"] = round(self.images_per_second, 3)
        data["skipped_by_reason"] = self.skipped_by_reason()
        data["exit_code"] = self.exit_code
        return data

    def save(self, path: str | os.PathLike) -> None:
        """Write the report as JSON (atomically)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    def summary(self, max_skipped: int = 10) -> str:
        """The human-readable summary the CLI prints.

        Example:
            >>> print(report.summary())  # doctest: +SKIP
        """
        lines = []
        if self.error:
            lines.append(f"stopped by an error: {self.error}")
        elif self.interrupted:
            lines.append("interrupted: rerun the same command to resume where it stopped")
        lines.append(
            f"{self.images_done} images in {self.out} ({self.format}); {self.done_this_run} "
            f"labelled now in {self.elapsed_s:.1f} s ({self.images_per_second:.2f} images/s)"
            + (f", {self.already_done} done by an earlier run" if self.already_done else "")
        )
        if self.detections_per_class:
            counts = ", ".join(f"{name} {n}" for name, n in self.detections_per_class.items())
            lines.append(f"detections per class: {counts}")
        else:
            lines.append("detections per class: none")
        if self.time_per_stage:
            total = sum(self.time_per_stage.values()) or 1.0
            times = ", ".join(f"{k} {v:.1f} s ({100 * v / total:.0f}%)"
                              for k, v in self.time_per_stage.items())
            lines.append(f"time per stage: {times}")
            advice = self.speed_advice()
            if advice:
                lines.append(advice)
        lines.extend(f"note: {note}" for note in self.notes)
        if self.skipped:
            kinds = ", ".join(f"{n} {kind}" for kind, n in self.skipped_by_reason().items())
            lines.append(f"skipped {len(self.skipped)} images: {kinds}")
            for item in self.skipped[:max_skipped]:
                lines.append(f"  {item['path']}: {item['reason']}")
            if len(self.skipped) > max_skipped:
                lines.append(f"  ... and {len(self.skipped) - max_skipped} more (see report.json)")
        return "\n".join(lines)
