"""BIMM on UCF101, the paper's whole pipeline (Algorithm 1, appendix A, Tables 8 and 9).

    python -m recipes.bimm_ucf101                       # demo scale, built-in synthetic set
    python -m recipes.bimm_ucf101 data.root=/data/ucf   # the paper's settings on UCF101
    torchrun --nproc_per_node=8 -m recipes.bimm_ucf101 data.root=/data/ucf

Stages, each resumable and runnable alone (``stages=joint,finetune``), chained through the
checkpoints in the run directory:

1. ``ventral``: MAE-style pretraining of the ventral stream (V1 -> V2 -> V4) on an ImageNet
   folder (``data.image_root``) or, without one, on frames of the video set (the paper's
   "UCF101 init", Table 7a).
2. ``joint``: the dorsal stream (V1 -> V2 -> MT) initialised from the ventral one (blocks
   copied, patch embedding inflated), then both streams trained together with V1 and V2
   shared, ``L = L_V + lambda * L_D``; the image of each pair is a frame of its clip.
3. ``finetune``: the dorsal encoder + mean pooling + fc_norm + linear head, with mixup,
   cutmix, label smoothing, drop path, layer-wise lr decay and repeated augmentation.
4. ``test``: 5 clips x 3 crops per video, softmax scores averaged.

Learning rates follow the linear scaling rule ``base_lr * total_batch / 256`` of MAE and
VideoMAE; the paper's appendix writes ``/16`` for the ventral stage, which with its batch of
128 would be a 16x larger rate than MAE's recipe, so we keep the common rule.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from areas import MTMotion, V1Gabor, V2Contour, V4Color
from visualpath import DecoderSpec, Pathway, RandomMask, Stream, TubeMask, inherit_stream
from visualpath import vit_base, vit_large, vit_small, vit_tiny
from visualpath.classifier import Classifier, Encoder
from visualpath.config import parse_cli, to_dict
from visualpath.data import ContourCache, TrainTransform, VideoDataset, ensure_synthetic, read_ucf101
from visualpath.data.datasets import ImageFolder
from visualpath.data.synthetic import SyntheticSpec
from visualpath.engine import (
    OptimSpec,
    RunLog,
    build_optimizer,
    evaluate,
    fit,
    load_weights,
    make_loader,
    setup,
    teardown,
)

SIZES = {"tiny": vit_tiny, "small": vit_small, "base": vit_base, "large": vit_large}
STAGES = ("ventral", "joint", "finetune", "test")
TARGETS = ("V1", "V1-V2", "V1-V2-V4&MT")


def _one_of(options):
    def check(instance, attribute, value):
        if value not in options:
            raise ValueError(f"{attribute.name} must be one of {list(options)}, got {value!r}")
    return check


def _stages(instance, attribute, value):
    bad = [s for s in value if s not in STAGES]
    if bad or not value:
        raise ValueError(f"stages must be a non-empty list from {list(STAGES)}, got {list(value)}")


@attrs.frozen(kw_only=True)
class ModelConfig:
    """The pathway (section 3.1; ablations in Table 7c-f)."""

    size: str = attrs.field(default="base", validator=_one_of(SIZES))
    width: int | None = None  # override the size's width (demo models)
    heads: int | None = None
    split: tuple[int, int, int] = (2, 2, 8)  # blocks of V1, V2, V4/MT: decoders at 2, 4, 12
    decoder_width: int = 384
    decoder_heads: int = 6
    decoder_depths: tuple[int, int, int] = (1, 2, 4)
    image_mask: float = 0.75
    video_mask: float = 0.9
    share: str = attrs.field(default="partial", validator=_one_of(("none", "partial", "all")))
    targets: str = attrs.field(default="V1-V2-V4&MT", validator=_one_of(TARGETS))
    dorsal_weight: float = 1.0  # lambda of Eq. 4
    dorsal_init: str = attrs.field(default="ventral", validator=_one_of(("ventral", "none")))


@attrs.frozen(kw_only=True)
class DataConfig:
    """Where clips come from; ``root=None`` uses the built-in synthetic set."""

    root: str | None = None
    split: int = attrs.field(default=1, validator=_one_of((1, 2, 3)))
    image_root: str | None = None  # ImageNet-layout folder for the ventral stage
    contours: str | None = None  # SAM contour cache folder (recipes.precompute_contours)
    frames: int = 16
    stride: int = 4
    size: int = 224
    workers: int = 8
    synthetic_groups: int = 8
    synthetic_clips: int = 4
    synthetic_size: int = 128


@attrs.frozen(kw_only=True)
class PretrainConfig:
    optim: OptimSpec
    flip: bool = True


@attrs.frozen(kw_only=True)
class FinetuneConfig:
    optim: OptimSpec
    drop_path: float = 0.2
    mixup: float = 0.8
    cutmix: float = 1.0
    smoothing: float = 0.1
    repeated: int = 2  # repeated augmentation: views per decoded video
    flip: bool = True
    randaugment: str | None = "rand-m7-n4-mstd0.5-inc1"
    erase: float = 0.25  # random-erasing probability
    crop_area: tuple[float, float] = (0.08, 1.0)  # random-resized-crop area range (VideoMAE)
    pool: str = attrs.field(default="mean", validator=_one_of(("mean", "cls")))


@attrs.frozen(kw_only=True)
class TestConfig:
    clips: int = 5
    crops: int = 3
    batch_size: int = 8


@attrs.frozen(kw_only=True)
class Config:
    run_dir: str = "runs/bimm_ucf101"
    seed: int = 0
    device: str = "auto"
    stages: tuple[str, ...] = attrs.field(default=STAGES, validator=_stages)
    resume: bool = True
    log_every: int = 10
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    ventral: PretrainConfig = PretrainConfig(  # Table 8, IN-1K column
        optim=OptimSpec(epochs=800, batch_size=128, base_lr=2e-4, warmup_epochs=40), flip=False)
    joint: PretrainConfig = PretrainConfig(  # Table 8, UCF column; 1600 epochs (appendix A.2)
        optim=OptimSpec(epochs=1600, batch_size=64, base_lr=3e-4, warmup_epochs=40), flip=True)
    finetune: FinetuneConfig = FinetuneConfig(  # Table 9, UCF column
        optim=OptimSpec(epochs=100, batch_size=32, base_lr=5e-4, warmup_epochs=5, betas=(0.9, 0.999),
                        layer_decay=0.7))
    test: TestConfig = TestConfig()


def config() -> Config:
    """The paper's UCF101 settings (needs ``data.root``)."""
    return Config()


def _demo_optim(epochs, batch, lr, warmup, **kw):
    return OptimSpec(epochs=epochs, batch_size=batch, base_lr=lr, warmup_epochs=warmup, **kw)


def demo() -> Config:
    """The whole pipeline on the built-in synthetic set, sized for a 2-core CPU (minutes)."""
    return attrs.evolve(
        Config(),
        run_dir="runs/bimm_ucf101_demo",
        model=attrs.evolve(ModelConfig(), size="tiny", width=128, heads=4, split=(1, 1, 2), decoder_width=64,
                           decoder_heads=2, decoder_depths=(1, 1, 1)),
        data=attrs.evolve(DataConfig(), frames=8, stride=4, size=96, workers=2),
        ventral=PretrainConfig(optim=_demo_optim(4, 32, 1.5e-3, 1), flip=False),
        joint=PretrainConfig(optim=_demo_optim(6, 16, 1.5e-3, 1), flip=True),
        finetune=FinetuneConfig(optim=_demo_optim(30, 16, 2e-3, 3, betas=(0.9, 0.999), layer_decay=0.75),
                                drop_path=0.05, mixup=0.2, cutmix=0.0, randaugment=None, erase=0.0),
        test=TestConfig(clips=5, crops=3, batch_size=8),
    )


def tiny() -> Config:
    """A few steps of every stage on a tiny set: what the tests run."""
    cfg = demo()
    return attrs.evolve(
        cfg,
        run_dir="runs/bimm_ucf101_tiny",
        log_every=1,
        model=attrs.evolve(cfg.model, width=32, heads=2, decoder_width=32),
        data=attrs.evolve(cfg.data, frames=4, stride=2, size=48, workers=0, synthetic_groups=7, synthetic_clips=1),
        ventral=PretrainConfig(optim=_demo_optim(1, 8, 1e-3, 0)),
        joint=PretrainConfig(optim=_demo_optim(1, 8, 1e-3, 0)),
        finetune=attrs.evolve(cfg.finetune, optim=_demo_optim(1, 8, 1e-3, 0, betas=(0.9, 0.999), layer_decay=0.75)),
        test=TestConfig(clips=2, crops=1, batch_size=8),
    )


VARIANTS = {"demo": demo(), "paper": config(), "tiny": tiny()}


# --------------------------------------------------------------------------- building blocks


def build_pathway(m: ModelConfig, streams: tuple[str, ...] = ("ventral", "dorsal")) -> Pathway:
    """The paper's graph from a model config (Table 7c target sets via loss weights)."""
    overrides = {k: v for k, v in (("width", m.width), ("heads", m.heads)) if v is not None}
    encoder = SIZES[m.size](depth=sum(m.split), **overrides)
    dec = [DecoderSpec(width=m.decoder_width, depth=d, heads=m.decoder_heads) for d in m.decoder_depths]
    n_targets = TARGETS.index(m.targets) + 1  # "V1" -> 1, "V1-V2" -> 2, all -> 3
    w = [1.0 if i < n_targets else 0.0 for i in range(3)]
    v1 = V1Gabor(blocks=m.split[0], decoder=dec[0], weight=w[0])
    v2 = V2Contour(blocks=m.split[1], decoder=dec[1], weight=w[1])
    all_streams = {
        "ventral": Stream("ventral", "image", [v1, v2, V4Color(blocks=m.split[2], decoder=dec[2], weight=w[2])],
                          mask=RandomMask(m.image_mask)),
        "dorsal": Stream("dorsal", "video", [v1, v2, MTMotion(blocks=m.split[2], decoder=dec[2], weight=w[2])],
                         mask=TubeMask(m.video_mask), weight=m.dorsal_weight),
    }
    chosen = [all_streams[s] for s in streams]
    share = m.share if len(chosen) > 1 else "none"
    if share == "all":
        share = [("V1",), ("V2",), ("V4", "MT")]
    return Pathway(encoder=encoder, streams=chosen, share=share)


def video_records(cfg: Config, train: bool):
    root = Path(cfg.data.root) if cfg.data.root else ensure_synthetic(
        spec=SyntheticSpec(groups=cfg.data.synthetic_groups, clips=cfg.data.synthetic_clips,
                           size=cfg.data.synthetic_size))
    records, classes = read_ucf101(root, cfg.data.split, train=train)
    return root, records, classes


def _contours(cfg: Config, root: Path) -> ContourCache | None:
    return ContourCache(cfg.data.contours, root) if cfg.data.contours else None


def pretrain_step(model, batch):
    out = model(batch)
    return out.loss, out.losses


# --------------------------------------------------------------------------- stages


def run_ventral(cfg: Config, runtime, run: RunLog, console: Console):
    model = build_pathway(cfg.model, ("ventral",)).build().to(runtime.device)
    transform = TrainTransform(size=cfg.data.size, crop="resized", area=(0.2, 1.0), flip=cfg.ventral.flip)
    if cfg.data.image_root:
        dataset = ImageFolder(cfg.data.image_root, transform=transform, seed=cfg.seed)
        source = f"images of {cfg.data.image_root}"
    else:
        root, records, classes = video_records(cfg, train=True)
        dataset = VideoDataset(records, classes, frames=1, transform=transform, as_images=True, seed=cfg.seed,
                               name="UCF101 frames")
        source = f"frames of {root} (UCF101 init)"
    console.print(f"[bold]ventral[/]: MAE-style pretraining on {source}, {len(dataset)} items")
    ddp = _ddp(model, runtime)
    optimizer = build_optimizer(model, cfg.ventral.optim, runtime)
    loader = make_loader(dataset, cfg.ventral.optim.batch_size, runtime, shuffle=True, seed=cfg.seed,
                         workers=cfg.data.workers)
    state = fit("ventral", ddp, pretrain_step, loader, optimizer, cfg.ventral.optim, runtime, run,
                resume=cfg.resume, log_every=cfg.log_every, console=console)
    return model, state


def run_joint(cfg: Config, runtime, run: RunLog, console: Console):
    model = build_pathway(cfg.model).build().to(runtime.device)
    ventral_ckpt = run.stage_dir("ventral") / "model.safetensors"
    if ventral_ckpt.is_file():
        result = load_weights(model, ventral_ckpt, strict=False)
        console.print(f"[bold]joint[/]: ventral stream loaded from {ventral_ckpt} "
                      f"({len(result.missing_keys)} dorsal keys initialised fresh)")
        if cfg.model.dorsal_init == "ventral":
            report = inherit_stream(model, dst="dorsal", src="ventral")
            console.print(f"  dorsal from ventral: {len(report['copied'])} copied, {len(report['shared'])} "
                          f"shared, inflated {report['inflated']}")
    else:
        console.print("[bold]joint[/]: no ventral checkpoint, both streams start from scratch")
    root, records, classes = video_records(cfg, train=True)
    transform = TrainTransform(size=cfg.data.size, crop="multiscale", flip=cfg.joint.flip)
    contours = _contours(cfg, root)
    dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride, transform=transform,
                           contours=contours, seed=cfg.seed, name="UCF101 train")
    console.print(f"  {len(dataset)} training videos; V2 contours from "
                  f"{'the SAM cache ' + str(contours.root) if contours else 'the on-device edge detector (no cache)'}")
    ddp = _ddp(model, runtime)
    optimizer = build_optimizer(model, cfg.joint.optim, runtime)
    loader = make_loader(dataset, cfg.joint.optim.batch_size, runtime, shuffle=True, seed=cfg.seed,
                         workers=cfg.data.workers)
    state = fit("joint", ddp, pretrain_step, loader, optimizer, cfg.joint.optim, runtime, run,
                resume=cfg.resume, log_every=cfg.log_every, console=console)
    return model, state


def _ddp(model, runtime):
    if not runtime.distributed:
        return model
    ids = [runtime.device.index] if runtime.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def finetune_step_fn(ft: FinetuneConfig, num_classes: int, device):
    """Mixup/CutMix + soft-target loss (timm) and random erasing on the device."""
    from timm.data import Mixup
    from timm.data.random_erasing import RandomErasing
    from timm.loss import SoftTargetCrossEntropy

    mixup = Mixup(mixup_alpha=ft.mixup, cutmix_alpha=ft.cutmix, label_smoothing=ft.smoothing,
                  num_classes=num_classes) if (ft.mixup > 0 or ft.cutmix > 0) else None
    erase = RandomErasing(probability=ft.erase, mode="pixel", device=str(device)) if ft.erase > 0 else None
    soft = SoftTargetCrossEntropy()

    def step(model, batch):
        video = batch["video"].float() / 255  # (B, C, T, H, W)
        target = batch["label"]
        if mixup is not None and video.shape[0] % 2 == 0:
            video, target = mixup(video, target)
        else:
            target = F.one_hot(target, num_classes).float() * (1 - ft.smoothing) + ft.smoothing / num_classes
        core = model.module if hasattr(model, "module") else model
        x = core.encoder.normalize(video)
        if erase is not None:  # one region per clip, the same in every frame (timm, per sample)
            B, C, T, H, W = x.shape
            x = erase(x.reshape(B, C * T, H, W)).reshape(B, C, T, H, W)
        logits = model(x, normalized=True)
        loss = soft(logits, target)
        return loss, {}

    return step


def run_finetune(cfg: Config, runtime, run: RunLog, console: Console):
    joint = build_pathway(cfg.model).build()
    ckpt = run.stage_dir("joint") / "model.safetensors"
    if ckpt.is_file():
        load_weights(joint, ckpt)
        console.print(f"[bold]finetune[/]: dorsal encoder from {ckpt}")
    else:
        console.print("[bold]finetune[/]: no joint checkpoint, training the dorsal encoder from scratch")
    root, records, classes = video_records(cfg, train=True)
    ft = cfg.finetune
    model = Classifier(Encoder.from_pathway(joint, "dorsal", drop_path=ft.drop_path), len(classes),
                       pool=ft.pool).to(runtime.device)
    transform = TrainTransform(size=cfg.data.size, crop="resized", area=ft.crop_area, flip=ft.flip,
                               randaugment=ft.randaugment)
    dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride, transform=transform,
                           views=ft.repeated, seed=cfg.seed, name="UCF101 train")
    ddp = _ddp(model, runtime)
    optimizer = build_optimizer(model, ft.optim, runtime, num_layers=sum(cfg.model.split))
    # Table 9's batch counts videos; repeated augmentation gives each `repeated` clips (VideoMAE).
    loader = make_loader(dataset, ft.optim.batch_size, runtime, shuffle=True, seed=cfg.seed,
                         workers=cfg.data.workers)
    state = fit("finetune", ddp, finetune_step_fn(ft, len(classes), runtime.device), loader, optimizer, ft.optim,
                runtime, run, resume=cfg.resume, log_every=cfg.log_every, console=console)
    return model, state, classes


def run_test(cfg: Config, runtime, run: RunLog, console: Console, model=None, classes=None):
    root, records, classes = video_records(cfg, train=False)
    if model is None:
        joint = build_pathway(cfg.model).build()
        model = Classifier(Encoder.from_pathway(joint, "dorsal"), len(classes), pool=cfg.finetune.pool)
        load_weights(model, run.stage_dir("finetune") / "model.safetensors")
        model = model.to(runtime.device)
    dataset = VideoDataset(records, classes, frames=cfg.data.frames, stride=cfg.data.stride, mode="test",
                           size=cfg.data.size, clips=cfg.test.clips, crops=cfg.test.crops, name="UCF101 test")
    loader = make_loader(dataset, cfg.test.batch_size, runtime, shuffle=False, seed=cfg.seed,
                         workers=cfg.data.workers, drop_last=False)
    result = evaluate(model, loader, runtime, console=console)
    result["chance"] = 1 / len(classes)
    run.metrics("test", top1=result["top1"], top5=result["top5"], count=result["count"])
    return result


def check(cfg: Config) -> Pathway:
    """Reject a configuration that cannot run, before any data or compute is touched."""
    if cfg.data.root is not None and not Path(cfg.data.root, "ucfTrainTestlist").is_dir():
        raise ValueError(f"data.root={cfg.data.root!r} must hold UCF-101/ and ucfTrainTestlist/ (official layout)")
    if cfg.data.image_root is not None and not Path(cfg.data.image_root).is_dir():
        raise ValueError(f"data.image_root={cfg.data.image_root!r} is not a folder of class folders")
    pathway = build_pathway(cfg.model)  # validates the graph
    side = cfg.data.size // 16
    if cfg.data.size % 16 or cfg.data.frames % 2:
        raise ValueError(f"data.size must be a multiple of 16 and data.frames even, got {cfg.data.size}, "
                         f"{cfg.data.frames}")
    for stream in pathway.streams:
        grid = (side, side) if stream.modality == "image" else (cfg.data.frames // 2, side, side)
        try:
            stream.mask.count(grid)
        except ValueError as err:
            raise ValueError(f"model mask for {stream.name} at data.size={cfg.data.size}: {err}") from None
    return pathway


def run(cfg: Config) -> dict:
    """Run the configured stages; returns the results (also in ``run_dir/results.json``)."""
    check(cfg)
    runtime = setup(cfg.device, cfg.seed)
    console = Console(stderr=True)
    run_log = RunLog(cfg.run_dir, runtime)
    run_log.write_config(to_dict(cfg))
    results: dict = {"run_dir": str(run_log.root), "device": str(runtime.device), "world": runtime.world}
    model = classes = None
    try:
        if "ventral" in cfg.stages:
            _, state = run_ventral(cfg, runtime, run_log, console)
            results["ventral_skipped"] = state.skipped
        if "joint" in cfg.stages:
            joint, state = run_joint(cfg, runtime, run_log, console)
            results["joint_skipped"] = state.skipped
            if runtime.main:
                _figure(joint, cfg, run_log, runtime)
        if "finetune" in cfg.stages:
            model, state, classes = run_finetune(cfg, runtime, run_log, console)
            results["finetune_skipped"] = state.skipped
        if "test" in cfg.stages:
            test = run_test(cfg, runtime, run_log, console, model=model, classes=classes)
            results.update(top1=test["top1"], top5=test["top5"], test_videos=test["count"], chance=test["chance"])
    finally:
        teardown(runtime, model)
    if runtime.main:
        (run_log.root / "results.json").write_text(json.dumps(results, indent=2))
        _table(results, console)
    return results


def _figure(joint, cfg: Config, run_log: RunLog, runtime) -> None:
    from analysis.figures import reconstruction_figure

    _, records, classes = video_records(cfg, train=False)
    dataset = VideoDataset(records[:1], classes, frames=cfg.data.frames, stride=cfg.data.stride, mode="test",
                           size=cfg.data.size, clips=1, crops=1)
    clip = dataset[0]["video"][:1].to(runtime.device)
    fig = reconstruction_figure(joint, {"video": clip}, stream="dorsal")
    fig.savefig(run_log.root / "reconstruction_dorsal.png", dpi=110)


def _table(results: dict, console: Console) -> None:
    table = Table(title="bimm_ucf101 results")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("top1", "top5", "chance", "test_videos", "ventral_skipped", "joint_skipped", "finetune_skipped",
                "run_dir"):
        if key in results:
            value = results[key]
            table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    gives_data = any(a.replace("-", "_").lstrip("_").startswith(("data.root", "data_root")) for a in argv)
    if gives_data and not any(a.startswith("--variant") for a in argv):
        argv = ["--variant", "paper", *argv]  # real data: the paper's settings
    argv = [a.replace("--data-root", "--data.root").replace("--data_root", "--data.root") for a in argv]
    _, cfg = parse_cli(argv, VARIANTS, "recipes.bimm_ucf101", __doc__)
    run(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
