"""Backbone adapters: shapes and strides, a torchvision Mask R-CNN step, the AVA RoI head."""

import torch

from tests.conftest import tiny_pathway
from visualpath.classifier import Encoder
from visualpath.transfer.backbones import ClipBackbone, RoIActionHead, SimpleFeaturePyramid


def _model():
    torch.manual_seed(0)
    return tiny_pathway().build()


def test_the_feature_pyramid_has_strides_4_to_64():
    pyramid = SimpleFeaturePyramid(Encoder.from_pathway(_model(), "ventral"), out_channels=32)
    maps = pyramid(torch.randn(2, 3, 64, 96))
    assert list(maps) == ["0", "1", "2", "3", "pool"]
    assert [tuple(m.shape[-2:]) for m in maps.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    assert all(m.shape[1] == 32 for m in maps.values())


def test_a_mask_rcnn_step_around_the_ventral_encoder():
    from torchvision.models.detection import MaskRCNN

    pyramid = SimpleFeaturePyramid(Encoder.from_pathway(_model(), "ventral"), out_channels=32)
    detector = MaskRCNN(pyramid, num_classes=3, min_size=64, max_size=64, image_mean=[0.485, 0.456, 0.406],
                        image_std=[0.229, 0.224, 0.225])
    images = [torch.rand(3, 64, 64)]
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 20:50] = 1
    targets = [{"boxes": torch.tensor([[20.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1]), "masks": masks}]
    losses = detector.train()(images, targets)
    total = sum(losses.values())
    total.backward()
    assert torch.isfinite(total) and pyramid.encoder.blocks[0].attn.qkv.weight.grad is not None
    detector.eval()
    with torch.no_grad():
        out = detector(images)
    assert set(out[0]) >= {"boxes", "scores", "labels", "masks"}


def test_the_ava_head_pools_person_boxes_on_the_key_frame_map():
    backbone = ClipBackbone(Encoder.from_pathway(_model(), "dorsal"))
    head = RoIActionHead(backbone, num_classes=60)
    clip = torch.randn(2, 3, 4, 64, 64)
    assert backbone(clip).shape == (2, 192, 4, 4)
    logits = head(clip, [torch.tensor([[0.0, 0.0, 32.0, 48.0]]), torch.tensor([[8.0, 8.0, 60.0, 60.0],
                                                                                [0.0, 0.0, 16.0, 16.0]])])
    assert logits.shape == (3, 60)
