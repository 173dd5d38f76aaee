"""A camera (or video file) loop on the mmedge runtime: label, probability and latency per frame.

    python examples/camera_app.py --bundle bundle.mmedge --source 0 --text "a person waving"
    python examples/camera_app.py --bundle bundle/ --source clip.avi --max-frames 100

Runs on numpy + onnxruntime (or TensorRT); never imports torch.
"""
from __future__ import annotations

import argparse
import sys

from mmedge.errors import MmedgeError
from mmedge.runtime import Session


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", required=True, help="bundle folder or .mmedge file")
    p.add_argument("--source", default="0", help="camera index (0) or a video file")
    p.add_argument("--text", default=None, help="text paired with every frame (if the bundle takes text)")
    p.add_argument("--precision", default="fp32", help="fp32 | fp16 | int8 | int8-trt (as the bundle has)")
    p.add_argument("--backend", default="auto", help="auto | ort | ort-cuda | ort-trt | tensorrt")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per graph")
    p.add_argument("--every", type=int, default=1, help="predict on every N-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many predictions")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the loop; returns the process exit code."""
    args = parse_args(argv)
    source = int(args.source) if args.source.isdigit() else args.source
    try:
        with Session(args.bundle, precision=args.precision, backend=args.backend, threads=args.threads) as session:
            print(f"backend {session.backend} ({session.backend_reason}), precision {session.precision}", flush=True)
            frames = session.stream(source, text=args.text, every=args.every, max_frames=args.max_frames)
            for i, (frame, pred) in enumerate(frames):
                print(f"frame {i}: {pred.label} p={pred.probability:.3f} "
                      f"{pred.timings_ms['total']:.1f} ms ({frame.shape[1]}x{frame.shape[0]})", flush=True)
    except MmedgeError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
