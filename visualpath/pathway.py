"""The names ``visualpath.pathway`` has always offered, where they now live: the declaration
(:mod:`visualpath.graph`), the built model (:mod:`visualpath.model`) and moving weights
between built models (:mod:`visualpath.inherit`). Kept so that graph files written against
it, and the runs that carry them, keep importing; new code imports from ``visualpath`` or
from those modules.
"""

from visualpath.graph import Feedback, Pathway, Stream
from visualpath.inherit import copy_streams, inherit_stream
from visualpath.model import PathwayModel, PathwayOutput, StreamOutput
from visualpath.tokens import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "Feedback",
    "Stream",
    "Pathway",
    "PathwayModel",
    "PathwayOutput",
    "StreamOutput",
    "inherit_stream",
    "copy_streams",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]
