"""An area with its own precomputed per-pixel map fits in one file: the map is computed by
one command, cached, loaded, cropped, flipped and framed with the clip for images and clips."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recipes import bimm_ucf101, precompute_maps
from visualpath.data import MapCache, TrainTransform, VideoDataset, read_all_frames, read_ucf101
from visualpath.data.synthetic import SyntheticSpec, generate
from visualpath.spec import import_object

FIXTURE = Path(__file__).parents[1] / "fixtures" / "saliency_area.py"


@pytest.fixture(scope="module")
def video_set(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("maps") / "ucf", SyntheticSpec(seed=3, groups=7, clips=1, frames=16,
                                                                            size=64))


@pytest.mark.e2e
def test_one_command_computes_any_declared_map_resumably_and_in_shards(video_set, capsys):
    graph = f"{FIXTURE}:build"
    args = ["--data-root", str(video_set), "--pathway", graph, "--map", "saliency", "--every", "2"]
    assert precompute_maps.main([*args, "--shard", "0/2"]) == 0
    cache = MapCache(video_set / "saliencys", video_set, name="saliency")
    videos = sorted((video_set / "UCF-101").rglob("*.avi"))
    assert [cache.has(v) for v in videos] == [i % 2 == 0 for i in range(len(videos))]
    assert precompute_maps.main([*args, "--shard", "1/2"]) == 0
    assert precompute_maps.main(args) == 0  # everything cached: nothing to do
    assert f"{len(videos)} already cached, 0 to do" in capsys.readouterr().err
    contrast = import_object(f"{FIXTURE}:contrast")
    frames = read_all_frames(videos[3]).numpy()
    maps, binary = cache.read(videos[3], [0, 1, 2])
    assert not binary and maps.dtype == torch.uint8
    assert np.array_equal(maps[0].numpy(), contrast(frames[0])) and torch.equal(maps[1], maps[0])  # nearest
    assert np.array_equal(maps[2].numpy(), contrast(frames[2]))


@pytest.mark.e2e
def test_the_command_names_a_map_no_area_declares(video_set, capsys):
    assert precompute_maps.main(["--data-root", str(video_set), "--map", "depth"]) == 2
    assert "no area of the graph declares the map 'depth'; declared: ['contour']" in capsys.readouterr().err


@pytest.mark.e2e
def test_v2_contours_without_a_sam_checkpoint_use_its_edge_detector(video_set, tmp_path):
    cache_dir = tmp_path / "contours"
    assert precompute_maps.main(["--data-root", str(video_set), "--cache", str(cache_dir), "--every", "8",
                                 "--shard", "0/7"]) == 0  # the paper's graph declares only "contour"
    video = sorted((video_set / "UCF-101").rglob("*.avi"))[0]
    maps, binary = MapCache(cache_dir, video_set).read(video, [0])
    assert binary and maps.any()


def test_maps_follow_the_crop_flip_and_views_of_the_clip(video_set):
    records, classes = read_ucf101(video_set, 1)
    contrast = import_object(f"{FIXTURE}:contrast")
    cache = MapCache(video_set / "saliencys", video_set, name="saliency")
    for r in records:  # a map that is exactly the frames' red channel, to check alignment
        frames = read_all_frames(r.path).numpy()
        cache.save(r.path, list(range(len(frames))), frames[..., 0])
    transform = TrainTransform(size=40, crop="resized", flip=True)
    ds = VideoDataset(records, classes, frames=4, stride=2, transform=transform, views=2, maps={"saliency": cache})
    for i in range(4):
        item = ds[i]
        assert item["saliency"].shape == (2, 4, 40, 40) and item["saliency"].dtype == torch.uint8
        red = item["video"][:, 0].float()
        assert (red - item["saliency"].float()).abs().mean() < 6  # resized the same way, pixel-aligned
    images = VideoDataset(records, classes, frames=1, transform=transform, as_images=True, maps={"saliency": cache})
    item = images[0]
    assert item["image"].shape == (3, 40, 40) and item["image_saliency"].shape == (40, 40)
    assert (item["image"][0].float() - item["image_saliency"].float()).abs().mean() < 6
    assert contrast is not None


def test_an_image_stream_fed_clips_takes_the_same_frame_of_its_map():
    from areas.bimm import ModelConfig
    from visualpath.tokens import standardise_sample

    build = import_object(f"{FIXTURE}:build")
    model = build(ModelConfig(size="tiny", width=32, heads=2, decoder_width=32, decoder_heads=2)).build()
    video = torch.randint(0, 255, (2, 3, 4, 32, 32), dtype=torch.uint8)
    batch = {"video": video, "saliency": video[:, 0]}  # the map is the red channel
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert out.streams["ventral"].sources["SAL"] == out.streams["dorsal"].sources["SAL"] == "cache"
    targets = model.targets(batch, stream="dorsal")
    # a user's area: its map reaches the loss standardised per sample (decision D22)
    assert torch.allclose(targets["SAL"], standardise_sample(model.streams["dorsal"].layout.patchify(
        video[:, :1].float() / 255)), atol=1e-5)
    # the image stream's target is the map of the frame it picked (the first draw of the generator)
    t = torch.randint(4, (2,), generator=torch.Generator().manual_seed(0))
    frame_map = video[torch.arange(2), 0, t].float()[:, None] / 255  # (B, 1, H, W)
    full = standardise_sample(model.streams["ventral"].layout.patchify(frame_map))  # (B, N, P)
    ventral = out.streams["ventral"]
    where = ventral.predicted["SAL"]
    expected = torch.gather(full, 1, where[..., None].expand(-1, -1, full.shape[-1]))
    assert torch.allclose(ventral.targets["SAL"], expected, atol=1e-5)
    with pytest.raises(ValueError, match=r"batch\['saliency'\] must be \(B, \[T,\] H, W\)"):
        model({"video": video, "saliency": video[:, 0, :2]})


@pytest.mark.e2e
def test_a_user_area_with_its_own_map_trains_from_its_cache(video_set, tmp_path):
    graph = f"{FIXTURE}:build"
    assert precompute_maps.main(["--data-root", str(video_set), "--pathway", graph, "--cache",
                                 str(tmp_path / "sal")]) == 0
    run_dir = tmp_path / "run"
    code = bimm_ucf101.main(["--variant", "tiny", "device=cpu", f"run_dir={run_dir}", f"data.root={video_set}",
                             f"pathway={graph}", f"data.maps=saliency={tmp_path / 'sal'}", "stages=ventral,joint"])
    assert code == 0
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("ventral.SAL" in m and "dorsal.SAL" in m for m in metrics if m["stage"] == "joint")


def test_sam_contours_of_an_image_folder_are_cached_and_follow_the_image(tmp_path):
    """The ventral stage's images get SAM contours too (a random-weight SAM, as for videos)."""
    from PIL import Image

    from recipes import precompute_contours
    from tests.visualpath.data.test_contours import tiny_sam
    from visualpath.data import ImageFolder

    root = tmp_path / "in1k"
    rng = np.random.default_rng(0)
    for part in ("train", "val"):
        for cls in ("a", "b"):
            (root / part / cls).mkdir(parents=True)
            for i in range(2):
                blocks = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)  # large flat blocks survive resizing
                Image.fromarray(np.kron(blocks, np.ones((8, 8, 1), np.uint8))).save(root / part / cls / f"{i}.png")
    counts = precompute_contours.run(root, tiny_sam(), points_per_side=4, pred_iou_thresh=0.0,
                                     stability_score_thresh=0.0)
    assert counts["done"] == 8 and (root / "contours" / "train" / "a" / "0.png.npz").is_file()
    assert precompute_contours.run(root, tiny_sam())["cached_before"] == 8  # resumes: nothing left to do
    cache = MapCache(root / "contours", root)
    for image in sorted((root / "train").rglob("*.png")):  # a cache equal to the red channel, to check alignment
        cache.save(image, [0], np.asarray(Image.open(image))[None, ..., 0] > 128)
    ds = ImageFolder(root / "train", transform=TrainTransform(size=32, crop="resized", flip=True), maps={"contour": cache})
    for i in range(len(ds)):
        item = ds[i]
        red, marked = item["image"][0].float(), item["image_contour"] > 0
        assert item["image_contour"].shape == (32, 32)
        assert red[marked].mean() > red[~marked].mean() + 40


@pytest.mark.e2e
def test_a_map_an_area_cannot_do_without_is_asked_for_before_compute(video_set, capsys, monkeypatch):
    from recipes import pipeline

    monkeypatch.setattr(pipeline, "setup", lambda *a, **k: pytest.fail("compute started"))
    with pytest.raises(SystemExit):
        bimm_ucf101.main(["--variant", "tiny", f"pathway={FIXTURE}:build", f"data.root={video_set}"])
    err = capsys.readouterr().err
    assert "area SAL reads the side map 'saliency' and has no fallback" in err and "data.maps=saliency=DIR" in err
