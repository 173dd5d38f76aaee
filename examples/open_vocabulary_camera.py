"""Open-vocabulary recognition on a camera, a video file or a folder of frames, with a CLIP or SigLIP bundle:
each frame is scored against free-text queries with the model's own similarity (``Session.similarity``).

    mmedge export hf:./clip --labels cat,dog --prompt "a photo of a {}" --calib photos/ -o bundles/clip
    python examples/open_vocabulary_camera.py --bundle bundles/clip --source clip.avi \\
        --query "a red mug" --query "a person" --every 5
    python examples/open_vocabulary_camera.py --bundle bundles/clip --source frames/ --query "a person"

The queries are encoded once (the Session's text cache keeps them); per frame only the image tower runs.
Runs on numpy + onnxruntime (or TensorRT); never imports torch.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from mmedge.errors import MmedgeError
from mmedge.runtime import Session
from mmedge.runtime.similarity import Matches, activate, bundle_similarity

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, help="bundle folder or .mmedge file of a CLIP / SigLIP folder")
    p.add_argument("--source", default="0", help="camera index (0), a video file, or a folder of frames")
    p.add_argument("--query", action="append", required=True, help="free text to look for (repeatable)")
    p.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8 | int8-trt (as the bundle has)")
    p.add_argument("--backend", default="auto", help="auto | ort | ort-cuda | ort-trt | tensorrt")
    p.add_argument("--every", type=int, default=1, help="score every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many scored frames")
    return p.parse_args(argv)


def folder_frames(session: Session, folder: Path, queries: list[str], every: int,
                  max_frames: int | None) -> Iterator[tuple[str, Matches]]:
    """(file name, Matches) of every ``every``-th image of ``folder``, in name order."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[::every]
    info = bundle_similarity(session.bundle)  # None: similarity() below says what the bundle lacks
    for path in files[:max_frames]:
        scores = session.similarity(image=str(path), text=queries)[0]  # (Q,)
        yield path.name, Matches(tuple(queries), scores, activate(scores[None], info.activation)[0])


def video_frames(session: Session, source: int | str, queries: list[str], every: int,
                 max_frames: int | None) -> Iterator[tuple[str, Matches]]:
    """(frame index, Matches) of a camera or video file (``Session.stream(..., queries=...)``)."""
    for i, (frame, matches) in enumerate(session.stream(source, queries=queries, every=every, max_frames=max_frames)):
        yield f"{i} ({frame.shape[1]}x{frame.shape[0]})", matches


def main(argv: list[str] | None = None) -> int:
    """Runs the loop; prints the best query and its probability per frame; returns the exit code."""
    args = parse_args(argv)
    source = int(args.source) if args.source.isdigit() else args.source
    try:
        with Session(args.bundle, precision=args.precision, backend=args.backend) as session:
            print(f"backend {session.backend}, precision {session.precision}, queries {args.query}", flush=True)
            if isinstance(source, str) and Path(source).is_dir():
                frames = folder_frames(session, Path(source), args.query, args.every, args.max_frames)
            else:
                frames = video_frames(session, source, args.query, args.every, args.max_frames)
            for where, matches in frames:
                best = int(np.argmax(matches.scores))
                print(f"frame {where}: {matches.best!r} p={matches.probabilities[best]:.3f} "
                      f"score={matches.scores[best]:.3f}", flush=True)
    except MmedgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
