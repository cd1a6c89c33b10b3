"""Per-area features of a pathway: extracted in batches, saved as safetensors + JSON.

An area's feature is the output of its last encoder block (the tap its decoder reads), so
``"V1"`` of the paper's graph is block 2, ``"V2"`` block 4, ``"V4"``/``"MT"`` block 12.
``level="block"`` taps every block instead (``"block1"`` ... ``"block12"``), for
layer-by-layer similarity. Features are computed without masking, in evaluation mode.

A stream reads its own modality: an image stream given videos sees each clip's middle
frame, so one video set probes both streams.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from visualpath.errors import Refused
from visualpath.model import PathwayModel
from visualpath.rundir import load_state, read_json, read_weights, run_config
from visualpath.atomic import atomic, atomic_write

__all__ = ["Features", "extract", "load_run", "load_classifier", "run_dataset", "clip_dataset", "block_features", "area_features",
           "untrained_start",
           "token_grid", "random_weights"]

log = logging.getLogger(__name__)


@dataclass
class Features:
    """Features of one stream, per area (or block), for ``M`` items.

    Attributes:
        areas: ``{name: (M, D)}`` pooled, or ``(M, N, D)`` token features.
        labels: ``(M,)`` class indices, or None.
        meta: stream, pooling, grid, class names and where the items came from.
    """

    areas: dict[str, Tensor]
    labels: Tensor | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return next(iter(self.areas.values())).shape[0] if self.areas else 0

    def __getitem__(self, name: str) -> Tensor:
        return self.areas[name]

    @property
    def names(self) -> list[str]:
        return list(self.areas)

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.safetensors``) and ``path.json`` with the metadata; no pickle."""
        path = Path(path).with_suffix(".safetensors")
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"area.{k}": v.contiguous().cpu() for k, v in self.areas.items()}
        if self.labels is not None:
            tensors["labels"] = self.labels.cpu()
        atomic(path, lambda tmp: save_file(tensors, tmp))
        atomic_write(path.with_suffix(".json"), json.dumps({"order": self.names, **self.meta}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Features:
        path = Path(path).with_suffix(".safetensors")
        if not path.is_file():
            raise ValueError(f"no saved features at {path}")
        tensors = load_file(str(path))
        meta_file = path.with_suffix(".json")
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        order = meta.pop("order", sorted(k[5:] for k in tensors if k.startswith("area.")))
        return cls({k: tensors[f"area.{k}"] for k in order}, tensors.get("labels"), meta)


# --------------------------------------------------------------------------- models and data


def load_run(run_dir: str | Path, stage: str | None = None, device: str | torch.device = "cpu",
             trust_code: bool = False) -> PathwayModel:
    """The pathway of a recipe's run directory, with its trained weights, in eval mode.

    The model is rebuilt from the graph the run stored (``pathway.json``), whatever graph
    that is; runs written before graphs were stored rebuild the paper's graph of their
    ``config.json``.

    Args:
        run_dir: a directory holding ``pathway.json`` and ``joint/`` or
            ``ventral/`` ``model.safetensors`` (what the recipes write).
        stage: ``"joint"`` or ``"ventral"``; default: the joint checkpoint if there is one.
        trust_code: run the code the run's graph needs even if it is neither installed nor
            trusted by you (:mod:`visualpath.trust`); read the run's ``code/`` first.

    Raises:
        ValueError: naming the missing file (:class:`visualpath.errors.Refused`), the
            damaged weights or the code not trusted.
    """
    from visualpath.rundir import load_model

    model = load_model(run_dir, stage=stage, device=device, trust_code=trust_code)
    log.info("loaded %s (%s)", run_dir, ", ".join(s.name for s in model.pathway.streams))
    return model


def load_classifier(run_dir: str | Path, device: str | torch.device = "cpu", trust_code: bool = False):
    """A run's finetuned classifier with its class names, in eval mode: ``(model, classes)``.

    The encoder is rebuilt from the graph the run stored (a run finetuned from another run
    stores that run's graph) and the classifier head as finetuning built it
    (``finetune.stream`` and ``finetune.pool`` of its ``config.json``). ``trust_code``: as
    :func:`load_run`.

    Raises:
        ValueError: the run has no finetuned model, no class names, or stopped finetuning early.
    """
    from areas.bimm import run_pathway
    from visualpath.classifier import Classifier, Encoder
    from visualpath.rundir import check_links, stage_progress

    run = Path(run_dir)
    if run.is_dir():
        check_links(run)  # before any of its files is read
    if not (run / "finetune" / "model.safetensors").is_file() or not (run / "classes.json").is_file():
        raise ValueError(f"{run} holds no finetuned model with its classes (finetune/ and classes.json)")
    progress = stage_progress(run / "finetune")
    if progress is not None and not progress.get("finished", True):
        raise ValueError(f"{run}: finetuning stopped at step {progress.get('step')} of {progress.get('total_steps')}; "
                         "finish it first")
    classes = read_json(run / "classes.json", "the finetuned model's class names, a list of strings", list)
    if not classes or not all(isinstance(c, str) for c in classes):
        raise Refused(f"{run / 'classes.json'} is not a list of class names (strings)")
    finetune = run_config(run).get("finetune", {})
    encoder = Encoder.from_pathway(run_pathway(run, trust_code=trust_code).build(), finetune.get("stream", "dorsal"))
    weights = read_weights(run / "finetune")
    outputs = weights["head.weight"].shape[0] if "head.weight" in weights else None
    if outputs is not None and outputs != len(classes):
        raise Refused(f"{run / 'classes.json'} names {len(classes)} classes but the finetuned model has {outputs} "
                      "outputs: the file belongs to another run")
    model = Classifier(encoder, len(classes), pool=finetune.get("pool", "mean"))
    load_state(model, weights, run / "finetune" / "model.safetensors")
    return model.to(device).eval(), classes


def random_weights(model: PathwayModel, seed: int = 0, device: str | torch.device = "cpu") -> PathwayModel:
    """The same graph, never trained: ``model``'s spec built after ``torch.manual_seed(seed)``,
    in eval mode. The random-weights baseline of ``python -m analysis`` (seed 0) and of
    ``python -m analysis neural``."""
    torch.manual_seed(seed)
    return model.pathway.build().to(device).eval()


def untrained_start(model: PathwayModel, run_dir: str | Path, seed: int = 0, device: str | torch.device = "cpu"
                    ) -> PathwayModel | None:
    """Where the run's recipe starts its joint stage when the ventral stream was never
    trained: :func:`random_weights`, then each video stream initialised from its image stream
    as the joint stage does (``model.dorsal_init`` and ``model.dorsal_contrast`` of the run's
    ``config.json``; decision D21). None when no stream is initialised that way (then the
    start is the random weights themselves)."""
    from visualpath.inherit import inherit_sources, inherit_stream

    settings = run_config(run_dir).get("model") or {}
    sources = inherit_sources(model.pathway)
    if not sources or settings.get("dorsal_init", "ventral") != "ventral":
        return None
    start = random_weights(model, seed=seed, device=device)
    for dst, src in sources.items():
        inherit_stream(start, dst=dst, src=src, temporal_contrast=float(settings.get("dorsal_contrast") or 0.0))
    return start.eval()


def run_dataset(run_dir: str | Path, train: bool = False, limit: int | None = None) -> Dataset:
    """The video set a run was trained on (training or evaluation part), one centre clip
    per video at the run's frame count and size, for feature extraction."""
    return clip_dataset(run_data(run_dir), train, limit)


def run_data(run_dir: str | Path) -> dict:
    """A run's data settings (``config.json``'s ``"data"``), or a one-line refusal naming the file."""
    data = run_config(run_dir).get("data")
    if data is None:
        raise Refused(f"{Path(run_dir) / 'config.json'} holds no data settings: the run's videos are unknown")
    return data


def clip_dataset(data: Mapping, train: bool = False, limit: int | None = None) -> Dataset:
    """The video set a recipe's ``data`` settings (``config.json``'s ``"data"`` mapping, or
    ``attrs.asdict(cfg.data)``) name, one centre clip per video, as :func:`run_dataset`."""
    from visualpath.data import VideoDataset
    from visualpath.data.layouts import video_set
    from visualpath.data.synthetic import SyntheticSpec

    spec = SyntheticSpec(groups=data["synthetic_groups"], clips=data["synthetic_clips"], size=data["synthetic_size"])
    _, records, classes = video_set(data["root"], data["format"], data["split"], train, spec)
    if limit is not None:
        records = records[:: max(1, math.ceil(len(records) / limit))]
    return VideoDataset(records, classes, frames=data["frames"], stride=data["stride"], mode="test",
                        size=data["size"], clips=1, crops=1, name="training videos" if train else "test videos")


class KeptItems(Dataset):
    """``dataset``'s items kept in memory after their first read, while they fit in
    ``budget_bytes``; items past the budget are read again each time. ``python -m analysis``
    reads a run's videos once for each model it probes (the trained one, each random-weights
    draw, each untrained start) and for its target fit, always the same centre clip of each
    video, so decoding them again was most of its time. ``share``: another ``KeptItems`` whose
    budget this one draws from too (what is read first is kept first). Other attributes
    (``classes``, ``records``, ``skipped``) are the dataset's."""

    def __init__(self, dataset: Dataset, budget_bytes: int = 0, share: KeptItems | None = None) -> None:
        self.dataset, self.kept = dataset, {}
        self.pool = share.pool if share is not None else {"budget": budget_bytes, "used": 0}

    @property
    def used(self) -> int:
        """Bytes kept by every ``KeptItems`` sharing this one's budget."""
        return self.pool["used"]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index in self.kept:
            return dict(self.kept[index])
        item = self.dataset[index]
        size = sum(v.nbytes for v in item.values() if isinstance(v, Tensor))
        if self.pool["used"] + size <= self.pool["budget"]:
            self.kept[index] = dict(item)
            self.pool["used"] += size
        return item

    def __getattr__(self, name: str):
        if name.startswith("__") or name in ("dataset", "pool", "kept"):
            raise AttributeError(name)
        return getattr(self.dataset, name)


# --------------------------------------------------------------------------- extraction


def _stream_input(model: PathwayModel, stream: str, x: Tensor) -> Tensor:
    """The stream's own modality: an image stream takes a clip's middle frame."""
    layout = model.streams[stream].layout
    if not layout.is_video and x.ndim == 5:
        return x[:, :, x.shape[2] // 2]
    return x


def token_grid(model: PathwayModel, stream: str, x: Tensor) -> tuple[int, ...]:
    """The token grid ``(t, h, w)`` or ``(h, w)`` a stream lays ``x`` out on: its own
    modality (:func:`_stream_input`) and, for a stream with a ``frame_step``, the frames it sees."""
    x = _stream_input(model, stream, x)
    step = model.pathway.stream(stream).frame_step
    if step > 1 and x.ndim == 5:
        x = x[:, :, ::step]
    return tuple(model.streams[stream].layout.grid(x.shape))


def block_features(model: PathwayModel, x: Tensor, stream: str) -> dict[str, Tensor]:
    """``{"block1": (B, N, D), ...}``: every block's output of one stream, unmasked."""
    return dict(model.forward_encoder(stream, model.embed(x, stream), by="block"))


def area_features(model: PathwayModel, x: Tensor, stream: str, level: str = "area") -> dict[str, Tensor]:
    """Token features ``{name: (B, N, D)}`` of one batch, per area or per block."""
    x = _stream_input(model, stream, x)
    if level == "area":
        return model.features(x, stream)
    if level == "block":
        return block_features(model, x, stream)
    raise ValueError(f"level must be 'area' or 'block', got {level!r}")


def _batches(data, batch_size: int, workers: int) -> Iterable[tuple[Tensor, Tensor | None]]:
    if isinstance(data, Tensor):
        for i in range(0, len(data), batch_size):
            yield data[i:i + batch_size], None
        return
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=batch_size, num_workers=workers)
    for batch in loader:
        if isinstance(batch, Mapping):
            x = batch["video"] if "video" in batch else batch["image"]
            if x.ndim == 6 or (x.ndim == 5 and "image" in batch):  # (B, views, ...): the first view
                x = x[:, 0]
            yield x, batch.get("label")
        elif isinstance(batch, (tuple, list)):
            yield batch[0], (batch[1] if len(batch) > 1 else None)
        else:
            yield batch, None


@torch.no_grad()
def extract(
    model: PathwayModel,
    data,
    stream: str,
    *,
    pooled: bool = True,
    level: str = "area",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
    workers: int = 0,
) -> Features:
    """Features of every item of ``data`` for one stream.

    Args:
        model: a built pathway (e.g. from :func:`load_run`).
        data: a tensor ``(M, C, [T,] H, W)`` of pixels (uint8 or [0, 1]), a dataset of
            dicts with ``video``/``image`` and ``label`` (the toolkit's datasets), or a
            ``DataLoader`` over one.
        stream: the stream to read.
        pooled: mean over tokens (``(M, D)``) or keep tokens (``(M, N, D)``).
        level: ``"area"`` (each area's last block) or ``"block"`` (every block).
        device: where to compute; default: the model's device.
        progress: show a progress bar (rich) while extracting.

    Returns:
        :class:`Features` on the CPU, in float32.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval().to(device)
    total = len(data) if hasattr(data, "__len__") else None
    if isinstance(data, DataLoader):
        total = len(data.dataset)
    chunks: dict[str, list[Tensor]] = {}
    labels: list[Tensor] = []
    grid = None
    with _progress(progress, total, f"{stream} features") as advance:
        for x, y in _batches(data, batch_size, workers):
            x = x.to(device, non_blocking=True)
            feats = area_features(model, x, stream, level)
            if grid is None:
                grid = token_grid(model, stream, x)
            for name, f in feats.items():
                chunks.setdefault(name, []).append((f.mean(1) if pooled else f).float().cpu())
            if y is not None:
                labels.append(torch.as_tensor(y).cpu())
            advance(x.shape[0])
    model.train(was_training)
    if not chunks:
        raise ValueError("no items to extract features from")
    meta = {"stream": stream, "pooled": pooled, "level": level, "grid": list(grid)}
    classes = getattr(data.dataset if isinstance(data, DataLoader) else data, "classes", None)
    if classes is not None:
        meta["classes"] = list(classes)
    return Features({k: torch.cat(v) for k, v in chunks.items()}, torch.cat(labels) if labels else None, meta)


class _progress:
    """A rich progress bar, or nothing."""

    def __init__(self, enabled: bool, total: int | None, what: str) -> None:
        self.enabled, self.total, self.what = enabled, total, what

    def __enter__(self):
        import sys

        self.enabled = self.enabled and sys.stderr.isatty()  # a bar only where a person watches it
        if not self.enabled:
            return lambda n: None
        from rich.progress import Progress

        from visualpath import terminal

        self.bar = Progress(transient=True, console=terminal.console(stderr=True))
        self.bar.__enter__()
        task = self.bar.add_task(self.what, total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc):
        if self.enabled:
            self.bar.__exit__(*exc)
        return False
