"""AVA transfer: the official CSV, label-map and frame-list formats, clear errors, a tiny run."""

import json

import attrs
import numpy as np
import pytest
import torch

from recipes import transfer_ava
from visualpath.data.formats import DatasetFormatError
from visualpath.transfer.ava import AVA, read_action_list, read_boxes, write_ava_like


@pytest.fixture(scope="module")
def ava(tmp_path_factory):
    return write_ava_like(tmp_path_factory.mktemp("ava"), videos=3, seconds=2, size=48)


def test_key_frames_carry_clips_boxes_and_multi_hot_labels(ava):
    train = AVA(ava, "train", frames=4, stride=4, size=48, short_side=48)
    assert train.class_ids == [12, 14, 17, 80]
    item = train[0]
    assert item["video"].shape == (3, 4, 48, 48) and item["video"].dtype == torch.uint8
    assert item["boxes"].shape[1] == 4 and item["labels"].shape == (len(item["boxes"]), 4)
    assert (item["labels"].sum(1) >= 1).all()  # every ground-truth person does something
    np.testing.assert_array_equal(train.clip_indices(180, 901), [22, 26, 30, 34])
    val = AVA(ava, "val", frames=4, stride=4, size=48, threshold=0.8, short_side=48)
    assert all(s >= 0.8 for k in val.keys for _, s in val.boxes[k])  # the 0.3 distractors are dropped
    assert (val[0]["labels"] == 0).all()


def test_bad_annotation_files_name_the_file_and_the_format(ava, tmp_path):
    with pytest.raises(DatasetFormatError, match="ava_action_list.*is missing: expected AVA's label map"):
        read_action_list(tmp_path / "annotations" / "ava_action_list_v2.2_for_activitynet_2019.pbtxt")
    bad = tmp_path / "ava_train_v2.2.csv"
    bad.write_text("v000,901,0.1,0.2,0.3\n")
    with pytest.raises(DatasetFormatError, match=r"ava_train_v2.2.csv, line 1: .* not a row of AVA annotations: "
                                                 r"video_id,timestamp,x1,y1,x2,y2,action_id,person_id"):
        read_boxes(bad)
    bad.write_text("v000,901,0.5,0.2,0.3,0.9,12,0\n")
    with pytest.raises(DatasetFormatError, match="line 1: box .* is not x1<x2"):
        read_boxes(bad)


@pytest.mark.e2e
def test_the_tiny_variant_trains_its_loss_down_and_reports_frame_map(tmp_path, monkeypatch):
    monkeypatch.setenv("VISUALPATH_DATA", str(tmp_path / "data"))
    cfg = attrs.evolve(transfer_ava.VARIANTS["tiny"], run_dir=str(tmp_path / "run"), device="cpu")
    results = transfer_ava.run(cfg)
    assert 0.0 <= results["map"] <= 1.0 and results["key_frames"] > 0
    assert set(results["per_class"]) <= {"stand", "walk", "carry/hold (an object)", "watch (a person)"}
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert np.mean(losses[-4:]) < np.mean(losses[:4])


@pytest.mark.e2e
def test_a_pretrained_run_gives_its_dorsal_encoder(tmp_path, monkeypatch, capsys):
    from rich.console import Console
    from safetensors.torch import load_file

    from recipes import bimm_ucf101, pipeline

    monkeypatch.setenv("VISUALPATH_DATA", str(tmp_path / "data"))
    source = attrs.evolve(bimm_ucf101.VARIANTS["tiny"], run_dir=str(tmp_path / "pre"), device="cpu",
                          stages=("ventral", "joint"))
    pipeline.run(source)
    cfg = attrs.evolve(transfer_ava.VARIANTS["tiny"], pretrained=source.run_dir)
    transfer_ava.check(cfg)
    model = transfer_ava.build_model(cfg, 4, Console(stderr=True))
    saved = load_file(f"{source.run_dir}/joint/model.safetensors")
    assert torch.equal(model.backbone.encoder.blocks[-1].mlp.fc1.weight, saved["streams.dorsal.stages.MT.1.mlp.fc1.weight"])
    assert "dorsal encoder from" in capsys.readouterr().err


def test_frames_keep_their_aspect_ratio_train_crops_follow_the_boxes_and_test_sees_the_whole_frame(tmp_path):
    """AVA's 450x360 frames become 320x256 (the paper), cropped to 224 in training."""
    from PIL import Image

    root = write_ava_like(tmp_path / "ava", videos=3, seconds=2, size=64)
    for frame in (root / "frames").rglob("*.jpg"):  # make the frames 450x360, as AVA's are
        with Image.open(frame) as img:
            img.resize((450, 360)).save(frame)
    train = AVA(root, "train", frames=2, stride=4, size=224, short_side=256)
    assert train.resized(450, 360) == (320, 256)
    val = AVA(root, "val", frames=2, stride=4, size=224, short_side=256)
    assert val[0]["video"].shape[-2:] == (256, 320)  # the whole resized frame
    box = torch.tensor(val.boxes[val.keys[0]][0][0]) * torch.tensor([320, 256, 320, 256])
    assert torch.allclose(val[0]["boxes"][0], box)
    for i in range(len(train)):
        item = train[i]
        assert item["video"].shape[-2:] == (224, 224)
        b = item["boxes"]
        assert len(b) == len(item["labels"]) and ((b >= 0) & (b <= 224)).all()
        assert ((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])).all()
    # a person box lands on the person: the generated people are saturated rectangles
    item = train[0]
    frame = item["video"][:, 0].float()  # (3, H, W)
    x0, y0, x1, y1 = item["boxes"][0].round().int().tolist()
    inside = frame[:, y0 + 2:y1 - 2, x0 + 2:x1 - 2]
    assert (inside[0] - inside[2]).abs().mean() > 40  # red or blue person, not the grey scene


def test_sigmoid_targets_are_smoothed():
    step = transfer_ava.step_fn_for(0.1)
    seen = {}

    class Model(torch.nn.Module):
        def forward(self, x, boxes):
            seen["n"] = sum(len(b) for b in boxes)
            return torch.zeros(seen["n"], 2)

    batch = {"video": torch.zeros(1, 3, 2, 32, 32, dtype=torch.uint8), "boxes": [torch.zeros(1, 4)],
             "labels": torch.tensor([[1.0, 0.0]])}
    loss, _ = step(Model(), batch)
    target = torch.tensor([[0.95, 0.05]])
    assert torch.allclose(loss, torch.nn.functional.binary_cross_entropy_with_logits(torch.zeros(1, 2), target))
