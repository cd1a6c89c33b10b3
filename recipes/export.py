"""Export a run's model for Hugging Face or timm users.

    python -m recipes.export RUN_DIR OUT_DIR                       # the finetuned classifier, if any
    python -m recipes.export RUN_DIR OUT_DIR --what encoder --stream dorsal
    python -m recipes.export RUN_DIR OUT_DIR --what encoder --stream ventral   # timm

A video stream becomes a directory that ``transformers.VideoMAEModel.from_pretrained`` (an
encoder) or ``VideoMAEForVideoClassification.from_pretrained`` (a finetuned run, with its class
names as ``id2label``) loads directly. An image stream becomes timm's ``VisionTransformer``:
``model.safetensors`` and ``config.json`` with its ``model_args``. What changed on the way (a
dropped key bias) is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from visualpath.errors import no_space, one_line
from visualpath.trust import TRUST_HELP

__all__ = ["export_run", "main"]


def export_run(run_dir: str | Path, out_dir: str | Path, what: str = "classifier", stream: str | None = None,
               trust_code: bool = False) -> list[str]:
    """Export ``run_dir``'s finetuned classifier or one stream's pretrained encoder; returns notes.
    ``trust_code``: run code the run's graph needs that you have not trusted (:mod:`visualpath.trust`)."""
    from analysis.features import load_classifier, load_run
    from visualpath.classifier import Encoder
    from visualpath.interop import export_timm, export_videomae
    from visualpath.rundir import run_config

    run_dir = Path(run_dir)
    saved = run_config(run_dir)
    data = saved.get("data", {})
    size, frames, stride = data.get("size", 224), data.get("frames", 16), data.get("stride", 4)
    classes = None
    if what == "classifier":
        model, classes = load_classifier(run_dir, trust_code=trust_code)  # says what is missing (--what encoder exports without it)
        encoder = model.encoder
    else:
        pathway_model = load_run(run_dir, trust_code=trust_code)
        videos = [s.name for s in pathway_model.pathway.streams if s.modality == "video"]
        stream = stream or (videos[0] if videos else pathway_model.pathway.streams[0].name)
        if stream not in pathway_model.streams:
            raise ValueError(f"{run_dir} has the streams {list(pathway_model.streams)}, not {stream!r}")
        model = encoder = Encoder.from_pathway(pathway_model, stream)
        classes = None
    if encoder.layout.is_video:
        return export_videomae(model, out_dir, image_size=size, num_frames=frames, classes=classes, stride=stride)
    if what == "classifier":
        raise ValueError("an image classifier exports as its encoder: --what encoder (timm)")
    export_timm(encoder, out_dir, img_size=size)
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recipes.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a recipe's run directory (config.json, pathway.json and its stages)")
    parser.add_argument("out_dir", help="the folder to write: a Hugging Face model directory (a video stream) or "
                                        "timm's model.safetensors and config.json (an image stream)")
    parser.add_argument("--what", choices=["classifier", "encoder"], default="classifier",
                        help="classifier: the finetuned model with its class names as id2label (needs the run's "
                             "finetune stage); encoder: one stream's pretrained encoder (default: %(default)s)")
    parser.add_argument("--stream", default=None,
                        help="the stream whose encoder to export with --what encoder (default: the graph's first "
                             "video stream, else its first stream)")
    parser.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    args = parser.parse_args(argv)
    try:
        notes = export_run(args.run_dir, args.out_dir, args.what, args.stream, trust_code=args.trust_code)
    except (ValueError, OSError) as err:
        full = no_space(err)
        print(f"error: {full + ': free some space and run the same command again' if full else one_line(err)}",
              file=sys.stderr)
        return 1 if full else 2
    except KeyboardInterrupt:
        print("interrupted: nothing was exported", file=sys.stderr)
        return 130
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
