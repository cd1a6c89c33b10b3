"""Writing our encoders in other libraries' formats: Hugging Face ``VideoMAEModel`` /
``VideoMAEForVideoClassification`` folders (:func:`export_videomae`, with the processor
configuration that reproduces our sampling) for video encoders, and timm
``VisionTransformer`` files (:func:`export_timm`, :func:`timm_kwargs`) for image ones.
Reading them back is :mod:`visualpath.interop.reading`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import Tensor, nn

from visualpath.atomic import file_mode
from visualpath.classifier import Classifier, Encoder
from visualpath.interop.reading import _HF_BLOCK
from visualpath.tokens import IMAGENET_MEAN, IMAGENET_STD, position_table

__all__ = [
    "encoder_to_videomae",
    "encoder_to_timm",
    "timm_kwargs",
    "export_videomae",
    "video_processor",
    "export_timm",
]

def encoder_to_videomae(encoder: nn.Module, notes: list[str] | None = None) -> dict[str, Tensor]:
    """Our video encoder as a Hugging Face ``VideoMAEModel`` state dict.

    VideoMAE has no key-projection bias. Attention is invariant to it (it adds the same
    constant to every logit of a query), so training moves it only by rounding noise; it is
    dropped, exactly, and ``notes`` (when given) says how large it was.

    Raises:
        ValueError: the encoder has parts VideoMAE cannot hold (class token, learned positions).
    """
    if getattr(encoder, "cls_token", None) is not None or getattr(encoder, "pos_embed", None) is not None:
        raise ValueError("VideoMAE has no class token and fixed positions; this encoder has "
                         f"{'a class token' if encoder.cls_token is not None else 'a learned position table'}")
    out: dict[str, Tensor] = {}
    for key, value in encoder.state_dict().items():
        if key.startswith("embed.proj."):
            out["embeddings.patch_embeddings.projection." + key.rsplit(".", 1)[1]] = value
            continue
        if key.startswith("norm."):
            out["layernorm." + key.rsplit(".", 1)[1]] = value
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
            largest = float(k.abs().max())
            if largest > 0 and notes is not None:
                notes.append(f"block {i}: dropped the key-projection bias (max |b| = {largest:.2e}); attention "
                             "does not depend on it")
            out[prefix + "attention.attention.query.bias"] = q
            out[prefix + "attention.attention.value.bias"] = v
        else:
            for theirs, ours in _HF_BLOCK.items():
                if rest.startswith(ours + "."):
                    out[prefix + theirs + rest[len(ours):]] = value
                    break
    return out


def timm_kwargs(encoder: Encoder, img_size: int | tuple[int, int] = 224) -> dict:
    """Arguments of timm's ``VisionTransformer`` that hold ``encoder`` exactly (no head).

    ``timm.models.vision_transformer.VisionTransformer(**timm_kwargs(enc))`` then loads
    :func:`encoder_to_timm` with ``strict=True``; its ``forward_features`` equals ours.
    """
    if encoder.layout.is_video:
        raise ValueError("timm's VisionTransformer is an image model; export video encoders with "
                         "encoder_to_videomae")
    spec = encoder.spec
    if encoder.grid is not None:
        img_size = (encoder.grid[0] * spec.patch, encoder.grid[1] * spec.patch)
    return dict(img_size=img_size, patch_size=spec.patch, in_chans=spec.channels, embed_dim=spec.width,
                depth=spec.depth, num_heads=spec.heads, mlp_ratio=spec.mlp_ratio, qkv_bias=spec.qkv_bias,
                class_token=encoder.cls_token is not None, global_pool="token" if encoder.cls_token is not None
                else "avg", final_norm=encoder.norm is not None, fc_norm=False, num_classes=0)


def encoder_to_timm(encoder: Encoder, img_size: int | tuple[int, int] = 224) -> dict[str, Tensor]:
    """Our image encoder as a timm ``VisionTransformer`` state dict (see :func:`timm_kwargs`).

    A fixed sin-cos encoder is written with its table for ``img_size`` (timm stores one);
    a class token, when present, gets MAE's zero position.
    """
    kwargs = timm_kwargs(encoder, img_size)
    size = kwargs["img_size"]
    size = (size, size) if isinstance(size, int) else size
    grid = (size[0] // encoder.spec.patch, size[1] // encoder.spec.patch)
    out: dict[str, Tensor] = {}
    state = encoder.state_dict()
    if encoder.pos_embed is not None:
        out["pos_embed"] = state["pos_embed"]
    else:
        table = position_table(encoder.position_kind, grid, encoder.spec.width)[None]
        if encoder.cls_token is not None:
            table = torch.cat([torch.zeros_like(table[:, :1]), table], dim=1)
        out["pos_embed"] = table
    for key, value in state.items():
        if key == "pos_embed":
            continue
        out[key.replace("embed.proj.", "patch_embed.proj.")] = value
    return out


# --------------------------------------------------------------------------- export directories


def export_videomae(model: nn.Module, out_dir: str | Path, *, image_size: int, num_frames: int,
                    classes: list[str] | None = None, stride: int | None = None) -> list[str]:
    """Write a directory that Hugging Face ``from_pretrained`` loads directly.

    An :class:`Encoder` becomes ``VideoMAEModel``; a mean-pooling :class:`Classifier` becomes
    ``VideoMAEForVideoClassification``, with ``id2label`` from ``classes``. Writes
    ``config.json`` (through ``transformers.VideoMAEConfig``; ``visualpath_sampling`` records
    the clip the model was trained on: ``num_frames`` frames, every ``stride``-th),
    ``model.safetensors`` and ``preprocessor_config.json``, a ``VideoMAEImageProcessor``
    with the test-time transform (shorter side resized to ``image_size``, centre crop,
    ImageNet normalisation; decision E1), so ``AutoImageProcessor.from_pretrained`` gives the
    model's input from raw frames.

    Returns:
        Notes on what changed on the way (a dropped key bias, the head's norm epsilon).

    Raises:
        ValueError: the model has parts VideoMAE cannot hold (a class token, learned positions,
            an image encoder), or ``classes`` does not match the head.
    """
    from safetensors.torch import save_file

    try:
        from transformers import VideoMAEConfig
    except ImportError as err:
        raise ValueError(f"exporting to Hugging Face needs the transformers package ({err})") from None

    classifier = model if isinstance(model, Classifier) else None
    encoder = classifier.encoder if classifier is not None else model
    if not encoder.layout.is_video:
        raise ValueError("VideoMAE is a video model; export image encoders with export_timm")
    notes: list[str] = []
    state = encoder_to_videomae(encoder, notes)
    spec = encoder.spec
    config = dict(image_size=image_size, patch_size=spec.patch, num_channels=spec.channels, num_frames=num_frames,
                  tubelet_size=spec.tube, hidden_size=spec.width, num_hidden_layers=spec.depth,
                  num_attention_heads=spec.heads, intermediate_size=int(spec.width * spec.mlp_ratio),
                  hidden_act="gelu", layer_norm_eps=spec.norm_eps, qkv_bias=spec.qkv_bias,
                  use_mean_pooling=encoder.norm is None)
    if classifier is not None:
        if classifier.pool != "mean" or classifier.cls_token is not None:
            raise ValueError("VideoMAEForVideoClassification pools by the mean; this classifier pools a class token")
        n = classifier.head.out_features
        classes = list(classes) if classes is not None else [str(i) for i in range(n)]
        if len(classes) != n:
            raise ValueError(f"{len(classes)} class names for a head of {n} classes")
        state = {f"videomae.{k}": v for k, v in state.items()}
        state.update({"fc_norm.weight": classifier.fc_norm.weight, "fc_norm.bias": classifier.fc_norm.bias,
                      "classifier.weight": classifier.head.weight, "classifier.bias": classifier.head.bias})
        config.update(id2label=dict(enumerate(classes)), label2id={c: i for i, c in enumerate(classes)},
                      architectures=["VideoMAEForVideoClassification"])
        if classifier.fc_norm.eps != 1e-5:
            notes.append(f"Hugging Face's fc_norm uses eps 1e-5 where ours used {classifier.fc_norm.eps:g}: logits "
                         "differ by rounding")
    else:
        config["architectures"] = ["VideoMAEModel"]
    if stride is not None:
        config["visualpath_sampling"] = {"num_frames": num_frames, "stride": stride, "clip": "centre of the video"}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    VideoMAEConfig(**config).save_pretrained(str(out))
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    _readable_by_all(out / "model.safetensors")
    video_processor(image_size).save_pretrained(str(out))
    return notes


def video_processor(image_size: int):
    """The ``transformers.VideoMAEImageProcessor`` of our test-time transform: the shorter
    side resized to ``image_size`` (bilinear), the centre ``image_size`` square, ``/ 255``,
    ImageNet mean and std. On frames already at ``image_size`` it gives our input exactly;
    a resize differs from ours (torchvision's antialiased bilinear) by rounding."""
    from transformers import VideoMAEImageProcessor


    return VideoMAEImageProcessor(do_resize=True, size={"shortest_edge": image_size}, resample=2,
                                  do_center_crop=True, crop_size={"height": image_size, "width": image_size},
                                  do_rescale=True, rescale_factor=1 / 255, do_normalize=True,
                                  image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD))


def _readable_by_all(path: Path) -> None:
    """safetensors writes 0600; give the file the mode any other file gets under the umask."""

    os.chmod(path, file_mode())


def export_timm(encoder: Encoder, out_dir: str | Path, img_size: int | tuple[int, int] = 224,
                classes: list[str] | None = None) -> None:
    """Write an image encoder as timm's ``VisionTransformer``: ``model.safetensors`` (strict
    for ``VisionTransformer(**kwargs)``) and ``config.json`` holding ``{"architecture":
    "vit", "model_args": kwargs}`` (and ``label_names`` when given)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = timm_kwargs(encoder, img_size)
    save_file({k: v.detach().contiguous().cpu() for k, v in encoder_to_timm(encoder, img_size).items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    _readable_by_all(out / "model.safetensors")
    meta = {"architecture": "vit", "model_args": {k: list(v) if isinstance(v, tuple) else v
                                                 for k, v in kwargs.items()}}
    if classes is not None:
        meta["label_names"] = list(classes)
    (out / "config.json").write_text(json.dumps(meta, indent=2))
