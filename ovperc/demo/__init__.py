"""The ovperc web demo: a Gradio app over any :class:`~ovperc.Pipeline`.

``build_app(pipeline)`` returns the ``gradio.Blocks`` app; ``launch(pipeline)`` serves it.
The page's examples and suggestions follow the pipeline's models (``guide_for``).
Gradio (the ``demo`` extra) is imported only when one of them is called.

Example:
    >>> from ovperc.demo import build_app  # doctest: +SKIP
    >>> build_app(ovperc.Pipeline.from_preset("default")).launch()  # doctest: +SKIP
"""

from __future__ import annotations

from ovperc.demo.app import build_app, example_images, launch
from ovperc.demo.core import DemoInputError, DemoLimits, RunOptions
from ovperc.demo.guide import DemoGuide, guide_for

__all__ = ["DemoGuide", "DemoInputError", "DemoLimits", "RunOptions", "build_app",
           "example_images", "guide_for", "launch"]
