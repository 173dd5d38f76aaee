"""Checks of the loaded graphs against the manifest, when a Session starts and on each result.

The manifest says which features each member reads and how many labels there are; the graphs
say what they really take and give. A mismatch is a ``BundleError`` when the Session starts (or,
for an output size the graph leaves dynamic, at the first run), never an ``IndexError`` or a
``KeyError`` in the middle of a prediction.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from mmedge.errors import BundleError
from mmedge.runtime.backends.base import BaseRunner
from mmedge.runtime.bundle import Bundle, MemberInfo
from mmedge.runtime.modalities import Preprocess, encoder_feed, get_modality

__all__ = ["check_graphs", "check_logits", "length_axis_dynamic"]

_FIX = "re-export the bundle"


def _check_encoder_inputs(component: str, runner: BaseRunner, arrays: Mapping[str, np.ndarray]) -> None:
    feed = encoder_feed(component, runner.input_names, list(arrays))
    for meta in runner.inputs:
        array = arrays[feed[meta.name]]
        fixed = [(axis, d) for axis, d in enumerate(meta.shape) if axis and d is not None]
        if array.dtype != meta.dtype or len(meta.shape) != array.ndim or any(array.shape[a] != d for a, d in fixed):
            raise BundleError(f"{component} takes {meta.name!r} as {meta.dtype} {list(meta.shape)}, but the "
                              f"manifest's input spec gives {array.dtype} {list(array.shape)}; {_FIX}")


def _check_encoders(bundle: Bundle, runners: Mapping[str, BaseRunner], preprocessors: Mapping[str, Preprocess]
                    ) -> None:
    for modality, encoder in bundle.encoders.items():
        runner = runners.get(f"encoder.{modality}")
        if runner is None:
            continue
        missing = [t.name for t in encoder.outputs if t.name not in runner.output_names]
        if missing:
            raise BundleError(f"encoder.{modality}: the manifest declares outputs {missing} that the graph does not "
                              f"give (it gives {list(runner.output_names)}); {_FIX}")
        blank = get_modality(modality).blank(bundle.specs[modality])  # what preprocessing gives one blank sample
        _check_encoder_inputs(f"encoder.{modality}", runner, preprocessors[modality]([blank]))


def _check_head(member: MemberInfo, runner: BaseRunner, labels: int) -> None:
    component = f"head.{member.name}"
    if set(member.inputs) != set(runner.input_names):
        raise BundleError(f"{component}: the manifest says it reads {list(member.inputs)}, the graph takes "
                          f"{list(runner.input_names)}; {_FIX}")
    if member.output not in runner.output_names:
        raise BundleError(f"{component} has no output {member.output!r} (it has {list(runner.output_names)}); {_FIX}")
    shape = runner.outputs[runner.output_names.index(member.output)].shape
    if len(shape) != 2:
        raise BundleError(f"{component}: output {member.output!r} has shape {list(shape)}, not (batch, classes); {_FIX}")
    if shape[-1] is not None and shape[-1] != labels:
        raise BundleError(f"{component}: the manifest has {labels} labels but the graph gives {shape[-1]} classes; "
                          f"{_FIX} (labels must list one name per class)")


def check_graphs(bundle: Bundle, runners: Mapping[str, BaseRunner], members: Sequence[MemberInfo],
                 preprocessors: Mapping[str, Preprocess]) -> None:
    """Every loaded graph against the manifest: encoder inputs (the shapes and dtypes the input specs
    give, through each modality's ``preprocessors``) and outputs, head inputs, output and class count.

    Raises:
        BundleError: what the manifest says and what the graph has, named by component.
    """
    _check_encoders(bundle, runners, preprocessors)
    for member in members:
        _check_head(member, runners[f"head.{member.name}"], len(bundle.labels))


def check_logits(member: MemberInfo, logits: np.ndarray, labels: int, batch: int) -> np.ndarray:
    """One member's logits (B, C), checked at run time: shape and finite values.

    Raises:
        BundleError: a shape other than (batch, labels), or NaN/Inf values (a damaged graph).
    """
    if logits.shape != (batch, labels):
        raise BundleError(f"head.{member.name} gave logits of shape {list(logits.shape)}, expected [{batch}, "
                          f"{labels}] ({labels} labels); {_FIX}")
    if not np.isfinite(logits).all():
        raise BundleError(f"head.{member.name} gave NaN or Inf logits on valid inputs; the graph is damaged or "
                          f"overflows at this precision: {_FIX}, or run another precision")
    return logits


def length_axis_dynamic(runners: Mapping[str, BaseRunner], encoder_component: str) -> bool:
    """Whether every loaded graph that reads an encoder's sequence takes any length: the encoder's
    inputs (axis 1), and the heads' inputs fed from its per-step outputs. Only then may its inputs
    (text tokens) be padded to the batch's longest rather than to the spec's full length."""
    encoder = runners.get(encoder_component)
    if encoder is None or any(len(m.shape) < 2 or m.shape[1] is not None for m in encoder.inputs):
        return False
    per_token = {m.name for m in encoder.outputs if len(m.shape) >= 2 and m.shape[1] is None}
    heads = [r for c, r in runners.items() if c.startswith("head")]  # head.<member>, and the merged "heads"
    return all(m.shape[1] is None for r in heads for m in r.inputs if m.name in per_token)
