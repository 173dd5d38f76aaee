"""TensorRT optimization profiles (min / opt / max shape per input) from a bundle's manifest.

Every dynamic axis of every component gets a range the runtime can actually send:

| axis       | range (min, opt, max)                       | from                              |
|------------|---------------------------------------------|-----------------------------------|
| `batch`    | 1, ``opt_batch``, ``max_batch``             | ``mmedge build --max-batch``      |
| `tokens`   | 1, ``max_length``, ``max_length``           | ``inputs.text.max_length``        |
| `frames`   | ``n_frames`` (fixed)                        | ``inputs.audio`` (clip, hop)      |
| head axes  | what the encoder outputs at those inputs    | the encoder graph, run once on ORT |

A head's sequence axes (``text_seq`` tokens, ``audio_seq`` steps) follow from its encoder:
the fp32 encoder graph is run on ONNX Runtime (CPU) at batch 1 for the min, opt and max
encoder inputs and the output shapes are read, so a derived axis (the audio CNN's pooled
steps) gets exactly the sizes the encoder produces. No torch, no onnx.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from mmedge.errors import BundleError, ConfigError
from mmedge.runtime.bundle import Bundle, TensorInfo

__all__ = ["ProfileShape", "axis_ranges", "encoder_profiles", "component_profiles", "profiles_to_dict"]

Range = tuple[int, int, int]  # (min, opt, max)


@dataclass(frozen=True)
class ProfileShape:
    """The min / opt / max shapes of one engine input."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_dict(self) -> dict[str, list[int]]:
        """``{"min": [...], "opt": [...], "max": [...]}`` (the build record's form)."""
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def axis_ranges(bundle: Bundle, *, max_batch: int, opt_batch: int = 1) -> dict[str, Range]:
    """Named dynamic axis -> (min, opt, max) for the encoder inputs of ``bundle``."""
    if not 1 <= opt_batch <= max_batch:
        raise ConfigError(f"need 1 <= opt batch <= max batch, got opt {opt_batch}, max {max_batch}")
    ranges: dict[str, Range] = {"batch": (1, opt_batch, max_batch)}
    if "text" in bundle.specs:
        length = int(bundle.specs["text"].max_length)
        ranges["tokens"] = (1, length, length)
    if "audio" in bundle.specs:
        frames = int(bundle.specs["audio"].n_frames)
        ranges["frames"] = (frames, frames, frames)
    return ranges


def _input_profile(info: TensorInfo, ranges: Mapping[str, Range], where: str) -> ProfileShape:
    dims: list[Range] = []
    for axis, dim in enumerate(info.shape):
        if isinstance(dim, int):
            dims.append((dim, dim, dim))
        elif dim in ranges:
            dims.append(ranges[dim])
        else:
            raise BundleError(f"{where} input {info.name!r} axis {axis} is dynamic ({dim!r}) and mmedge build does "
                              f"not know its range (known: {sorted(ranges)}); re-export the bundle with mmedge export")
    return ProfileShape(info.name, *(tuple(d[i] for d in dims) for i in range(3)))


def encoder_profiles(bundle: Bundle, modality: str, ranges: Mapping[str, Range]) -> tuple[ProfileShape, ...]:
    """The profiles of ``encoder.<modality>``'s inputs, from the manifest."""
    return tuple(_input_profile(t, ranges, f"encoder.{modality}") for t in bundle.encoders[modality].inputs)


def _zeros(info: TensorInfo, shape: tuple[int, ...]) -> np.ndarray:
    dtype = np.dtype(info.dtype)
    return np.ones(shape, dtype) if np.issubdtype(dtype, np.integer) else np.zeros(shape, dtype)


def _reference_precision(bundle: Bundle) -> str:
    ok = bundle.precisions()
    if not ok:
        raise BundleError(f"bundle {bundle.source} has no precision with status ok; re-export it")
    return "fp32" if "fp32" in ok else ok[0]


def _output_shapes(bundle: Bundle, modality: str, profiles: tuple[ProfileShape, ...]) -> dict[str, list[tuple]]:
    """Output name -> [shape at min, at opt, at max] of the encoder, each run at batch 1."""
    from mmedge.runtime.backends.ort import create_session

    session = create_session(bundle.graph_path(f"encoder.{modality}", _reference_precision(bundle)), threads=1)
    infos = {t.name: t for t in bundle.encoders[modality].inputs}
    shapes: dict[str, list[tuple]] = {}
    for which in ("min", "opt", "max"):
        feed = {p.name: _zeros(infos[p.name], (1, *getattr(p, which)[1:])) for p in profiles}
        names = [o.name for o in session.get_outputs()]
        for name, value in zip(names, session.run(names, feed)):
            shapes.setdefault(name, []).append(tuple(value.shape))
    return shapes


def _head_input_profile(info: TensorInfo, measured: list[tuple], batch: Range) -> ProfileShape:
    bounds: list[list[int]] = [[], [], []]
    for axis, dim in enumerate(info.shape):
        for i in range(3):
            bounds[i].append(batch[i] if dim == "batch" else int(measured[i][axis]))
    return ProfileShape(info.name, *(tuple(b) for b in bounds))


def component_profiles(bundle: Bundle, *, max_batch: int, opt_batch: int = 1) -> dict[str, tuple[ProfileShape, ...]]:
    """Component (``encoder.image``, ``head.concat``...) -> the profile of each of its inputs.

    Args:
        bundle: An opened bundle.
        max_batch: Largest batch the engines accept.
        opt_batch: The batch TensorRT tunes its kernels for.

    Raises:
        BundleError: a dynamic axis whose range cannot be told.
        ConfigError: ``opt_batch`` outside 1..``max_batch``.
    """
    ranges = axis_ranges(bundle, max_batch=max_batch, opt_batch=opt_batch)
    out: dict[str, tuple[ProfileShape, ...]] = {}
    features: dict[str, tuple[TensorInfo, list[tuple]]] = {}
    for modality, encoder in bundle.encoders.items():
        out[f"encoder.{modality}"] = profiles = encoder_profiles(bundle, modality, ranges)
        measured = _output_shapes(bundle, modality, profiles)
        features.update({t.name: (t, measured[t.name]) for t in encoder.outputs if t.name in measured})
    for member in bundle.members:
        missing = [n for n in member.inputs if n not in features]
        if missing:
            raise BundleError(f"head.{member.name} reads {missing}, which no encoder graph outputs; re-export")
        out[f"head.{member.name}"] = tuple(_head_input_profile(features[n][0], features[n][1], ranges["batch"])
                                           for n in member.inputs)
    if bundle.manifest.ensemble.graphs:  # the merged heads graph (``heads``) reads every member's features
        names = dict.fromkeys(n for m in bundle.members for n in m.inputs)
        out["heads"] = tuple(_head_input_profile(features[n][0], features[n][1], ranges["batch"]) for n in names)
    return out


def profiles_to_dict(profiles: tuple[ProfileShape, ...]) -> dict[str, Any]:
    """Input name -> ``{"min", "opt", "max"}`` (the build record's ``profiles``)."""
    return {p.name: p.to_dict() for p in profiles}
