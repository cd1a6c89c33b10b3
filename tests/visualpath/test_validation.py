"""Bad input is rejected with a ValueError naming the expected form, before any compute."""

import pytest
import torch

from areas import MTMotion, V1Gabor, V2Contour, V4Color
from tests.conftest import TINY_DECODER, random_batch, tiny_pathway
from visualpath import DecoderSpec, Pathway, RandomMask, Stream, TubeMask, vit_tiny


@pytest.fixture(scope="module")
def model():
    return tiny_pathway().build()


@pytest.fixture
def no_compute(model):
    calls = []
    handles = [m.register_forward_pre_hook(lambda *a: calls.append(1)) for m in model.modules()
               if isinstance(m, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Conv3d)]
    yield calls
    for h in handles:
        h.remove()
    assert not calls, "compute ran before the input was rejected"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda b: b.update(video=b["video"][:, :, 0]), r"expected a video batch \(B, 3, T, H, W\)"),
        (lambda b: b.update(image=b["image"][None]), r"expected an image batch \(B, 3, H, W\)"),
        (lambda b: b.update(video=b["video"][:, :, :3]), r"T divisible by 2 .*, got 3 frames"),
        (lambda b: b.update(image=b["image"][..., :30]), r"H, W divisible by 16, got spatial size 32x30"),
        (lambda b: b.update(video=b["video"][..., :24, :]), r"divisible by 16"),
        (lambda b: b.update(video=b["video"][:, :1]), r"got 1 channels"),
        (lambda b: b.pop("video"), r"reads batch\['video'\]"),
        (lambda b: b.update(contour=torch.zeros(2, 3, 32, 32)), r"batch\['contour'\] must be \(B, \[T,\] H, W\)"),
        (lambda b: b.update(video=b["video"].to(torch.int32)), r"uint8 or floating point"),
    ],
)
def test_bad_batches_fail_before_compute(model, no_compute, change, message):
    batch = random_batch()
    change(batch)
    with pytest.raises(ValueError, match=message):
        model(batch)


def test_mask_ratio_that_leaves_nothing_fails_before_compute(no_compute):
    pathway = Pathway(encoder=vit_tiny(depth=2), streams=[
        Stream("ventral", "image", [V4Color(blocks=2, decoder=TINY_DECODER)], mask=RandomMask(0.75)),
        Stream("dorsal", "video", [MTMotion(blocks=2, decoder=TINY_DECODER)], mask=TubeMask(0.9)),
    ])
    with pytest.raises(ValueError, match="stream 'dorsal'.*at least one"):
        pathway.build()(random_batch())


def test_bad_features_input_is_rejected(model):
    with pytest.raises(ValueError, match=r"expected a video batch"):
        model.features(torch.zeros(1, 3, 32, 32), "dorsal")
    with pytest.raises(ValueError, match="unknown stream"):
        model.features(torch.zeros(1, 3, 32, 32), "lateral")


@pytest.mark.parametrize(
    "share, message",
    [
        (["V3"], r"unknown area 'V3' in share; expected names from \['V1', 'V2', 'V4', 'MT'\]"),
        (["V4"], r"appears only in stream 'ventral'"),
        ("most", r"share must be one of \('none', 'partial', 'all'\)"),
        ([("V1", "V2")], r"names two areas of one stream"),
    ],
)
def test_bad_share_declarations(share, message):
    with pytest.raises(ValueError, match=message):
        tiny_pathway(share=share)


def test_share_all_needs_identical_spans():
    v1 = V1Gabor(blocks=1, decoder=TINY_DECODER)
    with pytest.raises(ValueError, match="identical block spans"):
        Pathway(encoder=vit_tiny(depth=3), share="all", streams=[
            Stream("ventral", "image", [v1, V4Color(blocks=2)]),
            Stream("dorsal", "video", [V1Gabor(blocks=2), MTMotion(blocks=1)]),
        ])


@pytest.mark.parametrize("blocks", [-1, -2, 1.5, True])
def test_negative_or_non_integer_blocks(blocks):
    with pytest.raises(ValueError, match="blocks must be an integer >= 0"):
        V2Contour(blocks=blocks)


def test_a_zero_block_area_reads_out_where_the_one_before_it_does():
    stream = Stream("dorsal", "video", [V1Gabor(blocks=2), V2Contour(blocks=0), MTMotion(blocks=0)],
                    mask=TubeMask(0.75))
    model = Pathway(encoder=vit_tiny(depth=2, width=32, heads=2), streams=[stream]).build()
    video = torch.rand(2, 3, 4, 32, 32)
    out = model({"video": video}, generator=torch.Generator().manual_seed(0))
    assert set(out.streams["dorsal"].losses) == {"V1", "V2", "MT"}
    assert all(torch.isfinite(v) for v in out.streams["dorsal"].losses.values())
    with pytest.raises(ValueError, match="the first area .V1. needs at least one block"):
        Stream("dorsal", "video", [V1Gabor(blocks=0), MTMotion(blocks=2)])


def test_blocks_must_sum_to_the_encoder_depth():
    with pytest.raises(ValueError, match=r"V1:2 \+ V4:8 = 10\) must sum to the encoder depth 12"):
        Pathway(encoder=vit_tiny(), streams=[Stream("ventral", "image", [V1Gabor(blocks=2), V4Color(blocks=8)])])


@pytest.mark.parametrize("ratio", [0, 1, 1.2, -0.5])
def test_mask_ratio_outside_open_unit_interval(ratio):
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        RandomMask(ratio)


def test_other_bad_declarations():
    with pytest.raises(ValueError, match="modality must be one of"):
        Stream("ventral", "audio", [V4Color(blocks=12)])
    with pytest.raises(ValueError, match="TubeMask needs a video stream"):
        Stream("ventral", "image", [V4Color(blocks=12)], mask=TubeMask(0.9))
    with pytest.raises(ValueError, match="lists area 'V1' twice"):
        Stream("ventral", "image", [V1Gabor(blocks=6), V1Gabor(blocks=6)])
    with pytest.raises(ValueError, match="stream names must be unique"):
        s = Stream("ventral", "image", [V4Color(blocks=12)])
        Pathway(encoder=vit_tiny(), streams=[s, s])
    with pytest.raises(ValueError, match="divisible by heads"):
        DecoderSpec(width=100, heads=3)
    with pytest.raises(ValueError, match="name must be"):
        V4Color(name="V4.1")


def test_an_area_with_fields_but_without_attrs_frozen_says_what_to_add():
    from visualpath import Area
    from visualpath.errors import SpecError

    class UndecoratedStumble(Area):
        name: str = "V3"
        blocks: int = 1
        scale: float = 2.0

        def target_dim(self, layout):
            return 1

        def target(self, inp):
            return inp.pixels

    with pytest.raises(SpecError, match=r"declares fields \(name, blocks, scale\).*@attrs.frozen\(kw_only=True\)"):
        UndecoratedStumble(blocks=1, scale=3.0)
