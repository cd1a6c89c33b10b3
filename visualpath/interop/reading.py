"""Reading other libraries' weights into our encoders: VideoMAE, MAE, timm, Hugging Face and our own files.

One entry point, :func:`load_checkpoint`, takes a checkpoint file or a state dict, detects
its format and loads it into a bare :class:`~visualpath.classifier.Encoder`, one stream of a
built pathway, or (for our own pathway files) the whole pathway. Every load returns a
:class:`LoadReport`: what was loaded, what the file held that was not used (decoder, head,
mask token ...) and what the target kept from its own initialisation. A tensor of the wrong
shape is an error naming the key and both shapes; nothing is dropped silently.

Formats (:func:`detect_format`):

``"visualpath"``
    a pathway's ``model.safetensors`` (keys ``streams.*``) or a saved :class:`Encoder`.
``"huggingface-videomae"``
    ``VideoMAEModel`` / ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification``:
    ``[videomae.]embeddings.patch_embeddings.projection``, ``encoder.layer.N.attention.
    attention.{query,key,value}``, ``layernorm_before`` ...; separate q/k/v projections
    with biases on the query and value only.
``"videomae"``
    the official VideoMAE release (pretraining or finetuning): ``model``/``module``
    wrappers, ``encoder.`` or ``backbone.`` prefixes, a 3-D tube embedding
    ``patch_embed.proj``, ``blocks.N.attn.qkv.weight`` with ``q_bias`` and ``v_bias``.
``"vit"``
    image ViTs in timm's naming: timm ``vit_*_patch16_224`` and the official MAE release
    (pretraining with ``decoder_*`` keys, or finetuning with ``fc_norm``/``head``):
    ``cls_token``, a stored ``pos_embed`` of ``1 + N`` entries, ``patch_embed.proj``,
    ``blocks.N.*`` and a final ``norm``.

Our encoders keep timm's block names, so blocks map one-to-one. The pathway's streams use
fixed sin-cos positions and neither a class token nor a final norm: loading a ``"vit"``
file into a stream keeps the stream's fixed table (a stored table equal to it, as in MAE, is
noted as such; a learned one is reported as unused) and reports the class token and norm as
unused. :meth:`Encoder.from_checkpoint <encoder_from_checkpoint>` instead builds a bare
encoder with exactly the checkpoint's parts. A stored table of another grid is resized per
frame by bicubic interpolation (:func:`~visualpath.classifier.resize_positions`).

Writing those formats is :mod:`visualpath.interop.writing`.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from visualpath.classifier import Encoder, resize_positions
from visualpath.rundir import load_model, load_state, pretrained_stage, read_weights
from visualpath.tokens import Layout, position_table
from visualpath.vit import ViTSpec

__all__ = [
    "FORMATS",
    "LoadReport",
    "detect_format",
    "read_state_dict",
    "to_encoder_keys",
    "load_checkpoint",
    "load_encoder",
    "encoder_from_checkpoint",
    "encoder_from_run",
]

log = logging.getLogger(__name__)

FORMATS = ("visualpath", "huggingface-videomae", "videomae", "vit")

_HF_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}

# File keys of encoder weights (blocks, attention, MLP, embeddings, norms), not decoders or heads.
_ENCODER_LIKE = re.compile(r"^(?!.*(decoder|classifier|head|fc_norm|mask_token))"
                           r".*(blocks?\.|layer\.\d|attention|attn|mlp|patch_embed|embeddings|norm)")

# Heads of the standard ViT widths (Ti, S, B, L, H), for files that do not record them.
_STANDARD_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


@dataclass
class LoadReport:
    """What a load did.

    Attributes:
        format: the detected checkpoint format.
        loaded: target keys filled from the file.
        ignored: file keys not used (decoder, head, mask token, or parts the target lacks).
        fresh: target keys left as initialised.
        notes: decisions worth reading (inflated embeddings, resized or equal tables).
    """

    format: str = ""
    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What may have been lost: encoder weights left fresh, or file keys that look like
        encoder weights and were not used."""
        out = []
        if self.fresh:
            out.append(f"{len(self.fresh)} encoder tensors were not in the file and keep their initialisation "
                       f"({', '.join(self.fresh[:4])}{' ...' if len(self.fresh) > 4 else ''})")
        lost = [k for k in self.ignored if _ENCODER_LIKE.search(k)]
        if lost:
            out.append(f"{len(lost)} file tensors that look like encoder weights were not used "
                       f"({', '.join(lost[:4])}{' ...' if len(lost) > 4 else ''})")
        return out

    def __str__(self) -> str:
        def some(keys, n=5):
            return f" ({', '.join(keys[:n])}{' ...' if len(keys) > n else ''})" if keys else ""

        text = (f"{self.format + ': ' if self.format else ''}loaded {len(self.loaded)} tensors; "
                f"ignored {len(self.ignored)} from the file{some(self.ignored)}; "
                f"{len(self.fresh)} initialised fresh{some(self.fresh)}")
        text += "".join(f"; {note}" for note in self.notes)
        return text + "".join(f"; WARNING: {w}" for w in self.warnings)


# --------------------------------------------------------------------------- reading


def _unwrap(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    for wrapper in ("model", "module", "state_dict"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    return dict(state)


def read_state_dict(path) -> dict[str, Tensor]:
    """Tensors of a checkpoint file: ``.safetensors``, or a torch file read with
    ``weights_only=True`` (no pickled code runs). ``model``/``module``/``state_dict``
    wrappers are removed.

    A recipe's run directory stands for its trained pathway: its joint checkpoint, else its
    ventral one. A run's ``model.safetensors`` is checked against the SHA-256 its checkpoint
    recorded (:func:`visualpath.rundir.read_weights`).

    Raises:
        ValueError: naming the file when it is missing or not a checkpoint
            (:class:`~visualpath.rundir.DamagedWeights` when a run's weights were damaged).
    """
    path = Path(path)
    if path.is_dir():
        try:
            path = path / pretrained_stage(path) / "model.safetensors"
        except ValueError:
            raise ValueError(f"{path} is a folder without a joint/ or ventral/model.safetensors (not a run directory)"
                             ) from None
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    if path.name == "model.safetensors":

        return read_weights(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"{path} is not a readable safetensors checkpoint ({err})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
        raise ValueError(f"{path} is not a PyTorch checkpoint that loads with weights_only=True: "
                         f"{type(err).__name__}: {reason}") from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return _unwrap(state)


def _strip(key: str) -> str:
    key = re.sub(r"^(module\.|model\.)+", "", key)
    return re.sub(r"^(videomae\.|encoder\.(?=patch_embed|blocks|norm\.)|backbone\.)", "", key)


def detect_format(state: Mapping[str, Tensor]) -> str:
    """Name the format of a state dict: one of :data:`FORMATS`.

    Raises:
        ValueError: when the keys match none of them (the message shows a few keys).
    """
    state = _unwrap(state)
    keys = [_strip(k) for k in state]
    if any(k.startswith("streams.") for k in state) or "embed.proj.weight" in keys:
        return "visualpath"
    if any(k.startswith("embeddings.patch_embeddings.projection.") for k in keys):
        return "huggingface-videomae"
    embed = state.get(next((k for k in state if _strip(k) == "patch_embed.proj.weight"), ""), None)
    if embed is not None:
        return "videomae" if embed.ndim == 5 else "vit"
    sample = ", ".join(list(state)[:6])
    raise ValueError(f"unrecognised checkpoint format (keys: {sample}{' ...' if len(state) > 6 else ''}); "
                     f"expected one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- conversion


def to_encoder_keys(state: Mapping[str, Tensor], fmt: str | None = None
                    ) -> tuple[dict[str, Tensor], list[str], str]:
    """Convert a state dict to our :class:`Encoder`'s keys.

    Returns ``(converted, ignored, format)``: the encoder's tensors (``embed.proj.*``,
    ``blocks.*``, and where present ``cls_token``, ``pos_embed``, ``norm.*``), the file keys
    that are not encoder weights, and the detected format.
    """
    state = _unwrap(state)
    fmt = fmt or detect_format(state)
    if fmt == "visualpath" and any(k.startswith("streams.") for k in state):
        raise ValueError("a pathway checkpoint holds several streams; load it with load_checkpoint(pathway, ...) "
                         "or pick one with load_checkpoint(..., stream=NAME)")
    out: dict[str, Tensor] = {}
    ignored: list[str] = []
    qkv: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        k = _strip(key)
        if k.startswith(("embeddings.patch_embeddings.projection.", "patch_embed.proj.", "embed.proj.")):
            out["embed.proj." + k.rsplit(".", 1)[1]] = value
            continue
        if k in ("cls_token", "pos_embed") or re.fullmatch(r"norm\.(weight|bias)", k):
            out[k] = value
            continue
        if re.fullmatch(r"layernorm\.(weight|bias)", k):  # Hugging Face, use_mean_pooling=False
            out["norm." + k.rsplit(".", 1)[1]] = value
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)$", k)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            a = re.match(r"attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
            if a:
                qkv.setdefault(i, {})[f"{a.group(1)}.{a.group(2)}"] = value
                continue
            a = re.match(r"attention\.attention\.(q_bias|v_bias)$", rest)  # as save_pretrained writes them
            if a:
                qkv.setdefault(i, {})["query.bias" if a.group(1) == "q_bias" else "value.bias"] = value
                continue
            for theirs, ours in _HF_BLOCK.items():
                if rest.startswith(theirs + "."):
                    out[f"blocks.{i}.{ours}.{rest[len(theirs) + 1:]}"] = value
                    break
            else:
                ignored.append(key)
            continue
        m = re.match(r"blocks\.(\d+)\.attn\.(q_bias|v_bias)$", k)
        if m:
            name = {"q_bias": "query.bias", "v_bias": "value.bias"}[m.group(2)]
            qkv.setdefault(int(m.group(1)), {})[name] = value
            continue
        m = re.match(r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$", k)
        if m:
            out[f"blocks.{m.group(1)}.{m.group(2)}.{m.group(3)}"] = value
            continue
        ignored.append(key)
    for i, parts in qkv.items():
        if "query.weight" in parts:  # Hugging Face: three projections
            out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([parts[f"{n}.weight"] for n in ("query", "key", "value")])
        q = parts.get("query.bias")
        if q is not None:
            k_bias = parts.get("key.bias", torch.zeros_like(q))
            out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([q, k_bias, parts.get("value.bias", torch.zeros_like(q))])
    return out, sorted(ignored), fmt


def load_encoder(encoder: Encoder, state: Mapping[str, Tensor], fmt: str | None = None) -> LoadReport:
    """Load a checkpoint's encoder weights into ``encoder``; see the module docstring.

    Raises:
        ValueError: naming the key and both shapes when a tensor does not fit.
    """
    converted, ignored, fmt = to_encoder_keys(state, fmt)
    report = LoadReport(format=fmt, ignored=list(ignored))
    own = encoder.state_dict()
    usable: dict[str, Tensor] = {}
    for key, value in converted.items():
        if key == "pos_embed":
            table = _load_table(encoder, value, "cls_token" in converted, report)
            if table is not None:
                usable[key] = table
            continue
        if key not in own:
            report.ignored.append(key)
            continue
        if key == "embed.proj.weight" and value.ndim == 4 and own[key].ndim == 5:
            t = own[key].shape[2]
            value = value.unsqueeze(2).repeat(1, 1, t, 1, 1) / t
            report.notes.append(f"2-D patch embedding inflated over {t} frames (divided by {t})")
        elif key == "embed.proj.weight" and value.ndim == 5 and own[key].ndim == 4:
            raise ValueError("embed.proj.weight: a video checkpoint's tube embedding "
                             f"{tuple(value.shape)} cannot initialise an image encoder {tuple(own[key].shape)}")
        if own[key].shape != value.shape:
            raise ValueError(f"{key}: the checkpoint holds shape {tuple(value.shape)}, the encoder expects "
                             f"{tuple(own[key].shape)}")
        usable[key] = value
    encoder.load_state_dict(usable, strict=False)
    report.loaded = sorted(usable)
    report.ignored = sorted(report.ignored)
    report.fresh = sorted(k for k in own if k not in usable)
    for warning in report.warnings:
        log.warning("loading a %s checkpoint: %s", fmt, warning)
    return report


def _split_table(table: Tensor, has_cls: bool, frames: int, video: bool
                 ) -> tuple[Tensor | None, Tensor, tuple[int, ...]]:
    """Split a stored table ``(1, [1 +] N, D)`` into the class token's entry (or None), the
    patch entries and their grid: ``frames`` square frames (MAE and VideoMAE store square
    grids). An entry for the class token is recognised by the count: ``1 +`` a grid."""
    table = table.reshape(1, -1, table.shape[-1])
    n = table.shape[1]

    def grid(count: int) -> tuple[int, ...] | None:
        side = round((count / frames) ** 0.5)
        if side * side * frames != count:
            return None
        return (frames, side, side) if video else (side, side)

    if has_cls and grid(n - 1) is not None:
        return table[:, :1], table[:, 1:], grid(n - 1)
    if grid(n) is not None:
        return None, table, grid(n)
    raise ValueError(f"pos_embed: {n} entries do not form {frames} square frame(s) of tokens"
                     f"{' (after a class-token entry)' if has_cls else ''}")


def _fixed_match(table: Tensor, kind: str, grid: tuple[int, ...]) -> bool:
    """Whether a stored table equals our fixed sin-cos table of ``kind`` on ``grid``."""
    fixed = position_table(kind, grid, table.shape[-1])
    return fixed.shape == table[0].shape and torch.allclose(table[0].float(), fixed, atol=1e-4)


def _load_table(encoder: Encoder, value: Tensor, has_cls: bool, report: LoadReport) -> Tensor | None:
    """The stored position table as ``encoder.pos_embed`` (resized, class entry arranged), or
    None with a note when the encoder keeps fixed positions."""
    video = encoder.layout.is_video
    if encoder.pos_embed is None:
        if video:  # VideoMAE stores no class entry; its flat table depends on the count only
            table = value.reshape(1, -1, value.shape[-1])
            equal = encoder.position_kind == "flat" and _fixed_match(table, "flat", (table.shape[1], 1, 1))
        else:
            _, table, grid = _split_table(value, has_cls, 1, video=False)
            equal = _fixed_match(table, encoder.position_kind, grid)
        report.ignored.append("pos_embed")
        report.notes.append(f"pos_embed equals the fixed {encoder.position_kind} sin-cos table" if equal else
                            f"pos_embed is a learned table; the target keeps its fixed {encoder.position_kind} "
                            "sin-cos positions")
        return None
    frames = encoder.grid[0] if video else 1
    cls_pos, table, old = _split_table(value, has_cls, frames, video)
    if table.shape[-1] != encoder.spec.width:
        raise ValueError(f"pos_embed: the checkpoint holds width {table.shape[-1]}, the encoder expects "
                         f"{encoder.spec.width}")
    if old != encoder.grid:
        table = resize_positions(table, old, encoder.grid)
        report.notes.append(f"pos_embed resized from grid {old} to {encoder.grid} (bicubic per frame)")
    if encoder.prefix:
        if cls_pos is None:
            cls_pos = torch.zeros_like(table[:, :1])
            report.notes.append("the class token's position starts at zero (the file has none)")
        table = torch.cat([cls_pos, table], dim=1)
    elif cls_pos is not None:
        report.notes.append("the class token's position is not used (the encoder has no class token)")
    return table


def load_checkpoint(target: nn.Module, source, stream: str | None = None) -> LoadReport:
    """Load a checkpoint file or state dict of any supported format into ``target``.

    Args:
        target: an :class:`Encoder`, or a built pathway (``PathwayModel``, DDP-wrapped or not).
        source: a path (``.safetensors`` or a torch file) or a state dict.
        stream: with a pathway target, the stream to load a single encoder into; defaults
            to the pathway's only stream of the file's modality. Our own pathway files
            always load whole (their keys name the streams).

    Raises:
        ValueError: on an unknown format, a missing stream or a tensor that does not fit.
    """
    state = read_state_dict(source) if isinstance(source, (str, Path)) else _unwrap(source)
    fmt = detect_format(state)
    if isinstance(target, Encoder):
        return load_encoder(target, state, fmt)
    core = target.module if hasattr(target, "module") else target
    if not hasattr(core, "streams"):
        raise TypeError(f"load_checkpoint needs an Encoder or a pathway model, got {type(target).__name__}")
    if fmt == "visualpath" and any(k.startswith("streams.") for k in state):
        result = load_state(core, state, source if isinstance(source, (str, Path)) else "the state dict", strict=False)
        return LoadReport(format=fmt, loaded=sorted(k for k in state if k not in result.unexpected_keys),
                          ignored=sorted(result.unexpected_keys), fresh=sorted(result.missing_keys))
    stream = stream or _default_stream(core, fmt)
    if stream not in core.streams:
        raise ValueError(f"unknown stream {stream!r}; the pathway has {list(core.streams)}")
    encoder = Encoder.from_pathway(core, stream)
    report = load_encoder(encoder, state, fmt)
    core.streams[stream].embed.load_state_dict(encoder.embed.state_dict())
    for mine, loaded in zip(core.blocks(stream), encoder.blocks):
        mine.load_state_dict(loaded.state_dict())
    report.notes.append(f"into stream {stream!r}; its decoders keep their initialisation")
    return report


def _default_stream(core, fmt: str) -> str:
    video = fmt in ("videomae", "huggingface-videomae")
    modality = "video" if video else "image"
    names = [s.name for s in core.pathway.streams if s.modality == modality]
    if len(names) != 1:
        raise ValueError(f"a {fmt} checkpoint holds one {modality} encoder but the pathway has "
                         f"{len(names)} {modality} streams ({names}); pass stream=NAME")
    return names[0]


def encoder_from_run(run_dir, stream: str, drop_path: float | None = None, trust_code: bool = False) -> Encoder:
    """One stream's encoder of a recipe's run directory, rebuilt from the graph it stored
    (``pathway.json``; see :mod:`visualpath.rundir`), with its trained weights (verified).
    ``trust_code``: run code the graph needs that you have not trusted (:mod:`visualpath.trust`)."""

    model = load_model(run_dir, trust_code=trust_code)
    if stream not in model.streams:
        raise ValueError(f"the run {run_dir} has the streams {list(model.streams)}, not {stream!r}")
    return Encoder.from_pathway(model, stream, drop_path=drop_path)


def encoder_from_checkpoint(source, heads: int | None = None, drop_path: float = 0.0,
                            grid: tuple[int, ...] | None = None) -> tuple[Encoder, LoadReport]:
    """Build an :class:`Encoder` shaped like a single-encoder checkpoint and load it.

    Width, depth, patch and tube sizes, class token, stored position table and final norm
    are read off the tensors. Heads are not stored in any format: pass ``heads`` unless the
    width is a standard one (192, 384, 768, 1024, 1280). ``grid`` resizes a stored table to
    another token grid (e.g. ``(14, 14)`` -> ``(28, 28)`` for 448-pixel inputs).
    """
    state = read_state_dict(source) if isinstance(source, (str, Path)) else _unwrap(source)
    converted, _, fmt = to_encoder_keys(state)
    proj = converted.get("embed.proj.weight")
    if proj is None:
        raise ValueError(f"the {fmt} checkpoint has no patch embedding")
    width, channels = proj.shape[0], proj.shape[1]
    depth = 1 + max(int(k.split(".")[1]) for k in converted if k.startswith("blocks."))
    heads = heads or _STANDARD_HEADS.get(width)
    if heads is None:
        raise ValueError(f"width {width} is not a standard ViT width; pass heads=")
    fc1 = converted["blocks.0.mlp.fc1.weight"]
    spec = ViTSpec(width=width, depth=depth, heads=heads, mlp_ratio=fc1.shape[0] / width,
                   qkv_bias="blocks.0.attn.qkv.bias" in converted, drop_path=drop_path, patch=proj.shape[-1],
                   tube=proj.shape[2] if proj.ndim == 5 else 2, channels=channels)
    layout = Layout("video", patch=spec.patch, tube=spec.tube, channels=channels) if proj.ndim == 5 \
        else Layout("image", patch=spec.patch, channels=channels)
    has_cls = "cls_token" in converted
    kind, stored_grid = ("flat" if layout.is_video else "grid"), None
    table = converted.get("pos_embed")
    if table is not None:
        frames = 1
        if layout.is_video:  # VideoMAE's fixed table depends on the token count only
            if _fixed_match(table.reshape(1, -1, width), "flat", (table.reshape(-1, width).shape[0], 1, 1)):
                table = None
            else:
                if grid is None:
                    raise ValueError("the video checkpoint stores a learned position table; pass grid=(t, h, w), "
                                     "the token grid it was trained on or the one to resize it to")
                frames = grid[0]
        if table is not None:
            _, patches, stored_grid = _split_table(table, has_cls, frames, layout.is_video)
            if not layout.is_video and _fixed_match(patches, "grid", stored_grid):
                stored_grid = None  # MAE stores its fixed table: keep it fixed, at any input size
            else:
                kind = "learned"
    encoder = Encoder(spec, layout, kind, class_token=has_cls, final_norm="norm.weight" in converted,
                      grid=(grid or stored_grid) if kind == "learned" else None)
    return encoder, load_encoder(encoder, state)
