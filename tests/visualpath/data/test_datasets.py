import logging

import numpy as np
import pytest
import torch

from tests.visualpath.data.conftest import ramp_frames, write_video
from visualpath.data import (
    DatasetFormatError,
    ImageFolder,
    TrainTransform,
    VideoDataset,
    VideoError,
    VideoRecord,
    read_ucf101,
)


def test_ucf101_train_items(small_ucf):
    records, classes = read_ucf101(small_ucf, 1, train=True)
    assert len(records) == 10 * 5 and len(classes) == 10  # groups 3-7 of 7 train in split 1
    ds = VideoDataset(records, classes, frames=8, stride=2, transform=TrainTransform(size=32), seed=3)
    item = ds[7]
    assert item["video"].shape == (3, 8, 32, 32) and item["video"].dtype == torch.uint8
    assert item["label"] == records[7].label and item["index"] == 7 and item["skipped"] == 0
    again = VideoDataset(records, classes, frames=8, stride=2, transform=TrainTransform(size=32), seed=3)[7]
    assert torch.equal(item["video"], again["video"])  # deterministic given seed and epoch
    ds.set_epoch(1)
    assert not torch.equal(ds[7]["video"], item["video"])


def test_repeated_sampling_and_multiview_testing(small_ucf):
    records, classes = read_ucf101(small_ucf, 1, train=True)
    ds = VideoDataset(records, classes, frames=8, stride=2, transform=TrainTransform(size=32), views=3)
    assert ds[0]["video"].shape == (3, 3, 8, 32, 32)
    test, _ = read_ucf101(small_ucf, 1, train=False)
    ds = VideoDataset(test, classes, frames=8, stride=2, mode="test", size=48, clips=5, crops=3)
    assert ds[0]["video"].shape == (15, 3, 8, 48, 48)
    ds = VideoDataset(test, classes, frames=8, sampling="segments", mode="test", size=48, clips=2, crops=1)
    assert ds[0]["video"].shape == (2, 3, 8, 48, 48)


def test_frames_of_a_video_dataset_as_images(small_ucf):
    records, classes = read_ucf101(small_ucf, 1, train=True)
    ds = VideoDataset(records, classes, frames=1, transform=TrainTransform(size=32, crop="resized"), as_images=True)
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and "video" not in item


def test_broken_videos_are_skipped_warned_counted_and_replaced(tmp_path, caplog):
    good = [write_video(tmp_path / f"good{i}.avi", ramp_frames(20)) for i in range(3)]
    (tmp_path / "empty.avi").write_bytes(b"")
    (tmp_path / "truncated.avi").write_bytes(good[0].read_bytes()[: good[0].stat().st_size // 2])
    (tmp_path / "garbage.avi").write_bytes(b"\x00\x01" * 3000)
    records = [VideoRecord(p, 0) for p in good] + [
        VideoRecord(tmp_path / n, 1) for n in ("empty.avi", "truncated.avi", "garbage.avi", "missing.avi")]
    with caplog.at_level(logging.WARNING):
        ds = VideoDataset(records, ["a", "b"], frames=8, stride=2)
    assert ds.missing_files == [str(tmp_path / "missing.avi")] and len(ds) == 6
    assert "missing.avi" in caplog.text
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(len(ds))]
    assert ds.skipped == 3
    for name in ("empty.avi", "truncated.avi", "garbage.avi"):
        assert sum(name in r.message for r in caplog.records) == 1  # one line naming it
    assert all(it["video"].shape == (3, 8, 32, 32) for it in items)
    assert sum(int(it["skipped"]) for it in items) == 3  # each bad file found once
    assert all(int(it["label"]) == 0 for it in items)  # replaced by readable videos


def test_a_dataset_with_nothing_readable_fails_clearly(tmp_path):
    for i in range(3):
        (tmp_path / f"bad{i}.avi").write_bytes(b"junk")
    ds = VideoDataset([VideoRecord(tmp_path / f"bad{i}.avi", 0) for i in range(3)], ["a"], frames=4)
    with pytest.raises(VideoError, match="could not be read"):
        ds[0]
    with pytest.raises(DatasetFormatError, match="none of the 2 listed files exists"):
        VideoDataset([VideoRecord(tmp_path / "x.avi", 0), VideoRecord(tmp_path / "y.avi", 0)], ["a"])
    with pytest.raises(DatasetFormatError, match="class list is empty"):
        VideoDataset([VideoRecord(tmp_path / "bad0.avi", 0)], [])


def test_image_folder(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(np.full((40, 60, 3), 100 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    ds = ImageFolder(tmp_path, transform=TrainTransform(size=32, crop="resized"))
    assert ds.classes == ["cat", "dog"] and len(ds) == 5
    items = [ds[i] for i in range(len(ds))]
    assert all(it["image"].shape == (3, 32, 32) for it in items) and ds.skipped == 1
    centred = ImageFolder(tmp_path, size=32)[0]["image"]
    assert centred.shape == (3, 32, 32)
    with pytest.raises(DatasetFormatError, match="no class folders"):
        ImageFolder(tmp_path / "cat")
