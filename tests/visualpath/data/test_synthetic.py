import numpy as np
import pytest
import torch

from tests.visualpath.data.conftest import SMALL
from visualpath.data import ensure_synthetic, read_frames, read_ucf101
from visualpath.data.synthetic import CLASSES, _backgrounds, _render


def test_official_layout_and_split_files(small_ucf):
    assert sorted(p.name for p in (small_ucf / "UCF-101").iterdir()) == sorted(CLASSES)
    lists = small_ucf / "ucfTrainTestlist"
    assert (lists / "classInd.txt").read_bytes().startswith(b"1 TranslateLeft\r\n")
    for split in (1, 2, 3):
        train, _ = read_ucf101(small_ucf, split, True)
        test, _ = read_ucf101(small_ucf, split, False)
        assert len(train) + len(test) == 10 * 7 and len(test) == 10 * 2
        assert not {r.path for r in train} & {r.path for r in test}
    assert b" " not in (lists / "testlist01.txt").read_bytes().split(b"\r\n")[0]  # no labels


def test_generation_is_deterministic_and_cached(small_ucf, tmp_path):
    again = ensure_synthetic(tmp_path / "again", SMALL)
    name = "Expand/v_Expand_g03_c01.avi"
    a, b = read_frames(small_ucf / "UCF-101" / name, range(24)), read_frames(again / "UCF-101" / name, range(24))
    assert torch.equal(a, b)
    stamp = (again / "visualpath_synthetic.json").stat().st_mtime_ns
    assert ensure_synthetic(again, SMALL) == again
    assert (again / "visualpath_synthetic.json").stat().st_mtime_ns == stamp  # not regenerated


def _centroid_track(label, seed):
    scene, rng = np.random.default_rng([seed]), np.random.default_rng([seed, 1])
    video = _render(label, SMALL, _backgrounds(SMALL.size), scene, rng).astype(float)
    moving = np.abs(video - np.median(video, axis=0)).mean(-1) > 40  # (T, H, W) object pixels
    ys, xs = np.mgrid[0:SMALL.size, 0:SMALL.size]
    track = [(xs[m].mean(), ys[m].mean(), m.sum()) for m in moving if m.any()]
    return np.array(track)


@pytest.mark.parametrize("label, axis, sign", [("TranslateLeft", 0, -1), ("TranslateRight", 0, 1),
                                               ("TranslateUp", 1, -1), ("TranslateDown", 1, 1),
                                               ("Expand", 2, 1), ("Contract", 2, -1)])
def test_the_motion_is_the_class(label, axis, sign):
    for seed in range(3):
        track = _centroid_track(label, seed)
        assert sign * (track[-1, axis] - track[0, axis]) > (2 if axis < 2 else 20)


def test_classes_of_a_group_share_the_scene(small_ucf):
    first = {c: read_frames(small_ucf / "UCF-101" / c / f"v_{c}_g03_c01.avi", [0])[0].float() for c in CLASSES}
    other_scene = read_frames(small_ucf / "UCF-101" / "Expand" / "v_Expand_g04_c01.avi", [0])[0].float()
    corner = (slice(0, 8), slice(0, 8))  # background, away from the object
    base = first["Expand"][corner]
    assert all((f[corner] - base).abs().mean() < 12 for f in first.values())
    assert (other_scene[corner] - base).abs().mean() > 12


def test_object_positions_do_not_reveal_the_direction():
    # pooled over time, where the object is has the same distribution in opposite classes:
    # only the motion tells them apart
    left = np.concatenate([_centroid_track("TranslateLeft", s)[:, 0] for s in range(10)])
    right = np.concatenate([_centroid_track("TranslateRight", s)[:, 0] for s in range(10)])
    assert abs(left.mean() - right.mean()) < 0.06 * SMALL.size
    assert abs(left.std() - right.std()) < 0.06 * SMALL.size
