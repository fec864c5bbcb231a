"""RAM and RAM++ (Recognize Anything) image taggers, run natively on current torch and timm.

The official checkpoints load through a key remap into a plain-torch model built on
timm's Swin-L; no code from the original project is needed at run time.

Original work: Recognize Anything (https://github.com/xinyu1205/recognize-anything,
Apache-2.0): Zhang et al., "Recognize Anything: A Strong Image Tagging Model" (2023) and
Huang et al., "Open-Set Image Tagging with Multi-Grained Text Supervision" (RAM++, 2023).

Example:
    >>> from ovperc.stages.ram import RamTagger
    >>> tagger = RamTagger("ram_plus_swin_large_14m.pth")  # doctest: +SKIP
    >>> tagger.tag([image])  # doctest: +SKIP
"""

from __future__ import annotations

from ovperc.stages.ram.tagger import RamTagger, preprocess

__all__ = ["RamTagger", "preprocess"]
