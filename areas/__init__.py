"""The paper's cortical areas (BIMM section 3.2), one module each.

- :class:`V1Gabor` -- Gabor energy (texture), blocks 1-2 by default.
- :class:`V2Contour` -- contour maps (SAM cache, or an edge detector), blocks 3-4.
- :class:`V4Color` -- normalised RGB pixels (ventral), blocks 5-12.
- :class:`MTMotion` -- frame differences (dorsal, video only), blocks 5-12.

Beyond the paper:

- :class:`V3DynamicForm` -- orientation energy of frame differences (video only).

:func:`normalize_tokens` standardises a target per token, as the paper's areas do (MAE's
normalised pixels): an area of your own uses it to learn at the others' scale.
"""

from areas._common import normalize_tokens
from areas.mt_motion import MTMotion
from areas.v1_gabor import V1Gabor
from areas.v2_contour import V2Contour
from areas.v3_dynamic_form import V3DynamicForm
from areas.v4_color import V4Color

__all__ = ["MTMotion", "V1Gabor", "V2Contour", "V3DynamicForm", "V4Color", "normalize_tokens"]
