"""VideoMAE weights in and out of our encoders: Hugging Face and the official release.

Our :class:`~visualpath.classifier.Encoder` keeps timm's block names (``blocks.N.attn.qkv``,
``norm1``, ``mlp.fc1`` ...) and ``embed.proj`` for the tube embedding. Two VideoMAE
spellings map onto it:

- Hugging Face ``VideoMAEModel`` / ``VideoMAEForPreTraining`` / ``VideoMAEForVideoClassification``
  (``[videomae.]embeddings.patch_embeddings.projection``, ``encoder.layer.N.attention.
  attention.{query,key,value}``, ``layernorm_before`` ...): separate q/k/v projections with
  biases on the query and value only;
- the official VideoMAE checkpoints (``model``/``module`` wrappers, ``encoder.`` or
  ``backbone.`` prefixes, ``blocks.N.attn.qkv.weight`` with ``q_bias`` and ``v_bias``).

In both the key projection has no bias, so ours is exported only when it is zero (as it is
after import). Position embeddings are the fixed sinusoid table in all three, so none are
copied. Decoder and head weights are reported as ignored, never silently dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor, nn

__all__ = ["LoadReport", "videomae_to_encoder", "encoder_to_videomae", "load_videomae", "read_state_dict",
           "load_videomae_into_stream"]

_HF_BLOCK = {
    "layernorm_before": "norm1",
    "layernorm_after": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}


@dataclass
class LoadReport:
    """What a load did: keys loaded into the model, ignored from the file, left as initialised."""

    loaded: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"loaded {len(self.loaded)} tensors; ignored {len(self.ignored)} from the file"
                f"{' (' + ', '.join(self.ignored[:5]) + (' ...' if len(self.ignored) > 5 else '') + ')' if self.ignored else ''}"
                f"; {len(self.fresh)} initialised fresh{' (' + ', '.join(self.fresh[:5]) + ')' if self.fresh else ''}")


def _unwrap(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    for wrapper in ("model", "module", "state_dict"):
        if wrapper in state and isinstance(state[wrapper], Mapping):
            state = state[wrapper]
    return dict(state)


def videomae_to_encoder(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Convert a VideoMAE state dict (either spelling) to our encoder's keys.

    Returns ``(converted, ignored)``: the encoder's tensors and the file keys that are not
    encoder weights (decoder, head, mask token, fc_norm ...).
    """
    state = _unwrap(state)
    out: dict[str, Tensor] = {}
    ignored: list[str] = []
    qkv: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        k = re.sub(r"^(module\.|model\.)+", "", key)
        k = re.sub(r"^(videomae\.|encoder\.(?=patch_embed|blocks)|backbone\.)", "", k)
        if k.startswith("embeddings.patch_embeddings.projection."):
            out["embed.proj." + k.rsplit(".", 1)[1]] = value
            continue
        if k.startswith("patch_embed.proj."):
            out["embed.proj." + k.rsplit(".", 1)[1]] = value
            continue
        m = re.match(r"encoder\.layer\.(\d+)\.(.+)$", k)
        if m:
            i, rest = int(m.group(1)), m.group(2)
            a = re.match(r"attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
            if a:
                qkv.setdefault(i, {})[f"{a.group(1)}.{a.group(2)}"] = value
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
    return out, ignored


def load_videomae(encoder: nn.Module, state: Mapping[str, Tensor]) -> LoadReport:
    """Load a VideoMAE state dict into ``encoder`` (our :class:`Encoder`), reporting what it did.

    Raises:
        ValueError: naming the key and both shapes when a tensor does not fit.
    """
    converted, ignored = videomae_to_encoder(state)
    own = encoder.state_dict()
    for key, value in converted.items():
        if key not in own:
            ignored.append(key)
        elif own[key].shape != value.shape:
            raise ValueError(f"{key}: the checkpoint holds shape {tuple(value.shape)}, the encoder expects "
                             f"{tuple(own[key].shape)}")
    usable = {k: v for k, v in converted.items() if k in own}
    encoder.load_state_dict(usable, strict=False)
    return LoadReport(loaded=sorted(usable), ignored=sorted(ignored),
                      fresh=sorted(k for k in own if k not in usable))


def encoder_to_videomae(encoder: nn.Module) -> dict[str, Tensor]:
    """Our video encoder as a Hugging Face ``VideoMAEModel`` state dict.

    Raises:
        ValueError: when a block's key-projection bias is not zero (VideoMAE has none).
    """
    out: dict[str, Tensor] = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("embed.proj."):
            out["embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
            continue
        m = re.match(r"blocks\.(\d+)\.(.+)$", key)
        if not m:
            continue
        i, rest = m.group(1), m.group(2)
        prefix = f"encoder.layer.{i}."
        if rest == "attn.qkv.weight":
            for name, part in zip(("query", "key", "value"), value.chunk(3)):
                out[prefix + f"attention.attention.{name}.weight"] = part
        elif rest == "attn.qkv.bias":
            q, k, v = value.chunk(3)
            if k.abs().max() > 0:
                raise ValueError(f"{key}: the key projection has a non-zero bias, which VideoMAE cannot hold")
            out[prefix + "attention.attention.query.bias"] = q
            out[prefix + "attention.attention.value.bias"] = v
        else:
            for theirs, ours in _HF_BLOCK.items():
                if rest.startswith(ours + "."):
                    out[prefix + theirs + rest[len(ours):]] = value
                    break
    return out


def read_state_dict(path) -> dict[str, Tensor]:
    """Tensors of a checkpoint file: ``.safetensors``, or a torch file read with
    ``weights_only=True`` (no pickled code runs).

    Raises:
        ValueError: naming the file when it is missing or not a checkpoint.
    """
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise ValueError(f"{path} is not a readable safetensors checkpoint ({err})") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"{path} is not a PyTorch checkpoint that loads with weights_only=True "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return _unwrap(state)


def load_videomae_into_stream(model: nn.Module, stream: str, state: Mapping[str, Tensor]) -> LoadReport:
    """Load a VideoMAE encoder into one video stream of a built pathway (its embedding and
    blocks, shared ones included), e.g. to pretrain BIMM's dorsal stream from VideoMAE."""
    from visualpath.classifier import Encoder

    core = model.module if hasattr(model, "module") else model
    encoder = Encoder.from_pathway(core, stream)
    report = load_videomae(encoder, state)
    core.streams[stream].embed.load_state_dict(encoder.embed.state_dict())
    for mine, loaded in zip(core.blocks(stream), encoder.blocks):
        mine.load_state_dict(loaded.state_dict())
    return report
