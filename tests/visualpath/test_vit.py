import functools

import pytest
import timm
import torch
from timm.models.vision_transformer import Block as TimmBlock

from visualpath import Attention, Block, vit_base, vit_large, vit_small, vit_tiny


def test_attention_equals_manual_softmax():
    torch.manual_seed(0)
    attn = Attention(32, heads=4)
    x = torch.randn(2, 10, 32)
    B, N, D = x.shape
    q, k, v = attn.qkv(x).reshape(B, N, 3, 4, 8).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-2, -1) / 8**0.5).softmax(-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(B, N, D))
    torch.testing.assert_close(attn(x), expected, atol=1e-6, rtol=1e-5)


def test_block_equals_timm_block_with_the_same_weights():
    torch.manual_seed(0)
    ours = Block(64, heads=4, norm_eps=1e-6)
    theirs = TimmBlock(64, num_heads=4, qkv_bias=True, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6))
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and not [k for k in missing if "ls" not in k]
    x = torch.randn(2, 7, 64)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-6, rtol=1e-5)


def test_stochastic_depth_in_training_draws_and_scales_as_timms_block():
    """Our own Mlp and DropPath (timm is not imported at start-up): in training, with the same
    random draws, a block with stochastic depth gives what timm's gives, samples dropped."""
    torch.manual_seed(0)
    ours = Block(64, heads=4, drop_path=0.4, norm_eps=1e-6).train()
    theirs = TimmBlock(64, num_heads=4, qkv_bias=True, drop_path=0.4,
                       norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6)).train()
    theirs.load_state_dict(ours.state_dict(), strict=False)
    x = torch.randn(32, 7, 64)
    torch.manual_seed(1)
    got = ours(x)
    torch.manual_seed(1)
    torch.testing.assert_close(got, theirs(x), atol=1e-6, rtol=1e-5)
    dropped = sum(torch.equal(got[i], x[i]) for i in range(len(x)))
    assert 0 < dropped < len(x)  # some samples lost both branches (probability 0.16), others did not


def test_commands_start_without_importing_timm_or_torchvision():
    """``import timm.layers`` or ``torchvision`` loads ``torch._dynamo``: about 2 s of every
    command's start on a 2-core machine. The recipes, ``analysis`` and ``recipes.export`` import
    them only where they are used (augmentation, a data loader, conversion to timm)."""
    import subprocess
    import sys

    code = ("import sys, recipes.bimm_ucf101, recipes.videomae_ucf101, recipes.export, recipes.resume, "
            "analysis.report, analysis.cli, analysis.neural, analysis.compare, analysis.features\n"
            "print(sorted(m for m in ('timm', 'torchvision', 'transformers', 'torch._dynamo') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize(
    "factory, timm_name",
    [(vit_tiny, "vit_tiny_patch16_224"), (vit_small, "vit_small_patch16_224"),
     (vit_base, "vit_base_patch16_224"), (vit_large, "vit_large_patch16_224")],
)
def test_size_factories_match_timm_block_parameter_counts(factory, timm_name):
    spec = factory()
    ours = sum(p.numel() for i in range(spec.depth) for p in spec.block(i).parameters())
    ref = timm.create_model(timm_name, pretrained=False)
    theirs = sum(p.numel() for p in ref.blocks.parameters())
    assert ours == theirs


def test_drop_path_rate_is_linear_over_depth():
    spec = vit_tiny(drop_path=0.1)
    assert isinstance(spec.block(0).drop_path, torch.nn.Identity)
    assert spec.block(11).drop_path.drop_prob == pytest.approx(0.1)


@pytest.mark.parametrize("bad", [dict(width=0), dict(depth=-1), dict(heads=5), dict(drop_path=1.0)])
def test_bad_spec_is_rejected(bad):
    with pytest.raises(ValueError):
        vit_tiny(**bad)
