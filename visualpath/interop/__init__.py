"""Weights in and out of our encoders: VideoMAE, MAE, timm, Hugging Face and our own files.

Reading (:mod:`visualpath.interop.reading`): one entry point, :func:`load_checkpoint`, takes
a checkpoint file or a state dict, detects its format and loads it into a bare
:class:`~visualpath.classifier.Encoder`, one stream of a built pathway, or the whole pathway,
and returns a :class:`LoadReport` of what was loaded, unused and kept. Writing
(:mod:`visualpath.interop.writing`): :func:`export_videomae` (a Hugging Face folder) and
:func:`export_timm`, with the state-dict converters beneath them.
"""

from visualpath.interop import reading, writing
from visualpath.interop.reading import (
    FORMATS,
    LoadReport,
    detect_format,
    encoder_from_checkpoint,
    encoder_from_run,
    load_checkpoint,
    load_encoder,
    read_state_dict,
    to_encoder_keys,
)
from visualpath.interop.writing import (
    encoder_to_timm,
    encoder_to_videomae,
    export_timm,
    export_videomae,
    timm_kwargs,
    video_processor,
)

__all__ = reading.__all__ + writing.__all__
