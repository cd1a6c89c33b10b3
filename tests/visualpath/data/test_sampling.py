import numpy as np
import pytest
import torch

from visualpath.data import sampling
from visualpath.data.sampling import segment_clip, strided_clip, three_crop_boxes


def test_strided_clip_has_the_stride_and_a_random_offset_inside_the_video():
    rng = np.random.default_rng(0)
    offsets = set()
    for _ in range(1000):
        idx = strided_clip(100, 16, 4, rng)
        assert (np.diff(idx) == 4).all() and idx[0] >= 0 and idx[-1] <= 99
        offsets.add(int(idx[0]))
    assert offsets == set(range(0, 100 - 61 + 1))  # every offset of the 61-frame span occurs


def test_short_videos_lower_the_stride_then_repeat_the_last_frame():
    assert (np.diff(strided_clip(40, 16, 4)) == 2).all()  # span 31 fits at stride 2
    idx = strided_clip(10, 16, 4)
    assert idx.tolist() == list(range(10)) + [9] * 6


def test_centre_clip_without_rng():
    assert strided_clip(100, 4, 10).tolist() == [34, 44, 54, 64]


def test_segments_take_one_frame_per_equal_segment():
    rng = np.random.default_rng(0)
    idx = segment_clip(80, 8, rng)
    assert ((idx // 10) == np.arange(8)).all()
    assert segment_clip(80, 8).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]


def test_test_clips_cover_the_video_from_start_to_end():
    clips = sampling.multiview_clips(300, 16, 4, 5)
    assert len(clips) == 5 and clips[0][0] == 0 and clips[-1][-1] == 299
    starts = [c[0] for c in clips]
    assert np.diff(starts).min() > 0 and all((np.diff(c) == 4).all() for c in clips)
    assert sampling.multiview_clips(100, 16, 4, 1)[0][0] == 20  # centred: (100 - 61) / 2, rounded


def test_three_crops_span_the_longer_side():
    assert three_crop_boxes(224, 300, 224) == [(0, 0, 224, 224), (0, 38, 224, 224), (0, 76, 224, 224)]
    assert three_crop_boxes(300, 224, 224)[2] == (76, 0, 224, 224)
    with pytest.raises(ValueError, match="smaller than"):
        three_crop_boxes(100, 100, 224)


def test_ssv2_test_clips_are_the_segments_starts_and_middles():
    from visualpath.data.sampling import segment_views

    starts, middles = segment_views(32, 8, 2)  # 8 segments of 4 frames
    assert starts.tolist() == [0, 4, 8, 12, 16, 20, 24, 28] and middles.tolist() == [2, 6, 10, 14, 18, 22, 26, 30]
    a, b = segment_views(50, 16, 2)  # VideoMAE: int(tick * x) and int(tick / 2 + tick * x)
    tick = 50 / 16
    assert a.tolist() == [int(tick * x) for x in range(16)] and b.tolist() == [int(tick / 2 + tick * x) for x in range(16)]
    assert not (a == b).all()


def test_an_ssv2_test_item_holds_two_different_clips(small_ucf):
    from visualpath.data import VideoDataset, read_ucf101

    records, classes = read_ucf101(small_ucf, 1, train=False)
    ds = VideoDataset(records, classes, frames=4, sampling="segments", mode="test", size=32, clips=2, crops=3)
    video = ds[0]["video"]  # (clips x crops, C, T, H, W)
    assert video.shape[0] == 6
    assert not torch.equal(video[1], video[4])  # centre crop of clip 1 vs clip 2
