"""Video decoding: probe a file, then decode only the frames a sampler asked for.

Two backends with one interface (:func:`open_video`): PyAV (always installed, FFmpeg bundled)
and torchcodec (used when it is installed *and* finds the system FFmpeg libraries; on this
project's reference CPU it decoded sampled clips about 2.5x faster than our PyAV path, with
identical frames -- see ``docs/benchmarks.md``). ``backend="auto"`` picks torchcodec when it
works, else PyAV; ``VISUALPATH_DECODER=pyav`` or ``=torchcodec`` forces one.

PyAV path:
Decoding is the usual bottleneck of video pretraining. Rather than decoding a whole video and
indexing it, :func:`read_frames` seeks to the keyframe before the first wanted frame, decodes
forward, converts to RGB only the frames it needs and stops after the last one. Frames are
identified by their presentation timestamps, so the result is exact for constant-frame-rate
files (UCF101's AVI, Kinetics' MP4, SSv2's WebM); when a container gives no timestamps, or a
seek lands after the wanted frame, it falls back to decoding from the start and counting.

Every failure (missing, empty, truncated or undecodable file) raises :class:`VideoError`, which
the datasets catch, count and replace with another sample.
"""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np
import torch

__all__ = [
    "Video",
    "TorchCodecVideo",
    "VideoError",
    "VideoInfo",
    "open_video",
    "default_backend",
    "probe",
    "read_frames",
    "read_all_frames",
]


class VideoError(RuntimeError):
    """A video that cannot be read; the message names the file and the cause."""


@dataclass(frozen=True)
class VideoInfo:
    """What a sampler needs to know about a file.

    Attributes:
        num_frames: frame count (container header, else duration x rate).
        fps: average frame rate.
        width, height: frame size in pixels.
    """

    num_frames: int
    fps: float
    width: int
    height: int


def _existing(path: str | os.PathLike) -> Path:
    """``path`` as a Path; VideoError when it is missing or empty."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    return path


_SCALE_THREADS: dict[str, int] = {"threads": 1}


def _rgb(frame) -> np.ndarray:
    """``frame`` as ``(H, W, 3)`` uint8 RGB, scaled on this thread (decision R14).

    PyAV 17 and later convert with FFmpeg's ``sws_scale_frame`` on a pool of slice threads
    unless told otherwise; in a forked data loader worker that pool hung while being freed
    (``avpriv_slicethread_free``). Earlier PyAV has no ``threads`` argument and scales on the
    calling thread already."""
    global _SCALE_THREADS
    try:
        return frame.to_ndarray(format="rgb24", **_SCALE_THREADS)
    except TypeError:
        if not _SCALE_THREADS:
            raise
        _SCALE_THREADS = {}
        return frame.to_ndarray(format="rgb24")


_PACKETS: dict[tuple, int] = {}  # (path, size, mtime) -> video packets in the file


class Video:
    """An open video file: header facts, then frames on demand.

    Use as a context manager (``with Video(path) as v: v.read(indices)``) so the container is
    closed on every path, including errors.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = _existing(path)
        try:
            self.container = av.open(str(self.path))
        except (av.FFmpegError, OSError, ValueError) as err:
            raise VideoError(f"{self.path}: cannot open ({err})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"{self.path}: no video stream")
        self.stream = self.container.streams.video[0]
        # one decoding thread (decision R14): FFmpeg's frame threads, left running when a sampled
        # clip stops before the end of the file, can hang a data loader's worker
        self.stream.codec_context.thread_count = 1
        self._info: VideoInfo | None = None

    def __enter__(self) -> Video:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.container.close()

    @property
    def info(self) -> VideoInfo:
        """Frame count, rate and size from the header (counted from packets if absent)."""
        if self._info is None:
            self._info = self._probe()
        return self._info

    def _probe(self) -> VideoInfo:
        stream, rate = self.stream, _rate(self.stream)
        try:
            n = stream.frames
            if not n and rate and stream.duration and stream.time_base:
                n = int(math.floor(stream.duration * stream.time_base * rate + 0.5))
            if not n and rate and self.container.duration:
                n = int(math.floor(self.container.duration / av.time_base * rate + 0.5))
            if not n:  # no usable header: count packets, then rewind
                n = sum(1 for p in self.container.demux(stream) if p.size)
                self.container.seek(0)
            width, height = stream.width, stream.height
        except (av.FFmpegError, OSError, ValueError, AttributeError) as err:  # a damaged header lacks fields
            raise VideoError(f"{self.path}: cannot read header ({type(err).__name__}: {err})") from None
        if not n:
            raise VideoError(f"{self.path}: no frames")
        return VideoInfo(int(n), float(rate or 0.0), width, height)

    def check_complete(self) -> None:
        """Raise :class:`VideoError` when the file holds fewer frames than its header promises
        (a truncated file whose first frames still decode). Counts packets without decoding,
        once per file version and process."""
        stat = self.path.stat()
        key = (str(self.path), stat.st_size, stat.st_mtime_ns)
        if key not in _PACKETS:
            try:
                _PACKETS[key] = sum(1 for p in self.container.demux(self.stream) if p.size)
                self.container.seek(0)
            except (av.FFmpegError, OSError, ValueError, EOFError) as err:
                raise VideoError(f"{self.path}: truncated or damaged ({type(err).__name__}: {err})") from None
        promised, held = self.info.num_frames, _PACKETS[key]
        if held < promised - max(2, promised // 50):
            raise VideoError(f"{self.path}: truncated: the header promises {promised} frames, the file holds {held}")

    def read(self, indices: Sequence[int], seek: bool = True) -> torch.Tensor:
        """Decode the frames at ``indices`` (0-based, any order, repeats allowed).

        Args:
            indices: frame indices to return, in the order wanted.
            seek: seek to the keyframe before the first index (default); False decodes from
                the start (the naive baseline, and the fallback).

        Returns:
            ``(len(indices), H, W, 3)`` uint8 RGB. An index up to two frames past the last
            decodable one (headers sometimes overstate the count) takes the nearest
            earlier frame.

        Raises:
            VideoError: nothing decodable at the wanted positions, or the file ends well
                before the wanted frames (truncated).
        """
        if len(indices) == 0:
            raise ValueError("read needs at least one frame index")
        wanted = sorted(set(int(i) for i in indices))
        if wanted[0] < 0:
            raise ValueError(f"frame indices must be >= 0, got {wanted[0]}")
        try:
            got = _decode(self.container, self.stream, wanted, seek)
        except (av.FFmpegError, OSError, ValueError, EOFError) as err:
            raise VideoError(f"{self.path}: decoding failed ({type(err).__name__}: {err})") from None
        if not got:
            raise VideoError(f"{self.path}: no decodable frame at or after index {wanted[0]}")
        have = sorted(got)
        if wanted[-1] > have[-1] + max(2, len(wanted) // 20):
            raise VideoError(
                f"{self.path}: truncated or damaged: frame {wanted[-1]} wanted, the header lists "
                f"{self.info.num_frames}, but decoding stops at frame {have[-1]}"
            )
        nearest = [have[max(bisect.bisect_right(have, i) - 1, 0)] for i in indices]
        return torch.from_numpy(np.stack([got[i] for i in nearest]))

    def read_all(self) -> torch.Tensor:
        """Every frame, ``(N, H, W, 3)`` uint8 (the naive decode-everything baseline)."""
        try:
            frames = [_rgb(f) for f in self.container.decode(self.stream)]
        except (av.FFmpegError, OSError, ValueError, EOFError) as err:
            raise VideoError(f"{self.path}: decoding failed ({type(err).__name__}: {err})") from None
        if not frames:
            raise VideoError(f"{self.path}: no frames")
        return torch.from_numpy(np.stack(frames))


def _rate(stream) -> Fraction | None:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return Fraction(rate) if rate else None


class TorchCodecVideo:
    """The :class:`Video` interface on torchcodec's ``VideoDecoder`` (approximate seek mode:
    frame positions from the header, which is exact for constant-frame-rate files)."""

    def __init__(self, path: str | os.PathLike) -> None:
        from torchcodec.decoders import VideoDecoder

        self.path = _existing(path)
        try:
            self.decoder = VideoDecoder(str(self.path), seek_mode="approximate")
            meta = self.decoder.metadata
            n = meta.num_frames
        except (RuntimeError, ValueError) as err:
            raise VideoError(f"{self.path}: cannot open ({err})") from None
        if not n:
            raise VideoError(f"{self.path}: no frames")
        self.info = VideoInfo(int(n), float(meta.average_fps or 0.0), meta.width, meta.height)

    def __enter__(self) -> TorchCodecVideo:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.decoder = None

    def read(self, indices: Sequence[int], seek: bool = True) -> torch.Tensor:
        """Same contract as :meth:`Video.read`; ``(len(indices), H, W, 3)`` uint8."""
        if len(indices) == 0:
            raise ValueError("read needs at least one frame index")
        clamped = [min(int(i), self.info.num_frames - 1) for i in indices]
        if min(clamped) < 0:
            raise ValueError(f"frame indices must be >= 0, got {min(clamped)}")
        try:
            frames = self.decoder.get_frames_at(clamped).data  # (N, C, H, W)
        except (RuntimeError, ValueError, IndexError) as err:
            raise VideoError(f"{self.path}: decoding failed ({type(err).__name__}: {err})") from None
        return frames.permute(0, 2, 3, 1).contiguous()

    def read_all(self) -> torch.Tensor:
        return self.read(range(self.info.num_frames))


_BACKEND: str | None = None


def default_backend() -> str:
    """``$VISUALPATH_DECODER`` if set, else torchcodec when it decodes here, else PyAV."""
    global _BACKEND
    forced = os.environ.get("VISUALPATH_DECODER")
    if forced:
        if forced not in ("pyav", "torchcodec"):
            raise ValueError(f"VISUALPATH_DECODER must be 'pyav' or 'torchcodec', got {forced!r}")
        return forced
    if _BACKEND is None:
        try:
            from torchcodec.decoders import VideoDecoder  # noqa: F401  (needs FFmpeg libraries)

            _BACKEND = "torchcodec"
        except Exception:  # not installed, or no system FFmpeg: PyAV bundles its own
            _BACKEND = "pyav"
    return _BACKEND


def open_video(path: str | os.PathLike, backend: str = "auto") -> Video | TorchCodecVideo:
    """Open ``path`` with ``backend`` (``"auto"``, ``"pyav"`` or ``"torchcodec"``)."""
    backend = default_backend() if backend == "auto" else backend
    if backend == "torchcodec":
        return TorchCodecVideo(path)
    if backend == "pyav":
        return Video(path)
    raise ValueError(f"backend must be 'auto', 'pyav' or 'torchcodec', got {backend!r}")


def probe(path: str | os.PathLike, backend: str = "auto") -> VideoInfo:
    """A file's frame count, rate and size."""
    with open_video(path, backend) as video:
        return video.info


def read_frames(path: str | os.PathLike, indices: Sequence[int], seek: bool = True,
                backend: str = "auto") -> torch.Tensor:
    """Decode the frames at ``indices`` of ``path``; see :meth:`Video.read`."""
    with open_video(path, backend) as video:
        return video.read(indices, seek=seek)


def read_all_frames(path: str | os.PathLike, backend: str = "auto") -> torch.Tensor:
    """Decode every frame of ``path``; see :meth:`Video.read_all`."""
    with open_video(path, backend) as video:
        return video.read_all()


def _frame_index(frame, start: int, time_base: Fraction, rate: Fraction) -> int | None:
    if frame.pts is None:
        return None
    return int(math.floor((frame.pts - start) * time_base * rate + 0.5))


def _decode(container, stream, wanted: list[int], seek: bool) -> dict[int, np.ndarray]:
    rate, time_base = _rate(stream), stream.time_base
    start = stream.start_time or 0
    timed = rate is not None and time_base is not None
    if seek and timed and wanted[0] > 0:
        target = start + int(wanted[0] / (rate * time_base))
        container.seek(target, stream=stream, backward=True, any_frame=False)
        got, first = _collect(container.decode(stream), wanted, start, time_base, rate)
        if first is not None and first <= wanted[0]:
            return got
        container.seek(start, stream=stream, backward=True, any_frame=False)  # seek overshot
    if timed:
        got, first = _collect(container.decode(stream), wanted, start, time_base, rate)
        if first is not None:
            return got
        container.seek(start, stream=stream, backward=True, any_frame=False)
    return _count(container.decode(stream), wanted)


def _collect(frames, wanted, start, time_base, rate):
    """Gather wanted frames identified by timestamp; returns (frames, first index seen)."""
    got: dict[int, np.ndarray] = {}
    wanted_set, last = set(wanted), wanted[-1]
    first = None
    for frame in frames:
        idx = _frame_index(frame, start, time_base, rate)
        if idx is None:
            return {}, None
        if first is None:
            first = idx
        if idx in wanted_set:
            got[idx] = _rgb(frame)
        if idx >= last:
            break
    return got, first


def _count(frames, wanted) -> dict[int, np.ndarray]:
    """Gather wanted frames by counting from the first frame."""
    got: dict[int, np.ndarray] = {}
    wanted_set, last = set(wanted), wanted[-1]
    for idx, frame in enumerate(frames):
        if idx in wanted_set:
            got[idx] = _rgb(frame)
        if idx >= last:
            break
    return got
