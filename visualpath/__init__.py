"""visualpath: Brain Inspired Masked Modeling (BIMM) as a composable toolkit.

The core library: the ViT, patch/tube embeddings, masking, the area protocol and the
pathway graph. The paper's cortical areas live in the ``areas`` package.
"""

from visualpath.area import Area, Decoder, DecoderSpec, Stage, TargetInput
from visualpath.masking import Mask, RandomMask, TubeMask
from visualpath.graph import Feedback, Pathway, Stream
from visualpath.inherit import inherit_stream
from visualpath.model import PathwayModel, PathwayOutput, StreamOutput
from visualpath.tokens import IMAGENET_MEAN, IMAGENET_STD, Layout, PatchEmbed, sincos_flat, sincos_grid
from visualpath.vit import Attention, Block, ViTSpec, vit_base, vit_large, vit_small, vit_tiny

__all__ = [
    "Area",
    "Attention",
    "Block",
    "Decoder",
    "DecoderSpec",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Layout",
    "Mask",
    "PatchEmbed",
    "Pathway",
    "PathwayModel",
    "PathwayOutput",
    "RandomMask",
    "Stage",
    "Feedback",
    "Stream",
    "StreamOutput",
    "TargetInput",
    "TubeMask",
    "ViTSpec",
    "inherit_stream",
    "sincos_flat",
    "sincos_grid",
    "vit_base",
    "vit_large",
    "vit_small",
    "vit_tiny",
]

__version__ = "0.1.0"
