"""COCO transfer: the official layout via pycocotools, clear errors, a tiny run whose loss falls."""

import json

import attrs
import numpy as np
import pytest
import torch

pytest.importorskip("pycocotools")

from recipes import transfer_coco  # noqa: E402
from visualpath.data.formats import DatasetFormatError  # noqa: E402
from visualpath.transfer.coco import COCODetection, write_coco_like  # noqa: E402


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_coco_like(tmp_path_factory.mktemp("coco"), train=8, val=3, size=64)


def test_items_carry_boxes_labels_and_masks_that_agree(coco):
    ds = COCODetection(coco, "val2017", train=False)
    image, target = ds[0]
    assert image.shape == (3, 64, 64) and 0 <= image.min() and image.max() <= 1
    assert ds.num_classes == 4 and set(target["labels"].tolist()) <= {1, 2, 3}
    for box, mask in zip(target["boxes"], target["masks"]):
        ys, xs = mask.nonzero(as_tuple=True)
        assert torch.allclose(box, torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float())
    assert ds.category_of(1) == 10


def test_missing_or_malformed_annotations_name_the_file(coco, tmp_path):
    with pytest.raises(DatasetFormatError, match="instances_train2017.json is missing: expected COCO's layout"):
        COCODetection(tmp_path)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "train2017").mkdir()
    (tmp_path / "annotations" / "instances_train2017.json").write_text("{not json")
    with pytest.raises(DatasetFormatError, match="instances_train2017.json is not JSON"):
        COCODetection(tmp_path)
    (tmp_path / "annotations" / "instances_train2017.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetFormatError, match="lacks annotations, categories"):
        COCODetection(tmp_path)


@pytest.mark.e2e
def test_the_tiny_variant_trains_its_loss_down_and_reports_box_and_mask_ap(tmp_path, monkeypatch):
    monkeypatch.setenv("VISUALPATH_DATA", str(tmp_path / "data"))
    cfg = attrs.evolve(transfer_coco.VARIANTS["tiny"], run_dir=str(tmp_path / "run"), device="cpu",
                       optim=attrs.evolve(transfer_coco.VARIANTS["tiny"].optim, epochs=4))
    results = transfer_coco.run(cfg)
    assert 0.0 <= results["bbox_ap"] <= 1.0 and 0.0 <= results["segm_ap"] <= 1.0 and results["images"] == 6
    losses = [json.loads(line)["loss"] for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert len(losses) == 32 and np.mean(losses[-6:]) < np.mean(losses[:6])
