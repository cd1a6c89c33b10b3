"""Transfer of pretrained encoders to dense and detection tasks (BIMM Tables 3 and 6).

- :mod:`visualpath.transfer.backbones` -- a ventral (image) encoder as a multi-scale
  backbone (ViTDet's simple feature pyramid) and a dorsal (video) encoder as a clip backbone
  whose key-frame token map is pooled inside person boxes.
- :mod:`visualpath.transfer.metrics` -- COCO box/mask AP (pycocotools' evaluation), mIoU,
  and AVA's frame-level mAP at IoU 0.5 (Pascal VOC style).
"""
