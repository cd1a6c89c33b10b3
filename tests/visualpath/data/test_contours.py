from functools import partial

import numpy as np
import pytest
import torch
from skimage.segmentation import find_boundaries

from recipes import precompute_contours, precompute_maps
from tests.visualpath.data.conftest import SMALL
from visualpath.data import ContourCache, DatasetFormatError, TrainTransform, VideoDataset, masks_to_contour, read_ucf101
from visualpath.data.synthetic import generate


def tiny_sam():
    """A random-weight SAM built with segment-anything's own classes (no checkpoint here)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(0)
    size, patch, dim = 256, 16, 32
    return Sam(
        image_encoder=ImageEncoderViT(img_size=size, patch_size=patch, embed_dim=64, depth=1, num_heads=2,
                                      out_chans=dim, norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                                      use_rel_pos=True, window_size=4, global_attn_indexes=[0]),
        prompt_encoder=PromptEncoder(embed_dim=dim, image_embedding_size=(size // patch, size // patch),
                                     input_image_size=(size, size), mask_in_chans=4),
        mask_decoder=MaskDecoder(num_multimask_outputs=3, transformer_dim=dim, iou_head_depth=1, iou_head_hidden_dim=16,
                                 transformer=TwoWayTransformer(depth=1, embedding_dim=dim, mlp_dim=64, num_heads=2)),
        pixel_mean=[123.675, 116.28, 103.53], pixel_std=[58.395, 57.12, 57.375],
    ).eval()


def test_mask_boundaries_match_skimage():
    a = np.zeros((20, 30), bool)
    a[3:12, 4:15] = True
    b = np.zeros((20, 30), bool)
    b[8:18, 10:28] = True
    ours = masks_to_contour([a, b], a.shape)
    ref = find_boundaries(a, mode="inner") | find_boundaries(b, mode="inner")
    assert np.array_equal(ours, ref)
    assert not masks_to_contour([np.ones((5, 5), bool)], (5, 5)).any()  # image borders are not contours


def test_cache_round_trip_and_nearest_frames(tmp_path):
    (tmp_path / "d" / "c").mkdir(parents=True)
    video = tmp_path / "d" / "c" / "v.avi"
    video.write_bytes(b"x")
    cache = ContourCache(tmp_path / "d" / "contours", tmp_path / "d")
    maps = np.random.default_rng(0).random((3, 9, 11)) > 0.7
    path = cache.save(video, [0, 4, 8], maps)
    assert path == tmp_path / "d" / "contours" / "c" / "v.avi.npz" and cache.has(video)
    assert not list(path.parent.glob(".tmp-*"))  # nothing half-written left behind
    loaded = cache.load(video, [0, 1, 3, 8, 20])
    assert loaded.dtype == torch.uint8 and loaded.shape == (5, 9, 11)
    expected = maps[[0, 0, 1, 2, 2]].astype(np.uint8) * 255
    assert np.array_equal(loaded.numpy(), expected)
    assert cache.load(tmp_path / "d" / "c" / "other.avi", [0]) is None


@pytest.fixture
def tiny_set(tmp_path):
    spec = type(SMALL)(seed=2, groups=7, clips=1, frames=8, size=32)
    return generate(tmp_path / "ucf", spec)


def test_precompute_with_a_random_weight_sam_resumes_and_shards(tiny_set, monkeypatch):
    sam = tiny_sam()
    run = partial(precompute_contours.run, tiny_set, sam, every=4, points_per_side=4,
                  pred_iou_thresh=0.0, stability_score_thresh=0.0)
    first = run(shard=(0, 2))
    assert first["done"] == 35 and first["failed"] == 0  # every other of the 70 videos
    cache = ContourCache(tiny_set / "contours", tiny_set)
    videos = sorted((tiny_set / "UCF-101").rglob("*.avi"))
    assert [cache.has(v) for v in videos] == [i % 2 == 0 for i in range(70)]
    maps = cache.load(videos[0], range(8))
    assert maps.shape == (8, 32, 32) and maps.any()  # frames 0..7 answered by cached 0 and 4
    assert torch.equal(maps[1], maps[0]) and torch.equal(maps[7], maps[4])

    # an interrupted run keeps the finished videos and resumes with the rest
    calls = {"n": 0}
    real = precompute_maps.map_video

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(precompute_maps, "map_video", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(shard=(1, 2))
    monkeypatch.setattr(precompute_maps, "map_video", real)
    second = run(shard=(1, 2))
    assert second["cached_before"] == 3 and second["done"] == 32
    assert len(list((tiny_set / "contours").rglob("*.npz"))) == 70
    assert not list((tiny_set / "contours").rglob(".tmp-*"))


def test_dataset_serves_cached_contours_aligned_with_the_clip(tiny_set):
    records, classes = read_ucf101(tiny_set, 1)
    cache = ContourCache(tiny_set / "contours", tiny_set)
    with pytest.raises(DatasetFormatError, match="contour cache .* lacks"):
        VideoDataset(records, classes, frames=4, stride=2, contours=cache)
    for r in records:  # a cache whose contours are exactly the frames' bright pixels
        from visualpath.data import read_all_frames
        frames = read_all_frames(r.path).numpy()
        cache.save(r.path, list(range(len(frames))), frames[..., 0] > 128)
    ds = VideoDataset(records, classes, frames=4, stride=2, contours=cache,
                      transform=TrainTransform(size=24, crop="resized"), views=2)
    for i in range(5):
        item = ds[i]
        assert item["contour"].shape == (2, 4, 24, 24) and item["video"].shape == (2, 3, 4, 24, 24)
        red, marked = item["video"][:, 0].float(), item["contour"] > 0
        if 20 < marked.sum() < marked.numel() - 20:  # marked pixels are the red ones
            aligned = red[marked].mean() - red[~marked].mean()
            shifted = marked.roll(5, dims=-1)  # the same map, misaligned by 5 px
            assert aligned > 10 and aligned > red[shifted].mean() - red[~shifted].mean()


@pytest.mark.e2e
def test_command_line_reports_a_missing_checkpoint(tiny_set, capsys):
    code = precompute_contours.main(["--data-root", str(tiny_set), "--sam-checkpoint", "/nope/sam.pth",
                                     "--model-type", "vit_b"])
    assert code == 2 and "SAM checkpoint not found: /nope/sam.pth" in capsys.readouterr().err
