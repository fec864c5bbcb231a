"""What the page says besides a result: how the classes were chosen, classes the models do
not know, and what to try when nothing was found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ovperc.demo.guide import split_classes

if TYPE_CHECKING:
    from ovperc.demo.core import DemoRunner, RunOptions
    from ovperc.pipeline import Pipeline
    from ovperc.result import Perception


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(f"“{name}”" for name in names)


def result_hint(runner: DemoRunner, perception: Perception, options: RunOptions,
                view: Pipeline) -> str:
    """Markdown for the page under a result, or ``""`` when there is nothing to add.

    Args:
        runner: the runner (its guide and threshold floors).
        perception: the request's result.
        options: the request's settings.
        view: the per-request pipeline that ran.

    Example:
        >>> print(result_hint(runner, result, RunOptions(classes="unicorn"), view))  # doctest: +SKIP
        Nothing found. Try:
        - a lower box threshold (now 0.50; it goes down to 0.35)
        ...
    """
    guide = runner.guide
    tags = [tag.name for tag in perception.tags]
    if view.detector is None:
        return "" if tags else "The tagger named nothing in this image."
    lines: list[str] = []
    asked = split_classes(options.classes)
    if not asked:
        if not tags:
            return (f"The tagger found nothing to look for: type some classes "
                    f"(e.g. `{guide.placeholder}`).")
        lines.append(f"No classes given, so the detector looked for what the tagger named: "
                     f"{', '.join(tags)}.")
    unknown = guide.unknown(asked)
    if unknown:
        lines.append(f"{_quoted(unknown)} {'is' if len(unknown) == 1 else 'are'} not among the "
                     f"classes these toy models know: {', '.join(guide.known_classes)}.")
    if len(perception.detections) == 0:
        tips = _tips(runner, options, view, asked=asked, unknown=unknown)
        lines.append("Nothing found. Try:\n" + "\n".join(f"- {tip}" for tip in tips))
    return "\n\n".join(lines)


def _tips(runner: DemoRunner, options: RunOptions, view: Pipeline, *, asked: list[str],
          unknown: list[str]) -> list[str]:
    guide = runner.guide
    tips = []
    box, floor = options.box_threshold, runner.box_threshold
    if box is not None and box > floor:
        tips.append(f"a lower box threshold (now {box:.2f}; it goes down to {floor:.2f})")
    elif floor > 0:
        tips.append(f"a lower box threshold: it is at this demo's lowest ({floor:.2f}); "
                    f"start the demo with a lower `--box-threshold`")
    text, text_floor = options.text_threshold, runner.text_threshold
    if text is not None and text_floor is not None and text > text_floor:
        tips.append(f"a lower text threshold (now {text:.2f}; it goes down to {text_floor:.2f})")
    if view.classifier is not None and getattr(view.classifier, "mode", None) == "reject":
        tips.append("CLIP mode *rescore* or *relabel*: *reject* drops every box CLIP does not "
                    "recognise")
    if not guide.known_classes:
        tips.append(f"other class names: short, concrete nouns for things in the picture "
                    f"(e.g. `{guide.placeholder}`)")
    elif unknown or not asked:
        tips.append(f"the classes these toy models know: {', '.join(guide.known_classes)}")
    else:
        tips.append(f"another image: these toy models know only {', '.join(guide.known_classes)}, "
                    f"in scenes like the examples")
    return tips
