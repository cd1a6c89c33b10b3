import math
import re

import pytest
import torch
from torch.utils.data import Dataset

from tests.conftest import TINY_DECODER
from areas import V4Color
from visualpath import Pathway, RandomMask, Stream, vit_tiny
from visualpath.classifier import Classifier, Encoder
from visualpath.engine import (
    EpochSampler,
    NonFiniteLoss,
    OptimSpec,
    Runtime,
    RunLog,
    build_optimizer,
    fit,
    load_checkpoint,
    lr_at,
    make_loader,
    param_groups,
    save_checkpoint,
    TrainState,
)

CPU = Runtime(device=torch.device("cpu"))


class Images(Dataset):
    def __init__(self, n=24):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "index": torch.tensor(i), "skipped": torch.tensor(0)}


def _model():
    torch.manual_seed(0)
    return Pathway(encoder=vit_tiny(depth=2, width=32, heads=2),
                   streams=[Stream("ventral", "image", [V4Color(blocks=2, decoder=TINY_DECODER)],
                                   mask=RandomMask(0.5))]).build()


def _step(model, batch):
    out = model(batch)
    return out.loss, out.losses


SPEC = OptimSpec(epochs=3, batch_size=4, base_lr=1e-3, warmup_epochs=1, accum_steps=2, clip_grad=1.0)


def test_param_groups_exclude_norms_biases_and_tokens_from_decay():
    model = _model()
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            name = names[id(p)]
            no_decay = p.ndim < 2 or "mask_token" in name
            assert g["weight_decay"] == (0.0 if no_decay else 0.05), name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_layer_decay_scales_follow_depth():
    enc = Encoder.from_pathway(_model(), "ventral")
    clf = Classifier(enc, 5)
    groups = param_groups(clf, 0.05, layer_decay=0.5, num_layers=2)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale[id(clf.head.weight)] == 1.0
    assert scale[id(enc.blocks[1].attn.qkv.weight)] == 0.5
    assert scale[id(enc.blocks[0].attn.qkv.weight)] == 0.25
    assert scale[id(enc.embed.proj.weight)] == 0.125


def test_linear_scaling_rule_and_schedule():
    spec = OptimSpec(epochs=10, batch_size=32, base_lr=1e-3, accum_steps=2)
    assert spec.peak_lr(world=4) == pytest.approx(1e-3 * 256 / 256)
    lrs = [lr_at(s, 100, 10, 1.0, 0.0) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 1e-3
    assert lrs[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))


def test_epoch_sampler_is_a_function_of_seed_and_epoch_and_splits_ranks():
    a, b = EpochSampler(10, seed=1), EpochSampler(10, seed=1)
    a.set_epoch(3), b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    full = list(a)
    a.set_epoch(3, skip=4)
    assert list(a) == full[4:] and len(a) == 6 and a.epoch_length() == 10
    r0, r1 = EpochSampler(9, seed=0, rank=0, world=2), EpochSampler(9, seed=0, rank=1, world=2)
    assert len(r0) == len(r1) == 5 and set(r0) | set(r1) == set(range(9))


def test_checkpoints_load_with_weights_only(tmp_path):
    model = _model()
    opt = build_optimizer(model, SPEC, CPU)
    model(Images()[0] | {"image": Images()[0]["image"][None]}).loss.backward()
    opt.step()
    save_checkpoint(tmp_path, model, opt, TrainState(epoch=1, step=7, skipped=2))
    fresh = _model()
    opt2 = build_optimizer(fresh, SPEC, CPU)
    state = load_checkpoint(tmp_path, fresh, opt2)  # torch.load(weights_only=True) inside
    assert (state.epoch, state.step, state.skipped) == (1, 7, 2)
    for p, q in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(p, q)
    assert not list(tmp_path.glob(".*"))  # atomic writes leave no temporaries


def _train(tmp_path, stop_after=None, resume=False, spec=SPEC):
    model = _model()
    torch.manual_seed(123)
    run = RunLog(tmp_path, CPU)
    opt = build_optimizer(model, spec, CPU)
    loader = make_loader(Images(), spec.batch_size, CPU, shuffle=True, seed=5)
    state = fit("stage", model, _step, loader, opt, spec, CPU, run, resume=resume, stop_after=stop_after,
                log_every=1, checkpoint_every=2)
    return model, state


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    full, state = _train(tmp_path / "full")
    assert state.step == 3 * 3  # 24 images / (4 x 2 accumulation) per epoch, 3 epochs
    _train(tmp_path / "killed", stop_after=5)  # killed after step 5 (checkpoint at step 4)
    resumed, state = _train(tmp_path / "killed", resume=True)
    assert state.step == 9
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    lines = (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 9 and '"ventral.V4"' in lines[0] and '"clips_per_s"' in lines[0]


def test_time_based_checkpoints_land_mid_epoch_and_resume_to_the_same_weights(tmp_path, monkeypatch):
    """checkpoint_minutes=1 on a clock that advances 30 s per reading: checkpoints at steps 2
    and 5 by the clock, besides the epoch ends (3 steps each), and a run killed after step 5
    resumes from that mid-epoch checkpoint to exactly the uninterrupted weights."""
    import itertools

    from visualpath import engine
    from visualpath.rundir import stage_progress

    def train(root, stop_after=None, resume=False):
        model = _model()
        torch.manual_seed(123)
        opt = build_optimizer(model, SPEC, CPU)
        loader = make_loader(Images(), SPEC.batch_size, CPU, shuffle=True, seed=5)
        state = fit("stage", model, _step, loader, opt, SPEC, CPU, RunLog(root, CPU), resume=resume,
                    stop_after=stop_after, log_every=1, checkpoint_minutes=1)
        return model, state

    full, _ = _train(tmp_path / "full")
    ticks = itertools.count()
    monkeypatch.setattr(engine, "_now", lambda: next(ticks) * 30.0)
    train(tmp_path / "killed", stop_after=5)
    assert stage_progress(tmp_path / "killed" / "stage")["step"] == 5  # mid-epoch 2, by the clock alone
    resumed, state = train(tmp_path / "killed", resume=True)
    assert state.step == 9
    for p, q in zip(full.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_non_finite_loss_names_the_step_and_the_area(tmp_path):
    def bad_step(model, batch):
        loss, parts = _step(model, batch)
        return loss * float("nan"), {k: v * float("nan") for k, v in parts.items()}

    model = _model()
    run = RunLog(tmp_path, CPU)
    loader = make_loader(Images(), 4, CPU, shuffle=True, seed=0)
    with pytest.raises(NonFiniteLoss, match="non-finite loss at step 1 from ventral.V4"):
        fit("s", model, bad_step, loader, build_optimizer(model, SPEC, CPU), SPEC, CPU, run, log_every=1)


def test_metrics_also_go_to_tensorboard_when_asked(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunLog(tmp_path, CPU, tensorboard=True)
    for step in (10, 20):
        run.metrics("joint", epoch=0, step=step, lr=1e-3, loss=2.0 / step, **{"dorsal.MT": 0.5})
    run.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) == {"joint/lr", "joint/loss", "joint/dorsal.MT"}
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("joint/loss")] == [(10, 0.2), (20, 0.1)]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == 2  # the JSON lines are still written


def test_linear_and_step_schedules():
    from visualpath.engine import lr_at

    # ADE20K: linear warm-up over 1,500 iterations, then linear decay to the floor
    assert lr_at(0, 160_000, 1500, 4e-4, 0.0, "linear") == pytest.approx(4e-4 / 1500)
    assert lr_at(1500, 160_000, 1500, 4e-4, 0.0, "linear") == pytest.approx(4e-4)
    assert lr_at(80_750, 160_000, 1500, 4e-4, 0.0, "linear") == pytest.approx(2e-4)
    # COCO: x0.1 at epochs 27 and 33 (here 10 steps per epoch)
    assert [lr_at(s, 360, 0, 1e-4, 0.0, "step", (270, 330)) for s in (0, 269, 270, 330)] == \
        pytest.approx([1e-4, 1e-4, 1e-5, 1e-6])


def _fit_to(console, tmp_path, stop_after=None, resume=False):
    model = _model()
    torch.manual_seed(123)
    opt = build_optimizer(model, SPEC, CPU)
    loader = make_loader(Images(), SPEC.batch_size, CPU, shuffle=True, seed=5)
    return fit("joint", model, _step, loader, opt, SPEC, CPU, RunLog(tmp_path, CPU), resume=resume,
               stop_after=stop_after, log_every=1, checkpoint_every=2, console=console)


def test_resuming_under_another_thread_count_warns_and_the_same_count_does_not(tmp_path, monkeypatch):
    import io

    from rich.console import Console

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        _fit_to(Console(file=io.StringIO()), tmp_path, stop_after=5)
        out = io.StringIO()
        torch.set_num_threads(2)
        _fit_to(Console(file=out, width=300), tmp_path, resume=True, stop_after=7)
        assert "was trained with 1 CPU threads and resumes with 2" in out.getvalue()
        assert "OMP_NUM_THREADS=1" in out.getvalue()
        out = io.StringIO()
        _fit_to(Console(file=out, width=300), tmp_path, resume=True)  # its last checkpoint recorded 2
        assert "CPU threads" not in out.getvalue()
    finally:
        torch.set_num_threads(threads)


def test_in_a_terminal_of_80_columns_the_bar_count_and_eta_stay_on_one_line(tmp_path):
    import io

    from rich.console import Console

    out = io.StringIO()
    _fit_to(Console(file=out, width=80, force_terminal=True, color_system=None), tmp_path)
    final = out.getvalue().split("\x1b[2K")[-1]  # the last frame the live display drew
    bar_line = next(line for line in final.splitlines() if "9/9" in line)
    assert bar_line.startswith("joint") and "0:00:00" in bar_line and len(bar_line) <= 80
    assert "loss=" in final and "ventral.V4=" in final  # the losses, on their own line


def test_in_a_log_file_every_record_is_a_plain_line_and_a_finished_stage_says_so(tmp_path):
    import io

    from rich.console import Console

    out = io.StringIO()
    _fit_to(Console(file=out, width=80), tmp_path)  # not a terminal: a batch job's log
    lines = [line for line in out.getvalue().splitlines() if line.startswith("joint step")]
    assert len(lines) == 9 and "joint step 9/9 epoch 3/3 loss=" in lines[-1] and "ventral.V4=" in lines[-1]
    assert "eta 0:00:00" in lines[-1] and "\x1b" not in out.getvalue()
    again = io.StringIO()
    _fit_to(Console(file=again, width=80), tmp_path, resume=True)
    assert "joint: already complete (step 9 of 9)" in again.getvalue()


def test_a_resumed_run_keeps_one_metrics_record_per_step(tmp_path):
    import io
    import json as _json

    from rich.console import Console

    _fit_to(Console(file=io.StringIO()), tmp_path, stop_after=5)  # logged step 5, checkpoint at step 4
    out = io.StringIO()
    _fit_to(Console(file=out), tmp_path, resume=True)
    steps = [_json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))
    assert re.search(r"joint: resumed at step 4/9 \(epoch 2/\d+\)", out.getvalue()), out.getvalue()


def test_run_files_are_written_with_the_umask_like_any_other_file(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        run = RunLog(tmp_path, CPU)
        run.write_config({"a": 1})
        _train(tmp_path / "ckpt", stop_after=2)
    finally:
        os.umask(old)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o644


def test_an_area_whose_loss_is_on_another_scale_is_named_once():
    from visualpath.engine import loss_scale_notes

    paper = {"loss": 2.6, "ventral.V1": 0.6, "ventral.V2": 0.06, "ventral.V4": 0.47, "dorsal.MT": 0.93}
    assert loss_scale_notes(paper) == []  # V2's sparse contours sit 10x below: within the range
    tiny = {**paper, "ventral.V3": 0.001}
    notes = loss_scale_notes(tiny)
    assert len(notes) == 1 and notes[0].startswith("ventral.V3's loss (0.001) is 535x below")
    assert "normalize_tokens" in notes[0] and "pathway.V3.weight" in notes[0]
    huge = {**paper, "dorsal.V9": 900.0}
    assert [n.split("'")[0] for n in loss_scale_notes(huge)] == ["dorsal.V9"] and "above" in loss_scale_notes(huge)[0]
