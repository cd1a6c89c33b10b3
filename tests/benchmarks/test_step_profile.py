import pytest
import torch

from areas.bimm import ModelConfig, paper_pathway
from benchmarks.step import with_keep
from benchmarks.step_profile import Phases, phased_step, write_docs
from recipes.config import demo_model, tiny_model
from visualpath.engine import OptimSpec, Runtime, build_optimizer


def _model_and_optimizer(decoder_keep=1.0):
    torch.manual_seed(0)
    model = with_keep(paper_pathway(tiny_model(demo_model(ModelConfig()))), decoder_keep).build().train()
    runtime = Runtime(device=torch.device("cpu"), rank=0, world=1, local_rank=0)
    return model, build_optimizer(model, OptimSpec(epochs=1, batch_size=2, base_lr=1e-3), runtime)


@pytest.mark.parametrize("decoder_keep", [1.0, 0.5])
def test_the_phased_step_is_one_training_step(decoder_keep):
    """Cut at each stage output, the backward gives exactly one backward's gradients, and
    the update the same weights as a plain step on the same masks."""
    clip = torch.randint(0, 256, (2, 3, 4, 32, 32), dtype=torch.uint8)
    plain, plain_opt = _model_and_optimizer(decoder_keep)
    phased, phased_opt = _model_and_optimizer(decoder_keep)
    loss = plain({"video": clip}, generator=torch.Generator().manual_seed(1)).loss
    loss.backward()
    grads = {k: p.grad.clone() for k, p in plain.named_parameters() if p.grad is not None}
    plain_opt.step()
    phases = Phases()
    phased_loss = phased_step(phased, {"video": clip}, phased_opt, phases, torch.Generator().manual_seed(1))
    torch.testing.assert_close(phased_loss, loss)
    assert phased_opt.state  # the update ran
    for name, p in phased.named_parameters():
        torch.testing.assert_close(p, dict(plain.named_parameters())[name], atol=1e-6, rtol=1e-5)
    timed = phases.take()
    assert {"dorsal target MT", "ventral target V4", "dorsal encoder backward", "dorsal decoders backward",
            "optimizer (AdamW)"} <= set(timed)
    assert len(grads) == sum(1 for _ in plain.parameters())  # every parameter of the graph learns


def test_write_docs_replaces_only_between_its_markers(tmp_path):
    doc = tmp_path / "benchmarks.md"
    doc.write_text("head\n<!-- x -->\nold\n<!-- /x -->\ntail\n")
    write_docs("x", "new table", doc)
    assert doc.read_text() == "head\n<!-- x -->\nnew table\n<!-- /x -->\ntail\n"
    with pytest.raises(SystemExit, match="no <!-- y -->"):
        write_docs("y", "t", doc)
