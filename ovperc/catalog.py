"""The models ovperc knows by name, and which stage serves each ``model_type``.

Data only: :mod:`ovperc.registry` reads these tables once, on first use. Stage classes are
``"module:Class"`` paths, imported only when a stage is built, so a row may name a stage
that another module provides.

Where the figures come from (``params_m`` in millions, ``input_size`` as the processor
resizes), also in each row's ``source``:

- Grounding DINO: hub model size of ``IDEA-Research/grounding-dino-tiny`` (172M; its fp32
  safetensors are 689 MB) and ``-base`` (233M); LVIS minival AP of GDINO-T 28.8 and
  MM-GDINO-T 41.4 from the transformers MM Grounding DINO docs ("41.4 (+12.6) minival AP").
- LLMDet: model zoo table of ``fushh7/LLMDet`` (Swin-T APmini 44.7, Swin-B 48.3); 173M
  params from the hub model size of ``fushh7/llmdet_swin_tiny_hf``.
- OWLv2: input 960 (B/16) and 1008 (L/14) from the hub ``config.json`` ``image_size``;
  B/16 params from its fp32 ``pytorch_model.bin`` (620 MB / 4 bytes = 155M).
- OmDet-Turbo: input 640; params from its fp32 ``model.safetensors`` (462 MB -> 115M).
- SAM: ViT-B 91M, ViT-L 308M, ViT-H 636M (segment-anything paper / model card), input 1024.
- SAM 2.1: hub model sizes of ``facebook/sam2.1-hiera-*`` (39.0M, 46.1M, 80.9M, 224M),
  input 1024 (SAM 2 README).
- SAM 3: 848M params, input 1008 (``facebook/sam3`` model card), gated, "SAM License".
- CLIP ViT-B-32 laion2b: 151M, input 224 (open_clip model card).
"""

from __future__ import annotations

from ovperc.registry import ModelEntry

_GD = "ovperc.stages.grounding_dino:GroundingDinoDetector"
_OWL = "ovperc.stages.owl:OwlDetector"
_OMDET = "ovperc.stages.omdet_turbo:OmDetTurboDetector"
_SAM = "ovperc.stages.sam:SamSegmenter"
# One stage serves the transformers SAM family (SAM, SAM-HQ, SAM 2.1, EdgeTAM, SAM 3's
# tracker): the architecture comes from each folder's config.json model_type.
_SAM_HF = "ovperc.stages.sam_hf:HfSamSegmenter"
_SAM_HQ = _SAM2 = _EDGETAM = _SAM3_TRACKER = _SAM_HF
_SAM3 = "ovperc.stages.sam3:Sam3Detector"
_RAM = "ovperc.stages.ram:RamTagger"

_GD_SIZE = "800-1333"  # shortest edge 800, longest 1333 (processor_config.json)
_APACHE = "Apache-2.0"
_MM_DOCS = "transformers docs: MM Grounding DINO"
_LLMDET_ZOO = "fushh7/LLMDet model zoo"

#: Every model ovperc knows by short name, grouped by role; the first detector and
#: segmenter rows are the defaults.
MODELS: tuple[ModelEntry, ...] = (
    # ------------------------------------------------------------------ detectors
    ModelEntry("gdino-tiny", ("detector",), _GD, "IDEA-Research/grounding-dino-tiny",
               licence=_APACHE, params_m=172, input_size=_GD_SIZE,
               quality="LVIS minival AP 28.8", source=f"hub model size; {_MM_DOCS}"),
    ModelEntry("gdino-base", ("detector",), _GD, "IDEA-Research/grounding-dino-base",
               licence=_APACHE, params_m=233, input_size=_GD_SIZE, source="hub model size"),
    ModelEntry("mm-gdino-tiny", ("detector",), _GD,
               "openmmlab-community/mm_grounding_dino_tiny_o365v1_goldg_v3det",
               licence=_APACHE, input_size=_GD_SIZE, quality="LVIS minival AP 41.4",
               source=_MM_DOCS),
    ModelEntry("llmdet-tiny", ("detector",), _GD, "iSEE-Laboratory/llmdet_tiny",
               licence=_APACHE, params_m=173, input_size=_GD_SIZE,
               quality="LVIS minival AP 44.7", source=f"{_LLMDET_ZOO}; hub model size"),
    ModelEntry("llmdet-base", ("detector",), _GD, "iSEE-Laboratory/llmdet_base",
               licence=_APACHE, input_size=_GD_SIZE, quality="LVIS minival AP 48.3",
               source=_LLMDET_ZOO),
    ModelEntry("llmdet-large", ("detector",), _GD, "iSEE-Laboratory/llmdet_large",
               licence=_APACHE, input_size=_GD_SIZE),
    ModelEntry("owlv2-base", ("detector",), _OWL, "google/owlv2-base-patch16-ensemble",
               licence=_APACHE, params_m=155, input_size="960x960",
               source="hub config.json; weights file size"),
    ModelEntry("owlv2-large", ("detector",), _OWL, "google/owlv2-large-patch14-ensemble",
               licence=_APACHE, input_size="1008x1008", source="hub config.json"),
    ModelEntry("owlvit-base", ("detector",), _OWL, "google/owlvit-base-patch32",
               licence=_APACHE, input_size="768x768", source="hub config.json"),
    ModelEntry("omdet-turbo", ("detector",), _OMDET, "omlab/omdet-turbo-swin-tiny-hf",
               licence=_APACHE, params_m=115, input_size="640x640",
               source="weights file size; preprocessor_config.json"),
    ModelEntry("sam3", ("detector",), _SAM3, "facebook/sam3", licence="SAM License",
               gated=True, params_m=848, input_size="1008x1008", source="facebook/sam3 model card"),
    # ------------------------------------------------------------------ segmenters
    ModelEntry("vit_b", ("segmenter",), _SAM, model="vit_b", licence=_APACHE, params_m=91,
               input_size="1024x1024", source="segment-anything paper"),
    ModelEntry("vit_l", ("segmenter",), _SAM, model="vit_l", licence=_APACHE, params_m=308,
               input_size="1024x1024", source="segment-anything paper"),
    ModelEntry("vit_h", ("segmenter",), _SAM, model="vit_h", licence=_APACHE, params_m=636,
               input_size="1024x1024", source="segment-anything paper"),
    ModelEntry("sam-hq-vit-b", ("segmenter",), _SAM_HQ, "syscv-community/sam-hq-vit-base",
               licence=_APACHE, input_size="1024x1024"),
    ModelEntry("sam-hq-vit-l", ("segmenter",), _SAM_HQ, "syscv-community/sam-hq-vit-large",
               licence=_APACHE, input_size="1024x1024"),
    ModelEntry("sam-hq-vit-h", ("segmenter",), _SAM_HQ, "syscv-community/sam-hq-vit-huge",
               licence=_APACHE, input_size="1024x1024"),
    ModelEntry("sam2.1-tiny", ("segmenter",), _SAM2, "facebook/sam2.1-hiera-tiny",
               licence=_APACHE, params_m=39.0, input_size="1024x1024", source="hub model size"),
    ModelEntry("sam2.1-small", ("segmenter",), _SAM2, "facebook/sam2.1-hiera-small",
               licence=_APACHE, params_m=46.1, input_size="1024x1024", source="hub model size"),
    ModelEntry("sam2.1-base-plus", ("segmenter",), _SAM2, "facebook/sam2.1-hiera-base-plus",
               licence=_APACHE, params_m=80.9, input_size="1024x1024", source="hub model size"),
    ModelEntry("sam2.1-large", ("segmenter",), _SAM2, "facebook/sam2.1-hiera-large",
               licence=_APACHE, params_m=224, input_size="1024x1024", source="hub model size"),
    ModelEntry("edgetam", ("segmenter",), _EDGETAM, "yonigozlan/EdgeTAM-hf", licence=_APACHE,
               input_size="1024x1024", source="transformers EdgeTAM docs (checkpoint in hf format)"),
    ModelEntry("sam3-tracker", ("segmenter",), _SAM3_TRACKER, "facebook/sam3",
               licence="SAM License", gated=True, params_m=848, input_size="1008x1008",
               source="facebook/sam3 model card"),
    # ------------------------------------------------------------------ taggers, classifiers
    ModelEntry("clip-vit-b-32", ("classifier", "tagger"), None,
               model="ViT-B-32:laion2b_s34b_b79k", licence="MIT", params_m=151,
               input_size="224x224", source="open_clip model card"),
    ModelEntry("ram_plus", ("tagger",), _RAM, options={"variant": "ram_plus"}, licence=_APACHE,
               input_size="384x384"),
    ModelEntry("ram", ("tagger",), _RAM, options={"variant": "ram"}, licence=_APACHE,
               input_size="384x384"),
)

#: ``config.json`` ``model_type`` -> (stage class, roles it fills).
MODEL_TYPES: dict[str, tuple[str, tuple[str, ...]]] = {
    "grounding-dino": (_GD, ("detector",)),
    "mm-grounding-dino": (_GD, ("detector",)),
    "owlv2": (_OWL, ("detector",)),
    "owlvit": (_OWL, ("detector",)),
    "omdet-turbo": (_OMDET, ("detector",)),
    "sam": (_SAM_HF, ("segmenter",)),  # SAM in hf format (facebook/sam-vit-base)
    "sam_hq": (_SAM_HQ, ("segmenter",)),
    "sam2": (_SAM2, ("segmenter",)),
    "edgetam": (_EDGETAM, ("segmenter",)),
    "sam3": (_SAM3, ("detector",)),
    "sam3_video": (_SAM3, ("detector",)),  # the combined detector + tracker checkpoint
    "sam3_tracker": (_SAM3_TRACKER, ("segmenter",)),
}
