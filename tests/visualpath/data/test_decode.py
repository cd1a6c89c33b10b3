import numpy as np
import pytest
import torch

from tests.visualpath.data.conftest import BACKENDS, ramp_frames, write_video
from visualpath.data import VideoError, open_video, probe, read_all_frames, read_frames


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("codec, suffix", [("mpeg4", ".avi"), ("libx264", ".mp4"), ("libvpx-vp9", ".webm")])
def test_seeking_reads_exactly_the_frames_a_full_decode_gives(tmp_path, codec, suffix, backend):
    path = write_video(tmp_path / f"v{suffix}", ramp_frames(), codec=codec)
    info = probe(path, backend=backend)
    assert info.num_frames == 40 and info.fps == 25 and (info.width, info.height) == (32, 32)
    everything = read_all_frames(path, backend="pyav")  # decode-everything reference
    assert everything.shape == (40, 32, 32, 3) and everything.dtype == torch.uint8
    for indices in ([0], [39], [33, 1, 17], [20, 20, 21], list(range(5, 40, 4))):
        assert torch.equal(read_frames(path, indices, backend=backend), everything[indices])
        assert torch.equal(read_frames(path, indices, seek=False, backend=backend), everything[indices])
    brightness = read_frames(path, [10, 30], backend=backend).float().mean(dim=(1, 2, 3))
    assert torch.allclose(brightness, torch.tensor([50.0, 150.0]), atol=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_indices_just_past_the_end_take_the_last_frame(tmp_path, backend):
    path = write_video(tmp_path / "v.avi", ramp_frames(12))
    frames = read_frames(path, [11, 12, 13], backend=backend)
    assert torch.equal(frames[1], frames[0]) and torch.equal(frames[2], frames[0])


def _broken(tmp_path, kind):
    path = tmp_path / f"{kind}.avi"
    good = write_video(tmp_path / "good.avi", ramp_frames())
    data = good.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "headless":
        path.write_bytes(data[:300])
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("not a video")
    return path


@pytest.mark.parametrize("kind, cause", [("empty", "empty file"), ("missing", "no such file"),
                                         ("truncated", "truncated"), ("headless", None),
                                         ("garbage", None), ("text", None)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_broken_files_raise_video_error_naming_the_file(tmp_path, kind, cause, backend):
    path = _broken(tmp_path, kind)
    with pytest.raises(VideoError, match=cause) as err:
        with open_video(path, backend) as video:
            video.read(list(range(video.info.num_frames)))
    assert str(path) in str(err.value)


def test_unknown_backend_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="'auto', 'pyav' or 'torchcodec'"):
        open_video(tmp_path / "v.avi", "decord")


@pytest.mark.parametrize("fraction", [0.5, 0.8])
def test_a_truncated_file_whose_first_frames_decode_is_broken(tmp_path, fraction):
    """Matroska keeps its first frames readable when cut: a one-frame sample at frame 0 would
    train on a broken file unless the file is checked against its header."""
    from tests.visualpath.data.conftest import ramp_frames, write_video
    from visualpath.data import VideoDataset
    from visualpath.data.decode import Video, VideoError
    from visualpath.data.formats import VideoRecord

    whole = write_video(tmp_path / "whole.mkv", ramp_frames(40, size=64), fmt="matroska")
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * fraction)])
    with Video(cut) as video:
        assert video.read([0]).shape[0] == 1  # the first frame still decodes
        with pytest.raises(VideoError, match="truncated"):
            video.check_complete()
    with Video(whole) as video:
        video.check_complete()
    ds = VideoDataset([VideoRecord(cut, 1), VideoRecord(whole, 0)], ["a", "b"], frames=1, as_images=True)
    assert all(int(ds[i]["label"]) == 0 for i in range(2)) and ds.skipped == 1


def test_pyav_decodes_and_converts_on_the_calling_thread(tmp_path, monkeypatch):
    """Decision R14: one decoding thread, and RGB conversion without FFmpeg's slice threads
    (a pool that hung a forked data loader worker while being freed); a PyAV too old to take
    ``threads`` converts on the calling thread already and gets no such argument."""
    from visualpath.data import decode

    path = write_video(tmp_path / "v.avi", ramp_frames(12))
    with decode.Video(path) as video:
        assert video.stream.codec_context.thread_count == 1
        first = next(video.container.decode(video.stream))
        assert np.array_equal(decode._rgb(first), first.to_ndarray(format="rgb24"))
    calls = []

    class Frame:
        def __init__(self, old):
            self.old = old

        def to_ndarray(self, **kwargs):
            calls.append(kwargs)
            if self.old and "threads" in kwargs:
                raise TypeError("reformat() got an unexpected keyword argument 'threads'")
            return np.zeros((2, 2, 3), np.uint8)

    monkeypatch.setattr(decode, "_SCALE_THREADS", {"threads": 1})
    decode._rgb(Frame(old=False))
    assert calls == [{"format": "rgb24", "threads": 1}]
    calls.clear()
    decode._rgb(Frame(old=True))
    decode._rgb(Frame(old=True))  # asked once: later frames go without the argument
    assert calls == [{"format": "rgb24", "threads": 1}, {"format": "rgb24"}, {"format": "rgb24"}]
