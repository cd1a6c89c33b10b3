import pytest
import torch

from areas import MTMotion
from visualpath import Stream, TargetInput
from visualpath.tokens import Layout


def _target(area, clip):
    return area.target(TargetInput(pixels=clip, layout=Layout("video", tube=2), batch={}))


def test_raw_motion_is_the_absolute_difference_of_adjacent_frames():
    clip = torch.zeros(1, 3, 4, 32, 32)
    for t, value in enumerate([0.1, 0.4, 0.2, 0.9]):
        clip[:, :, t] = value
    target = _target(MTMotion(normalize=False), clip).view(1, 2, 4, 2, 16, 16, 3)
    # tube 0 holds |f1-f0| = 0.3 and |f2-f1| = 0.2; tube 1 holds |f3-f2| = 0.7, repeated
    for tube, expected in [(0, (0.3, 0.2)), (1, (0.7, 0.7))]:
        for pt in range(2):
            torch.testing.assert_close(target[0, tube, :, pt], torch.full((4, 16, 16, 3), expected[pt]))


def test_motion_marks_only_where_a_square_moved():
    clip = torch.zeros(1, 3, 4, 64, 64)
    for t in range(4):
        clip[:, :, t, 8:24, 8 + 8 * t:24 + 8 * t] = 1.0  # moves right by 8 px per frame
    target = _target(MTMotion(normalize=False), clip)  # (1, 2*4*4, 1536)
    energy = target.view(1, 2, 4, 4, -1).abs().sum(-1)[0, 0]  # first tube, (4, 4) patches
    assert energy[0, :3].gt(0).all()  # the square's row of patches moved
    assert energy[2:].eq(0).all()  # nothing moved below it


def test_normalised_target_shape_and_finiteness():
    clip = torch.rand(2, 3, 4, 32, 32)
    target = _target(MTMotion(), clip)
    assert target.shape == (2, 8, 1536) == (2, 8, MTMotion().target_dim(Layout("video", tube=2)))
    torch.testing.assert_close(target.mean(-1), torch.zeros(2, 8), atol=1e-5, rtol=0)
    assert torch.isfinite(_target(MTMotion(), torch.full((1, 3, 4, 32, 32), 0.5))).all()


def test_motion_needs_a_video_stream():
    with pytest.raises(ValueError, match="needs modality video"):
        Stream("ventral", "image", [MTMotion(blocks=12)])


def test_the_signed_target_tells_opposite_directions_apart():
    """A bright bar moving right or left: |f(t+1) - f(t)| is the mirror image, the signed
    difference changes sign where the bar arrives and leaves."""
    import torch

    from areas import MTMotion
    from visualpath import Layout, TargetInput

    def bar(step):
        clip = torch.zeros(1, 3, 4, 16, 16)
        for t in range(4):
            clip[:, :, t, :, 7 + step * t:9 + step * t] = 1.0  # mirror images of each other about the centre
        return clip

    layout = Layout("video", 16, 2)

    def target(area, clip):
        return area.target(TargetInput(clip, layout))

    right, left = bar(1), bar(-1)
    unsigned, signed = MTMotion(normalize=False), MTMotion(normalize=False, signed=True)
    assert torch.allclose(target(unsigned, right).abs().sum(), target(unsigned, left).abs().sum())
    r, l = target(signed, right), target(signed, left)
    assert not torch.allclose(r, l) and r.min() < 0 < r.max()
    mirrored = target(signed, left.flip(-1))  # the left-moving bar, mirrored, moves right
    assert torch.allclose(mirrored, r)
    assert torch.allclose(target(unsigned, right), target(signed, right).abs())
