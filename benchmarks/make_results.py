"""Writes benchmarks/RESULTS.md from result JSON files (``benchmarks/render.py``).

    python benchmarks/make_results.py                       # the default files that exist
    python benchmarks/make_results.py a.json b.json -o OUT.md

Each JSON file carries its ``schema`` and the command that produced it; the default list is
the reference bench (``benchmarks/run_reference.sh``) followed by the other committed results.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from render import render_results  # noqa: E402  (benchmarks/render.py)
import render_startup  # noqa: E402,F401  (registers the start-up, image int8 fidelity and encoder lanes renderers)
import render_serving  # noqa: E402,F401  (registers the batching-tail renderer)
import render_ensemble  # noqa: E402,F401  (registers the ensemble seeds and cost renderers)
DEFAULT = ("results.json", "peers.json", "fuzz.json", "soak.json", "serve_load.json", "serve_batching_tail.json", "serve_soak.json",
           "multi_camera.json",
           "ensemble_seeds.json", "ensemble_cost.json", "ensemble_cost_match.json", "ensemble_cost_library.json",
           "pretrained_reference.json", "startup.json",
           "image_int8_fidelity.json", "image_int8_saturation.json", "text_int8_saturation.json", "encoder_lanes.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="result JSON files (default: the committed ones)")
    parser.add_argument("-o", "--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    files = args.files or [HERE / f for f in DEFAULT if (HERE / f).is_file()]
    args.out.write_text(render_results(files, root=HERE.parent, targets=True), encoding="utf-8")
    print(f"wrote {args.out} from {', '.join(map(str, files))}")


if __name__ == "__main__":
    main()
