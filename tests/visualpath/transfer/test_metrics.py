"""Transfer metrics on fixed predictions: hand-computed cases and torchmetrics."""

import numpy as np
import pytest
import torch

from visualpath.transfer.metrics import coco_ap, confusion_matrix, frame_map, mean_iou, voc_ap


def test_ava_frame_map_on_a_hand_computed_case():
    box1, box2, far = [0.1, 0.1, 0.4, 0.5], [0.5, 0.5, 0.9, 0.9], [0.0, 0.6, 0.1, 0.7]
    gt = [("A", box1, 1), ("B", box2, 1), ("A", box2, 2)]
    dets = [("A", box1, 1, 0.9), ("A", box1, 1, 0.8),  # the second is a duplicate: false positive
            ("B", far, 1, 0.7), ("B", [0.52, 0.5, 0.9, 0.92], 1, 0.6),  # IoU 0.9 with box2
            ("A", box1, 3, 0.5)]  # class 3 has no ground truth: not scored
    # class 1: TP FP FP TP over 2 positives -> precision 1, .5, .33, .5 at recall .5, .5, .5, 1;
    # made monotone: 1 up to recall .5, then .5 -> AP = .5 * 1 + .5 * .5 = .75. Class 2: 0.
    result = frame_map(dets, gt)
    assert result["per_class"] == {1: pytest.approx(0.75), 2: 0.0}
    assert result["map"] == pytest.approx(0.375)
    assert frame_map(dets, gt, classes=[1])["map"] == pytest.approx(0.75)


def test_voc_ap_edges():
    assert voc_ap([True, True], 2) == 1.0
    assert voc_ap([], 3) == 0.0
    assert np.isnan(voc_ap([True], 0))
    assert voc_ap([False, True], 1) == pytest.approx(0.5)


def test_mean_iou_equals_torchmetrics():
    tm = pytest.importorskip("torchmetrics")
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 6, (4, 32, 32), generator=g)
    pred = torch.where(torch.rand(4, 32, 32, generator=g) < 0.6, target, torch.randint(0, 6, (4, 32, 32), generator=g))
    target[:, :4] = 255  # ignored pixels
    ref = tm.classification.MulticlassJaccardIndex(num_classes=6, average="macro", ignore_index=255)(pred, target)
    assert mean_iou(pred, target, 6) == pytest.approx(float(ref), abs=1e-6)
    # over a split: the summed confusion matrix, not a mean of per-image scores
    total = sum(confusion_matrix(p, t, 6) for p, t in zip(pred, target))
    assert mean_iou(None, None, 6, confusion=total) == pytest.approx(float(ref), abs=1e-6)


def _coco_gt():
    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[5:15, 4:12] = 1
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask))
    rle["counts"] = rle["counts"].decode("ascii")
    return {"images": [{"id": 1, "width": 20, "height": 20}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 5, 8, 10], "area": 80,
                             "iscrowd": 0, "segmentation": rle}],
            "categories": [{"id": 3, "name": "square"}]}, torch.from_numpy(mask).float()


def test_coco_ap_on_hand_computed_cases():
    pytest.importorskip("pycocotools")
    gt, mask = _coco_gt()
    perfect = [{"image_id": 1, "boxes": [[4, 5, 12, 15]], "scores": [0.9], "labels": [3], "masks": mask[None]}]
    result = coco_ap(gt, perfect)
    assert result["bbox_ap"] == pytest.approx(1.0) and result["segm_ap"] == pytest.approx(1.0)
    # a false positive scored above the true one: precision 1/2 at every recall -> AP 0.5
    other = torch.zeros(20, 20)
    other[0:3, 15:19] = 1
    worse = [{"image_id": 1, "boxes": [[15, 0, 19, 3], [4, 5, 12, 15]], "scores": [0.95, 0.9], "labels": [3, 3],
              "masks": torch.stack([other, mask])}]
    result = coco_ap(gt, worse)
    assert result["bbox_ap"] == pytest.approx(0.5, abs=1e-6) and result["segm_ap"] == pytest.approx(0.5, abs=1e-6)
