"""What a recipe run is made of: its configuration, and the demo and tiny scales.

A recipe's :class:`Config` holds the paper's settings for one dataset; :func:`variants` adds
``demo`` (the built-in sets on a laptop CPU, the default) and ``tiny`` (a few steps, what
the tests run). The graph to train is ``Config.pathway``: None for the paper's
(:func:`areas.bimm.paper_pathway` of ``Config.model``), or a builder or stored graph of the
user's own (:mod:`recipes.graph`).
"""

from __future__ import annotations

import re
from typing import ClassVar

import attrs

from areas.bimm import ModelConfig, _one_of
from visualpath.data.layouts import VIDEO_FORMATS
from visualpath._validate import (area_range, non_negative, non_negative_float, positive, probability,
                                  seed as seed_range, unit_interval)
from visualpath.engine import OptimSpec

__all__ = ["Config", "DataConfig", "PretrainConfig", "FinetuneConfig", "TestConfig", "STAGES", "demo_optim",
           "demo_model", "tiny_model", "demo_of", "small_of", "tiny_of", "variants", "VARIANT_NOTES"]

STAGES = ("ventral", "joint", "finetune", "test")


def _at_most(limit: int):
    """An integer from 1 to ``limit``: a size read from a config file is bounded before the
    set it describes is generated."""
    def check(instance, attribute, value):
        positive(instance, attribute, value)
        if value > limit:
            raise ValueError(f"{attribute.name} must be at most {limit} (the built-in set is generated on this "
                             f"machine), got {value!r}; use data.root= for a larger set of your own")
    return check


def _identifier(instance, attribute, value):
    if not isinstance(value, str) or not value.isidentifier():
        raise ValueError(f"{attribute.name} must name a stream of the graph, got {value!r}")


def _maps(instance, attribute, value):
    bad = [v for v in value if "=" not in v or not v.split("=", 1)[0] or not v.split("=", 1)[1]]
    if bad:
        raise ValueError(f"data.maps entries look like NAME=DIR (e.g. contour=/data/ucf/contours), got {bad[0]!r}")


def _stages(instance, attribute, value):
    bad = [s for s in value if s not in STAGES]
    if bad or not value:
        raise ValueError(f"stages must be a non-empty list from {list(STAGES)}, got {list(value)}")
    if len(set(value)) != len(value):
        raise ValueError(f"stages names a stage twice, got {','.join(value)}; each runs once, in the order "
                         f"{','.join(STAGES)}")


def _run_dir(instance, attribute, value):
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"run_dir must name a folder, got {value!r} (the current folder is never a run's folder)")


# timm's RandAugment policy: "rand" then sections m (magnitude), n (ops), p (probability),
# mstd (magnitude noise), mmax (magnitude bound), inc (increasing ops), t (op set); timm
# ignores a section it cannot read, so a typo would train without what it meant
_RANDAUGMENT_SECTION = re.compile(r"(m\d+|n\d+|p(\d+\.?\d*|\.\d+)|mstd(\d+\.?\d*|\.\d+|inf)|mmax\d+|inc[01]|t[a-z]+)")


def _randaugment(instance, attribute, value):
    if value is None:
        return
    sections = value.split("-") if isinstance(value, str) else []
    bad = [s for s in sections[1:] if not _RANDAUGMENT_SECTION.fullmatch(s)]
    if not sections or sections[0] != "rand" or bad or len(sections) < 2:
        what = f"its section {bad[0]!r} is not one of" if bad else "expected 'rand' then sections of"
        raise ValueError(f"{attribute.name} must be a timm RandAugment policy or None, got {value!r}: {what} "
                         "mM, nN, pP, mstdS, mmaxM, inc0/inc1, tNAME joined by '-' (e.g. rand-m7-n4-mstd0.5-inc1)")


@attrs.frozen(kw_only=True)
class DataConfig:
    """Where clips come from; ``root=None`` uses the built-in synthetic set (UCF101 layout).

    Attributes:
        root: the video set's folder in its official layout (data.format); None: the built-in set
        image_root: The ventral stage's images: an ImageNet-layout folder (the paper's IN-1K init; BIMM-V),
            "frames" (frames of the video set: Table 7a's "UCF101 Init") or "builtin" (the generated shapes);
            None asks.
        contours: SAM contour cache folder: the same as maps=contour=DIR
        maps: NAME=DIR per side map the graph's areas declare (recipes.precompute_maps)
        image_maps: NAME=DIR for data.image_root's images
        frames: frames per clip (the paper: 16)
        stride: frames between sampled frames (the paper: 4)
        size: side of the square crop in pixels, a multiple of the patch
        workers: data-loading processes (0: in the main one)
        memory_gb: keep the decoded training videos in shared memory up to this many GiB (decision P3; 0: decode
            every clip)
        synthetic_groups: built-in set: groups (scenes) per class
        synthetic_clips: built-in set: clips per group and class
        synthetic_size: built-in set: frame side in pixels
    """

    format: str = attrs.field(default="ucf101", validator=_one_of(VIDEO_FORMATS))
    root: str | None = None
    split: int = attrs.field(default=1, validator=_one_of((1, 2, 3)))
    image_root: str | None = None
    contours: str | None = None
    maps: tuple[str, ...] = attrs.field(default=(), validator=_maps)
    image_maps: tuple[str, ...] = attrs.field(default=(), validator=_maps)
    frames: int = attrs.field(default=16, validator=positive)
    stride: int = attrs.field(default=4, validator=positive)
    size: int = attrs.field(default=224, validator=positive)
    workers: int = attrs.field(default=8, validator=non_negative)
    memory_gb: float = attrs.field(default=0.0, validator=non_negative_float)
    synthetic_groups: int = attrs.field(default=8, validator=_at_most(64))
    synthetic_clips: int = attrs.field(default=4, validator=_at_most(64))
    synthetic_size: int = attrs.field(default=128, validator=_at_most(512))


@attrs.frozen(kw_only=True)
class PretrainConfig:
    """A pretraining stage (ventral or joint): its optimiser and flips.

    Attributes:
        flip: random horizontal flips of the pretraining clips or images
    """

    optim: OptimSpec
    flip: bool = True


@attrs.frozen(kw_only=True)
class FinetuneConfig:
    """The finetuning stage (Table 9): which stream, its optimiser and augmentation.

    Attributes:
        stream: a video stream, or an image one (BIMM-V)
        drop_path: stochastic depth of the last block, in [0, 1)
        mixup: Mixup's beta alpha; 0 turns it off
        cutmix: CutMix's beta alpha; 0 turns it off
        smoothing: label smoothing, in [0, 1)
        repeated: repeated augmentation: views per decoded video
        flip: random horizontal flips
        randaugment: timm RandAugment policy (magnitude 7, 4 ops), None: off
        erase: random-erasing probability
        crop_area: random-resized-crop area range (VideoMAE)
    """

    optim: OptimSpec
    stream: str = attrs.field(default="dorsal", validator=_identifier)
    sampling: str = attrs.field(default="strided", validator=_one_of(("strided", "segments")))
    drop_path: float = attrs.field(default=0.2, validator=unit_interval)
    mixup: float = attrs.field(default=0.8, validator=non_negative_float)
    cutmix: float = attrs.field(default=1.0, validator=non_negative_float)
    smoothing: float = attrs.field(default=0.1, validator=unit_interval)
    repeated: int = attrs.field(default=2, validator=positive)
    flip: bool = True
    randaugment: str | None = attrs.field(default="rand-m7-n4-mstd0.5-inc1", validator=_randaugment)
    erase: float = attrs.field(default=0.25, validator=probability)
    crop_area: tuple[float, float] = attrs.field(default=(0.08, 1.0), validator=area_range)
    pool: str = attrs.field(default="mean", validator=_one_of(("mean", "cls")))


@attrs.frozen(kw_only=True)
class TestConfig:
    """The test stage: clips and crops per video, averaged (Table 9's views).

    Attributes:
        clips: clips per video (UCF101: 5)
        crops: spatial crops per clip: centre, or three
        batch_size: clips per forward pass
    """

    clips: int = attrs.field(default=5, validator=positive)
    crops: int = attrs.field(default=3, validator=_one_of((1, 3)))
    batch_size: int = attrs.field(default=8, validator=positive)


@attrs.frozen(kw_only=True)
class Config:
    """A recipe run: where it goes, the graph it trains, and each stage's settings.

    Attributes:
        name: the run's title in the results table
        run_dir: where config, graph, metrics and checkpoints go (one run at a time)
        seed: seeds every random draw (data order, augmentation, masks, initialisation)
        device: auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N
        stages: of ventral, joint, finetune, test
        resume: continue the stages' checkpoints in run_dir; false starts them again
        log_every: optimiser steps between metric records
        checkpoint_minutes: also checkpoint this often mid-epoch (0: at epoch ends only)
        tensorboard: also write metrics as TensorBoard events (needs the tensorboard package)
        compile: torch.compile the model of each training stage
        checkpointing: gradient checkpointing of the encoder blocks (less memory, ~1/3 more compute)
        pretrained: a run directory (or pathway .safetensors) to finetune instead of our own
        init: VideoMAE / MAE / timm / Hugging Face checkpoint to start pretraining from
        pathway: the graph: None (the paper's, from model.*), FILE.py:FN, module:FN, graph.json or a run
        pathway_overrides: pathway.STREAM.AREA.FIELD=VALUE edits, as given on the command line
        ventral: Table 8, IN-1K column
        joint: Table 8, UCF column; 1600 epochs (appendix A.2)
        finetune: Table 9, UCF column
    """

    # keys that said what the graph's own keys say, with where they went (decision H4)
    MOVED_KEYS: ClassVar[dict[str, str]] = {
        "model.video_mask": "pathway.dorsal.mask.ratio=VALUE", "model.image_mask": "pathway.ventral.mask.ratio=VALUE",
        "model.dorsal_weight": "pathway.dorsal.weight=VALUE",
        "model.decoder_keep": "pathway.V1.decoder.keep=VALUE pathway.V2.decoder.keep=VALUE",
        "model.split": "pathway.V1.blocks=A pathway.V2.blocks=B pathway.V4.blocks=C pathway.MT.blocks=C (their sum is "
                       "the encoder's depth, model.depth)",
        "model.decoder_depths": "pathway.V1.decoder.depth=A pathway.V2.decoder.depth=B pathway.V4.decoder.depth=C "
                                "pathway.MT.decoder.depth=C (model.decoder_depth=N caps every decoder)",
        "model.share": "pathway.share=none, pathway.share=partial (V1 and V2, the default) or pathway.share=all",
        "model.shared_blocks": "pathway=areas.bimm:read_at_last_block (Table 7d's \"12\" row), or a graph of your own"}

    name: str = "bimm"
    run_dir: str = attrs.field(default="runs/bimm", validator=_run_dir)
    seed: int = attrs.field(default=0, validator=seed_range)
    device: str = "auto"
    stages: tuple[str, ...] = attrs.field(default=STAGES, validator=_stages)
    resume: bool = True
    log_every: int = attrs.field(default=10, validator=positive)
    checkpoint_minutes: float = attrs.field(default=10.0, validator=non_negative_float)
    tensorboard: bool = False
    compile: bool = False
    checkpointing: bool = False
    pretrained: str | None = None
    init: str | None = None
    pathway: str | None = None
    pathway_overrides: tuple[str, ...] = ()
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    ventral: PretrainConfig = PretrainConfig(
        optim=OptimSpec(epochs=800, batch_size=128, base_lr=2e-4, warmup_epochs=40), flip=False)
    joint: PretrainConfig = PretrainConfig(
        optim=OptimSpec(epochs=1600, batch_size=64, base_lr=3e-4, warmup_epochs=40), flip=True)
    finetune: FinetuneConfig = FinetuneConfig(
        optim=OptimSpec(epochs=100, batch_size=32, base_lr=5e-4, warmup_epochs=5, betas=(0.9, 0.999),
                        layer_decay=0.7))
    test: TestConfig = TestConfig()


def demo_optim(epochs, batch, lr, warmup, **kw) -> OptimSpec:
    return OptimSpec(epochs=epochs, batch_size=batch, base_lr=lr, warmup_epochs=warmup, **kw)


# --------------------------------------------------------------------------- demo and tiny scales


def demo_model(model: ModelConfig) -> ModelConfig:
    """``model`` at demo scale: a 4-block width-128 ViT (the paper's graph reads at blocks 1, 2
    and 4), 64-wide decoders of one block, and a dorsal patch embedding that keeps temporal
    contrast when inflated (decision D21)."""
    return attrs.evolve(model, size="tiny", width=128, heads=4, patch=8, depth=4, decoder_width=64,
                        decoder_heads=2, decoder_depth=1, dorsal_contrast=4.0)


def tiny_model(model: ModelConfig) -> ModelConfig:
    """``model`` at test scale: width 32, 2 heads, 32-wide decoders."""
    return attrs.evolve(model, width=32, heads=2, decoder_width=32)


def demo_of(paper: Config, name: str) -> Config:
    """``paper`` at demo scale on the built-in sets, for a 2-core CPU (13.8-16.0 min measured
    with the set generated, docs/demo_results.md; generating it takes about 45 s more).

    Keeps what makes the recipe itself (streams, targets, sharing, masks, which encoder is
    finetuned, sampling, test views) and shrinks the rest: a 4-block width-128 ViT with 8 px
    patches (64 tokens per 64x64 frame, so a 0.9 tube mask still leaves about 6 visible
    positions per frame, where 16 px patches left 1 or 2), 8-frame clips of a 960-video set
    generated at 64 px, 30 ventral and 26 joint epochs (660 + 1,170 steps; decision P5), then 20
    finetuning epochs (900 steps; the image recipe's 15). The dorsal patch embedding keeps
    temporal contrast when it is inflated from the ventral one (decision D21). Flips are off: the built-in classes include
    left/right and clockwise/anticlockwise motion. Peak learning rates are 1e-3 (``base_lr``
    1.6e-2 at batch 16, by the linear scaling rule). Finetuning runs without layer-wise decay
    and with mild crops: after minutes of pretraining the early blocks have little to
    protect. The 720 training videos are decoded once into memory (``data.memory_gb=1``,
    270 MiB; decision P3) instead of every epoch. What this budget buys is measured by ``python -m benchmarks.demo_compare``
    (docs/demo_results.md; decision S1).
    """
    images = "builtin" if paper.finetune.stream == "ventral" else "frames"
    ft_epochs = 15 if paper.finetune.stream == "ventral" else 20
    return attrs.evolve(
        paper,
        run_dir=f"runs/{name}_demo",
        model=demo_model(paper.model),
        data=attrs.evolve(paper.data, root=None, image_root=images, frames=8, stride=4, size=64, workers=2,
                          synthetic_clips=12, synthetic_size=64, memory_gb=1.0),
        ventral=PretrainConfig(optim=demo_optim(30, 32, 1.6e-2, 1), flip=False),
        joint=PretrainConfig(optim=demo_optim(26, 16, 1.6e-2, 1), flip=False),
        finetune=attrs.evolve(paper.finetune, optim=demo_optim(ft_epochs, 16, 1.6e-2, ft_epochs // 10,
                                                               betas=(0.9, 0.999), layer_decay=1.0),
                              drop_path=0.0, mixup=0.0, cutmix=0.0, randaugment=None, erase=0.0, flip=False,
                              repeated=1, crop_area=(0.8, 1.0)),
        test=attrs.evolve(paper.test, batch_size=8),
    )


def small_of(demo: Config, name: str) -> Config:
    """The demo's model, data and learning rates for a few hundred steps (decision S7): 4
    ventral, 3 joint and 2 finetuning epochs (88 + 135 + 90 steps on the built-in set) and a
    lighter test (2 clips, centre crop); 1.4-1.9 min on 2 CPU cores (docs/small_variant.md). Long enough for a graph's
    areas to show whether they learn their targets (``python -m analysis``: each target's
    fraction left below 1); too short for the features to probe better than random weights
    or for finetuning to leave chance, which the demo reaches: pretraining first lowers the
    probes and lifts them past random weights only after about 5 minutes of the demo's
    schedule (docs/probe_curve.md). Measured in docs/small_variant.md."""
    def shorter(optim: OptimSpec, epochs: int) -> OptimSpec:
        return attrs.evolve(optim, epochs=epochs, warmup_epochs=min(optim.warmup_epochs, 1))

    return attrs.evolve(
        demo,
        run_dir=f"runs/{name}_small",
        log_every=5,
        ventral=attrs.evolve(demo.ventral, optim=shorter(demo.ventral.optim, 4)),
        joint=attrs.evolve(demo.joint, optim=shorter(demo.joint.optim, 3)),
        finetune=attrs.evolve(demo.finetune, optim=shorter(demo.finetune.optim, 2)),
        test=attrs.evolve(demo.test, clips=2, crops=1),
    )


def tiny_of(demo: Config, name: str) -> Config:
    """A few steps of every stage on a tiny built-in set: what the tests run."""
    return attrs.evolve(
        demo,
        run_dir=f"runs/{name}_tiny",
        log_every=1,
        model=tiny_model(demo.model),
        data=attrs.evolve(demo.data, frames=4, stride=2, size=48, workers=0, synthetic_groups=7, synthetic_clips=1),
        ventral=PretrainConfig(optim=demo_optim(1, 8, 1e-3, 0)),
        joint=PretrainConfig(optim=demo_optim(1, 8, 1e-3, 0)),
        finetune=attrs.evolve(demo.finetune, optim=demo_optim(1, 8, 1e-3, 0, betas=(0.9, 0.999), layer_decay=0.75)),
        test=TestConfig(clips=2, crops=1, batch_size=8),
    )


# what each variant is for and what it costs, in --help (times: recipes.bimm_ucf101 on a 2-core
# CPU with the built-in set generated; docs/demo_results.md)
VARIANT_NOTES = {
    "demo": "the whole recipe at laptop scale on the built-in set: every stage, enough pretraining to beat none "
            "(docs/demo_results.md); 14-16 min on 2 CPU cores with the set generated, up to about 20 on slower ones",
    "small": "the demo's model and learning rates for a few hundred steps: does a new area learn its target? "
             "(python -m analysis: target left below 1; probes and finetuning need the demo); about 2-2.5 min on "
             "2 CPU cores (docs/small_variant.md)",
    "paper": "the paper's settings (Tables 8 and 9) for real data (data.root=...): days on 8 GPUs",
    "tiny": "a few steps of every stage at width 32: checks that a graph or setting runs end to end (about 20 s); "
            "learns nothing",
}


def variants(paper: Config, name: str, **extra: Config) -> dict[str, Config]:
    """A recipe's ``VARIANTS``: ``demo`` (the default), ``paper``, any ``extra``, ``small``, ``tiny``."""
    demo = demo_of(paper, name)
    return {"demo": demo, "paper": paper, **extra, "small": small_of(demo, name), "tiny": tiny_of(demo, name)}
