"""A small synthetic UCF101-layout set, generated once per test session."""

import av
import numpy as np
import pytest

from visualpath.data.synthetic import SyntheticSpec, generate

SMALL = SyntheticSpec(seed=1, groups=7, clips=1, frames=24, size=64)


def _backends() -> list[str]:
    """PyAV always; torchcodec too where it is installed with the system FFmpeg libraries."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401
    except Exception:
        return ["pyav"]
    return ["pyav", "torchcodec"]


BACKENDS = _backends()


@pytest.fixture(scope="session")
def small_ucf(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("data") / "ucf", SMALL)


def write_video(path, frames: np.ndarray, codec="mpeg4", fps=25, fmt=None):
    """Encode ``(N, H, W, 3)`` uint8 frames; returns the path."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.codec_context.gop_size = 8
        for f in frames:
            for p in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(p)
        for p in stream.encode():
            container.mux(p)
    return path


def ramp_frames(n=40, size=32):
    """Frames whose brightness encodes their index (survives lossy coding)."""
    return np.stack([np.full((size, size, 3), 5 * i, dtype=np.uint8) for i in range(n)])
