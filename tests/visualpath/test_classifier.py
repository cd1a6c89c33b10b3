import torch
from torch.utils.flop_counter import FlopCounterMode

from tests.conftest import random_batch, tiny_pathway
from visualpath import vit_base, vit_large
from visualpath.classifier import Classifier, Encoder
from visualpath.tokens import Layout


def _cost(spec_factory):
    with torch.device("meta"):
        model = Classifier(Encoder(spec_factory(), Layout("video", tube=2), "flat"), 400)
        params = sum(p.numel() for p in model.parameters())
        x = torch.empty(1, 3, 16, 224, 224)
        with FlopCounterMode(display=False) as counter:
            model(x, normalized=True)
    return params, counter.get_total_flops()


def test_vit_b_video_classifier_matches_table_4():
    params, flops = _cost(vit_base)
    assert abs(params / 1e6 - 86.5) < 0.5  # "87M"
    assert abs(flops / 2 / 1e9 - 180) < 3  # "180" GFLOPs = multiply-adds (fvcore's count)


def test_vit_l_video_classifier_matches_table_4():
    params, flops = _cost(vit_large)
    assert abs(params / 1e6 - 304.3) < 1  # "305M"
    assert abs(flops / 2 / 1e9 - 597) < 6  # "597"


def test_encoder_from_pathway_reproduces_the_stream_features():
    model = tiny_pathway().build()
    video = random_batch()["video"]
    encoder = Encoder.from_pathway(model, "dorsal")
    torch.testing.assert_close(encoder(video), model.features(video, "dorsal")["MT"])
    clf = Classifier(encoder, 7, pool="cls")
    assert clf(video).shape == (2, 7)
