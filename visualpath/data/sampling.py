"""Which frames of a video make a clip (BIMM section 3.1 and appendix A.2).

- Pretraining and dense finetuning (K400, UCF101, HMDB51; SlowFast's "dense sampling"):
  ``T`` frames at stride ``tau`` from a random offset (:func:`strided_clip`).
- SSv2 finetuning (TSN's "uniform sampling"): ``T`` equal segments, one frame from each
  (:func:`segment_clip`).
- Testing: ``N`` clips evenly spread over the video (:func:`multiview_clips`), each seen in three
  spatial crops (:func:`three_crop_boxes`); for segment sampling (SSv2), ``N`` clips whose
  frames sit at ``k / N`` of each segment (:func:`segment_views`: VideoMAE's 2 x 3 SSv2 test
  takes the segments' starts and middles).

A video shorter than a strided clip's span is sampled at the largest stride that fits; one
shorter than ``T`` frames repeats its last frame. All functions return int64 numpy arrays.
"""

from __future__ import annotations

import numpy as np

__all__ = ["strided_clip", "segment_clip", "segment_views", "multiview_clips", "three_crop_boxes", "clip_span"]


def clip_span(frames: int, stride: int) -> int:
    """Frames covered by ``frames`` samples at ``stride``: ``(frames - 1) * stride + 1``."""
    return (frames - 1) * stride + 1


def _fit_stride(num_frames: int, frames: int, stride: int) -> int:
    while stride > 1 and clip_span(frames, stride) > num_frames:
        stride -= 1
    return stride


def _check(num_frames: int, frames: int, stride: int = 1) -> None:
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got num_frames={num_frames}")
    if frames < 1 or stride < 1:
        raise ValueError(f"frames and stride must be >= 1, got frames={frames}, stride={stride}")


def strided_clip(num_frames: int, frames: int, stride: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``frames`` indices at ``stride`` from a random offset (centred when ``rng`` is None)."""
    _check(num_frames, frames, stride)
    stride = _fit_stride(num_frames, frames, stride)
    span = clip_span(frames, stride)
    room = max(num_frames - span, 0)
    offset = int(rng.integers(0, room + 1)) if rng is not None else room // 2
    return np.minimum(offset + np.arange(frames) * stride, num_frames - 1).astype(np.int64)


def segment_clip(num_frames: int, frames: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """One frame from each of ``frames`` equal segments: random in training, middle in testing."""
    _check(num_frames, frames)
    edges = np.linspace(0, num_frames, frames + 1)
    if rng is None:
        picks = (edges[:-1] + edges[1:]) / 2
    else:
        picks = edges[:-1] + rng.random(frames) * (edges[1:] - edges[:-1])
    return np.minimum(np.floor(picks), num_frames - 1).astype(np.int64)


def segment_views(num_frames: int, frames: int, clips: int) -> list[np.ndarray]:
    """``clips`` segment-sampled clips for testing: clip ``k`` takes the frame at ``k / clips``
    of each of ``frames`` equal segments (``clips=2``: the segments' starts, then their
    middles, as VideoMAE's SSv2 test). Distinct whenever a segment spans two or more frames."""
    _check(num_frames, frames)
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    tick = num_frames / frames
    return [np.minimum(np.floor(tick * np.arange(frames) + tick * k / clips), num_frames - 1).astype(np.int64)
            for k in range(clips)]


def multiview_clips(num_frames: int, frames: int, stride: int, clips: int) -> list[np.ndarray]:
    """``clips`` strided clips with offsets evenly spread from the first to the last frame."""
    _check(num_frames, frames, stride)
    if clips < 1:
        raise ValueError(f"clips must be >= 1, got {clips}")
    stride = _fit_stride(num_frames, frames, stride)
    room = max(num_frames - clip_span(frames, stride), 0)
    offsets = np.linspace(0, room, clips) if clips > 1 else np.array([room / 2])
    return [np.minimum(int(round(o)) + np.arange(frames) * stride, num_frames - 1).astype(np.int64)
            for o in offsets]


def three_crop_boxes(height: int, width: int, size: int) -> list[tuple[int, int, int, int]]:
    """Three ``size`` x ``size`` boxes ``(top, left, h, w)`` along the longer side.

    VideoMAE's test protocol: start, centre and end of the longer side (the frame's short
    side is first resized to ``size``).
    """
    if min(height, width) < size:
        raise ValueError(f"a {height}x{width} frame is smaller than the {size}px test crop")
    if width >= height:
        lefts = [0, (width - size) // 2, width - size]
        top = (height - size) // 2
        return [(top, left, size, size) for left in lefts]
    tops = [0, (height - size) // 2, height - size]
    left = (width - size) // 2
    return [(top, left, size, size) for top in tops]
