import os

import pytest
import torch

from tests.visualpath.data.conftest import ramp_frames, write_video
from visualpath.data import TrainTransform, VideoDataset, VideoRecord, read_ucf101
from visualpath.loader import make_loader
from visualpath.data.memory import decoded_videos, release_decoded
from visualpath.engine import Runtime


def _items(ds, n):
    return [ds[i] for i in range(n)]


@pytest.mark.parametrize("kind", ["train", "views", "images", "test"])
def test_items_from_memory_equal_items_decoded_from_their_files(small_ucf, kind):
    records, classes = read_ucf101(small_ucf, 1, train=kind != "test")
    kept = decoded_videos([r.path for r in records], 2**30)
    assert len(kept) == len(records)
    args = {"train": dict(frames=8, stride=2, transform=TrainTransform(size=32)),
            "views": dict(frames=8, stride=2, transform=TrainTransform(size=32, crop="multiscale"), views=2),
            "images": dict(frames=1, transform=TrainTransform(size=32, crop="resized"), as_images=True),
            "test": dict(frames=8, stride=2, mode="test", size=48, clips=2, crops=3)}[kind]
    plain = VideoDataset(records, classes, seed=5, **args)
    fast = VideoDataset(records, classes, seed=5, memory=kept, **args)
    for a, b in zip(_items(plain, len(records)), _items(fast, len(records))):
        assert a.keys() == b.keys()
        for key in a:
            same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
            assert same, key


def test_the_budget_broken_files_and_changed_files(tmp_path, small_ucf):
    records, classes = read_ucf101(small_ucf, 1, train=True)
    one = decoded_videos([r.path for r in records[:1]], 2**30).nbytes
    assert len(decoded_videos([r.path for r in records[:5]], 2 * one + 1)) == 2  # in order, while they fit
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video")
    good = write_video(tmp_path / "good.avi", ramp_frames(20))
    kept = decoded_videos([broken, tmp_path / "missing.avi", good], 2**30)
    assert len(kept) == 1 and kept.frames(broken) is None and kept.frames(good).shape[0] == 20
    ds = VideoDataset([VideoRecord(broken, 0), VideoRecord(good, 0)], ["a"], frames=4, stride=2, memory=kept)
    assert ds[0]["skipped"] == 1  # the broken file is read from disk, skipped and counted as before
    os.utime(good, ns=(1, 1))
    assert kept.frames(good) is None  # a file changed since: read from the file again


def test_the_same_files_share_one_buffer_and_workers_read_it(small_ucf):
    records, classes = read_ucf101(small_ucf, 1, train=True)
    paths = [r.path for r in records[:6]]
    kept = decoded_videos(paths, 2**30)
    assert decoded_videos(paths, 2**30) is kept and kept.buffer.is_shared()
    ds = VideoDataset(records[:6], classes, frames=8, stride=2, transform=TrainTransform(size=32), memory=kept)
    runtime = Runtime(device=torch.device("cpu"), rank=0, world=1, local_rank=0)
    loader = make_loader(ds, 3, runtime, shuffle=False, seed=0, workers=2)
    batches = list(loader)
    plain = VideoDataset(records[:6], classes, frames=8, stride=2, transform=TrainTransform(size=32))
    assert torch.equal(torch.cat([b["video"] for b in batches]), torch.stack([plain[i]["video"] for i in range(6)]))


def test_spawned_workers_read_the_same_frames(small_ucf):
    """macOS and Windows start loader workers by spawning: the buffer reaches them pickled."""
    from torch.utils.data import DataLoader

    records, classes = read_ucf101(small_ucf, 1, train=True)
    kept = decoded_videos([r.path for r in records[:4]], 2**30)
    ds = VideoDataset(records[:4], classes, frames=8, stride=2, transform=TrainTransform(size=32), memory=kept)
    spawned = list(DataLoader(ds, batch_size=2, num_workers=1, multiprocessing_context="spawn"))
    plain = VideoDataset(records[:4], classes, frames=8, stride=2, transform=TrainTransform(size=32))
    assert torch.equal(torch.cat([b["video"] for b in spawned]), torch.stack([plain[i]["video"] for i in range(4)]))


def test_released_stores_are_made_again(small_ucf):
    records, _ = read_ucf101(small_ucf, 1, train=True)
    paths = [r.path for r in records[:3]]
    kept = decoded_videos(paths, 2**30)
    assert release_decoded() >= kept.nbytes > 0
    assert decoded_videos(paths, 2**30) is not kept  # forgotten: the next stage decodes again
    release_decoded()
