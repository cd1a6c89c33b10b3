"""Evaluation metrics of the transfer tasks.

- :func:`coco_ap`: COCO box and mask AP with pycocotools' own evaluation (``COCOeval``), from
  detections in torchvision's output form.
- :func:`mean_iou`: ADE20K's mean intersection over union from a confusion matrix; classes
  absent from both the predictions and the labels are left out of the mean, pixels labelled
  ``ignore_index`` are not counted.
- :func:`frame_map`: AVA's frame-level mean AP at IoU 0.5, as the official evaluation
  computes it (Pascal VOC style): per class, detections sorted by score, each a true
  positive when it overlaps a not yet matched ground-truth box of its class on its key frame
  by IoU >= 0.5, AP the area under the precision-recall curve with precision made
  monotonically decreasing, averaged over the classes that have ground truth.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["coco_ap", "mean_iou", "confusion_matrix", "frame_map", "voc_ap", "box_iou"]


# --------------------------------------------------------------------------- COCO


def coco_ap(ground_truth: Mapping, detections: Sequence[Mapping], iou_types=("bbox", "segm")) -> dict[str, float]:
    """COCO AP (0.50:0.95), AP50 and AP75 per ``iou_type``.

    Args:
        ground_truth: a COCO-format annotation dict (``images``, ``annotations``,
            ``categories``).
        detections: one dict per image: ``image_id``, ``boxes`` ``(n, 4)`` x1y1x2y2 pixels,
            ``scores`` ``(n,)``, ``labels`` ``(n,)`` category ids, and for ``segm`` ``masks``
            ``(n, H, W)`` (probabilities or binary; thresholded at 0.5).

    Returns:
        ``{"bbox_ap": ..., "bbox_ap50": ..., "bbox_ap75": ..., "segm_ap": ...}``.
    """
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in ground_truth.items()}
    gt.createIndex()
    results = []
    for det in detections:
        boxes = torch.as_tensor(det["boxes"], dtype=torch.float64).reshape(-1, 4)
        scores = torch.as_tensor(det["scores"], dtype=torch.float64).reshape(-1)
        labels = torch.as_tensor(det["labels"]).reshape(-1)
        masks = det.get("masks")
        for i in range(len(boxes)):
            x1, y1, x2, y2 = boxes[i].tolist()
            entry = {"image_id": int(det["image_id"]), "category_id": int(labels[i]), "score": float(scores[i]),
                     "bbox": [x1, y1, x2 - x1, y2 - y1]}
            if masks is not None:
                m = np.asfortranarray((torch.as_tensor(masks[i]).reshape(masks[i].shape[-2:]) > 0.5).numpy()
                                      .astype(np.uint8))
                rle = mask_utils.encode(m)
                rle["counts"] = rle["counts"].decode("ascii")
                entry["segmentation"] = rle
            results.append(entry)
    out: dict[str, float] = {}
    for kind in iou_types:
        if not results:
            out.update({f"{kind}_ap": 0.0, f"{kind}_ap50": 0.0, f"{kind}_ap75": 0.0})
            continue
        if kind == "segm" and "segmentation" not in results[0]:
            raise ValueError("segm AP needs 'masks' in the detections")
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, kind)
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        out.update({f"{kind}_ap": float(ev.stats[0]), f"{kind}_ap50": float(ev.stats[1]),
                    f"{kind}_ap75": float(ev.stats[2])})
    return out


# --------------------------------------------------------------------------- segmentation


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255) -> Tensor:
    """``(num_classes, num_classes)`` counts, rows the true class, columns the predicted."""
    pred, target = pred.reshape(-1).long(), target.reshape(-1).long()
    keep = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    index = target[keep] * num_classes + pred[keep].clamp(0, num_classes - 1)
    return torch.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def mean_iou(pred: Tensor, target: Tensor, num_classes: int, ignore_index: int | None = 255,
             confusion: Tensor | None = None) -> float:
    """mIoU over the classes present in the labels or the predictions.

    Pass ``confusion`` (summed over a dataset with :func:`confusion_matrix`) to score a whole
    split, as ADE20K's evaluation does, rather than averaging per image.
    """
    cm = confusion if confusion is not None else confusion_matrix(pred, target, num_classes, ignore_index)
    cm = cm.double()
    inter = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else float("nan")


# --------------------------------------------------------------------------- AVA


def box_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``(n, 4)`` and ``(m, 4)`` x1y1x2y2 boxes (AVA's normalised coordinates or pixels)."""
    a, b = a.double(), b.double()
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp_min(0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter).clamp_min(1e-12)


def voc_ap(tp: Sequence[bool], num_positives: int) -> float:
    """Area under the precision-recall curve of detections already sorted by score, with
    precision made monotonically decreasing (Pascal VOC 2010+, AVA's evaluation)."""
    if num_positives == 0:
        return float("nan")
    tp = np.asarray(tp, dtype=np.float64)
    if tp.size == 0:
        return 0.0
    cum_tp = np.cumsum(tp)
    precision = cum_tp / np.arange(1, len(tp) + 1)
    recall = cum_tp / num_positives
    precision = np.concatenate([[0.0], precision, [0.0]])
    recall = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    steps = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def frame_map(detections: Sequence[tuple[Hashable, Sequence[float], int, float]],
              ground_truth: Sequence[tuple[Hashable, Sequence[float], int]], iou: float = 0.5,
              classes: Sequence[int] | None = None) -> dict:
    """Frame-level mAP of action detection.

    Args:
        detections: ``(frame_key, box, class_id, score)``; ``frame_key`` names a key frame
            (AVA: ``(video_id, timestamp)``), ``box`` is x1y1x2y2.
        ground_truth: ``(frame_key, box, class_id)``.
        classes: the classes to score (AVA v2.2: the 60 evaluation classes); default: every
            class with ground truth.

    Returns:
        ``{"map": mean AP, "per_class": {class_id: AP}}``; classes without ground truth are
        left out of the mean.
    """
    gt_boxes: dict[tuple[int, Hashable], list] = defaultdict(list)
    for key, box, cls in ground_truth:
        gt_boxes[(int(cls), key)].append(box)
    positives: dict[int, int] = defaultdict(int)
    for (cls, _), boxes in gt_boxes.items():
        positives[cls] += len(boxes)
    wanted = sorted(positives) if classes is None else [int(c) for c in classes]
    by_class: dict[int, list] = defaultdict(list)
    for key, box, cls, score in detections:
        by_class[int(cls)].append((float(score), key, box))
    per_class = {}
    for cls in wanted:
        if positives.get(cls, 0) == 0:
            continue
        dets = sorted(by_class.get(cls, []), key=lambda d: -d[0])
        used: dict[Hashable, np.ndarray] = {}
        tp = []
        for _, key, box in dets:
            gts = gt_boxes.get((cls, key))
            if not gts:
                tp.append(False)
                continue
            overlaps = box_iou(torch.tensor([box]), torch.tensor(gts))[0].numpy()
            taken = used.setdefault(key, np.zeros(len(gts), dtype=bool))
            best = int(np.argmax(overlaps))
            if overlaps[best] >= iou and not taken[best]:
                taken[best] = True
                tp.append(True)
            else:
                tp.append(False)
        per_class[cls] = voc_ap(tp, positives[cls])
    values = [v for v in per_class.values() if not np.isnan(v)]
    return {"map": float(np.mean(values)) if values else float("nan"), "per_class": per_class}
