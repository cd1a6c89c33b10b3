import pytest
import torch

from areas import MTMotion, V1Gabor, V4Color
from tests.conftest import TINY_DECODER, random_batch, tiny_pathway
from visualpath import Mask, Pathway, Stage, Stream, TubeMask, inherit_stream, vit_tiny


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return tiny_pathway().build()


def test_forward_returns_named_losses_predictions_and_masks(model):
    batch = random_batch()
    out = model(batch)
    assert set(out.streams) == {"ventral", "dorsal"}
    assert set(out.losses) == {"ventral.V1", "ventral.V2", "ventral.V4", "dorsal.V1", "dorsal.V2", "dorsal.MT"}
    dorsal = out.streams["dorsal"]
    assert dorsal.grid == (2, 2, 2) and dorsal.mask.hidden.shape == (2, 8)
    n_masked = dorsal.mask.num_masked
    assert dorsal.predictions["MT"].shape == (2, n_masked, 1536) == dorsal.targets["MT"].shape
    assert dorsal.predictions["V1"].shape == (2, n_masked, 768)
    assert out.streams["ventral"].predictions["V4"].shape == (2, out.streams["ventral"].mask.num_masked, 768)
    expected = sum(out.streams["ventral"].losses.values()) + sum(dorsal.losses.values())
    torch.testing.assert_close(out.loss, expected)


def test_stream_and_area_weights_enter_the_total_loss():
    v1 = V1Gabor(blocks=1, decoder=TINY_DECODER, weight=0.5)
    pathway = Pathway(
        encoder=vit_tiny(depth=2),
        streams=[Stream("ventral", "image", [v1, V4Color(blocks=1, decoder=TINY_DECODER)]),
                 Stream("dorsal", "video", [v1, MTMotion(blocks=1, decoder=TINY_DECODER)],
                        mask=TubeMask(0.5), weight=0.25)],
        share="partial",
    )
    out = pathway.build()(random_batch())
    v, d = out.streams["ventral"].losses, out.streams["dorsal"].losses
    expected = 0.5 * v["V1"] + v["V4"] + 0.25 * (0.5 * d["V1"] + d["MT"])
    torch.testing.assert_close(out.loss, expected)


def test_fixed_masks_are_used(model):
    batch = random_batch()
    hidden = torch.zeros(2, 4, dtype=torch.bool)
    hidden[:, [0, 3]] = True
    mask = Mask.from_hidden(hidden)
    out = model(batch, masks={"ventral": mask})
    assert torch.equal(out.streams["ventral"].mask.hidden, hidden)
    targets = model.targets(batch, "ventral")
    torch.testing.assert_close(out.streams["ventral"].targets["V4"], targets["V4"][:, [0, 3]])


def test_image_stream_takes_a_frame_of_the_clip_when_no_image_is_given(model):
    batch = random_batch()
    del batch["image"]
    hidden = torch.zeros(2, 4, dtype=torch.bool)
    hidden[:, :2] = True
    out = model(batch, masks={"ventral": Mask.from_hidden(hidden)}, generator=torch.Generator().manual_seed(3))
    target = out.streams["ventral"].targets["V4"]  # (2, 2, 768)
    for b in range(2):
        frames = [model.targets({"image": batch["video"][:, :, t]}, "ventral")["V4"][b, :2] for t in range(4)]
        assert any(torch.allclose(target[b], f) for f in frames)


def test_contour_source_is_reported(model):
    batch = random_batch()
    assert model(batch).streams["dorsal"].sources["V2"] == "sobel"
    batch["contour"] = (torch.rand(2, 4, 32, 32) > 0.8).to(torch.uint8) * 255
    batch["image_contour"] = (torch.rand(2, 32, 32) > 0.8).to(torch.uint8)
    out = model(batch)
    assert out.streams["dorsal"].sources["V2"] == "cache" == out.streams["ventral"].sources["V2"]
    full = model.targets(batch, "dorsal")["V2"]
    assert set(full.unique().tolist()) == {0.0, 1.0}
    assert full.sum() == (batch["contour"] > 0).sum()


def test_features_per_area(model):
    video = random_batch()["video"]
    feats = model.features(video, stream="dorsal")
    assert list(feats) == ["V1", "V2", "MT"]
    assert all(f.shape == (2, 8, 192) for f in feats.values())
    pooled = model.features(video, stream="dorsal", pooled=True)
    torch.testing.assert_close(pooled["MT"], feats["MT"].mean(1))
    mask = TubeMask(0.5)(2, (2, 2, 2))
    assert model.features(video, "dorsal", mask=mask)["V1"].shape == (2, 4, 192)


def test_plain_stage_has_no_decoder_and_no_loss():
    pathway = Pathway(
        encoder=vit_tiny(depth=3),
        streams=[Stream("ventral", "image", [V1Gabor(blocks=1, decoder=TINY_DECODER), Stage(name="rest", blocks=2)])],
    )
    model = pathway.build()
    assert list(model.streams["ventral"].decoders) == ["V1"]
    out = model(random_batch())
    assert list(out.losses) == ["ventral.V1"]
    V4 = V4Color(blocks=2, weight=0.0)
    assert not V4.has_readout


def test_ventral_only_checkpoint_loads_into_the_joint_pathway():
    torch.manual_seed(0)
    joint = tiny_pathway(share="partial")
    ventral = Pathway(encoder=joint.encoder, streams=[joint.streams[0]]).build()
    model = joint.build()
    result = model.load_state_dict(ventral.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert all(k.startswith("streams.dorsal.") for k in result.missing_keys)
    x = random_batch()["image"]
    torch.testing.assert_close(model.features(x, "ventral")["V4"], ventral.features(x, "ventral")["V4"])


def test_dorsal_initialised_from_ventral_copies_blocks_and_inflates_the_embedding():
    torch.manual_seed(0)
    model = tiny_pathway(share="partial").build()
    report = inherit_stream(model, dst="dorsal", src="ventral")
    assert report["shared"] == ["block 0", "block 1"]
    assert report["copied"][:2] == ["block 2", "block 3"]
    assert report["inflated"] == ["embed.proj.weight"]
    for b_dst, b_src in zip(model.blocks("dorsal")[2:], model.blocks("ventral")[2:]):
        assert b_dst is not b_src
        for p, q in zip(b_dst.parameters(), b_src.parameters()):
            assert torch.equal(p, q) and p is not q
    # A static clip embeds exactly as its frame does.
    frame = torch.rand(1, 3, 32, 32)
    clip = frame[:, :, None].repeat(1, 1, 2, 1, 1)
    ventral_tokens = model.streams["ventral"].embed(frame)
    dorsal_tokens = model.streams["dorsal"].embed(clip)
    torch.testing.assert_close(ventral_tokens, dorsal_tokens, atol=1e-6, rtol=1e-5)


def test_temporal_contrast_inflation_keeps_still_clips_and_the_streams_own_frame_differences():
    torch.manual_seed(0)
    model = tiny_pathway(share="partial").build()
    fresh = model.streams["dorsal"].embed.proj.weight.detach().clone()  # (D, C, 2, p, p)
    report = inherit_stream(model, dst="dorsal", src="ventral", temporal_contrast=3.0)
    assert report["inflated"] == ["embed.proj.weight (+3 x its own temporal differences)"]
    w2d = model.streams["ventral"].embed.proj.weight.detach()
    # Hand-computed: frame t's kernel is w2d / 2 + 3 * (fresh[t] - mean over t of fresh).
    expected = w2d[:, :, None] / 2 + 3.0 * (fresh - fresh.mean(2, keepdim=True))
    torch.testing.assert_close(model.streams["dorsal"].embed.proj.weight.detach(), expected)
    # A still clip embeds exactly as its frame does ...
    frame = torch.rand(1, 3, 32, 32)
    still = frame[:, :, None].repeat(1, 1, 2, 1, 1)
    torch.testing.assert_close(model.streams["ventral"].embed(frame), model.streams["dorsal"].embed(still),
                               atol=1e-5, rtol=1e-5)
    # ... and a moving one differs from the plain inflation by the fresh kernel's response to
    # the frame difference, which the plain inflation cannot see.
    moving = torch.stack([frame, frame.roll(2, dims=-1)], dim=2)
    plain = tiny_pathway(share="partial").build()
    inherit_stream(plain, dst="dorsal", src="ventral", source=model)
    diff = (moving[:, :, 0] - moving[:, :, 1]) / 2
    response = torch.nn.functional.conv2d(diff, 3.0 * (fresh[:, :, 0] - fresh[:, :, 1]), stride=fresh.shape[-1])
    got = model.streams["dorsal"].embed(moving) - plain.streams["dorsal"].embed(moving)
    torch.testing.assert_close(got, response.flatten(2).transpose(1, 2), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="temporal_contrast"):
        inherit_stream(model, dst="dorsal", src="ventral", temporal_contrast=-1.0)


def test_inherit_from_a_separate_ventral_model():
    torch.manual_seed(0)
    joint = tiny_pathway(share="none")
    ventral = Pathway(encoder=joint.encoder, streams=[joint.streams[0]]).build()
    model = joint.build()
    report = inherit_stream(model, "dorsal", "ventral", source=ventral)
    assert report["copied"] == [f"block {i}" for i in range(4)] + ["embed.proj.bias"]
    assert report["inflated"] == ["embed.proj.weight"] and not report["shared"]
    assert torch.equal(model.blocks("dorsal")[0].attn.qkv.weight, ventral.blocks("ventral")[0].attn.qkv.weight)
