"""Modalities as records: everything mmedge does with one kind of input, in one ``Modality``.

A record holds the modality's spec class, how a user's argument is split, checked and loaded,
its preprocessing and the encoder inputs that gives (per front end), a blank sample for graph
checks, its serving wire tensors, and how a local Hugging Face folder of that modality is read.
``Session``, the graph checks, the manifest schema, training features, serving and the CLI all
iterate over ``modalities()``; none of them names a modality.

Adding a modality is one ``register_modality(Modality(...))`` (here, or in a plug-in) with its
preprocessing; adding an image resize mode is ``mmedge.runtime.preprocess.register_resize_mode``;
adding an audio front end is a row of ``mmedge.runtime.waveform.FRONT_ENDS``.
numpy only: never torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmedge.errors import BundleError, InputError
from mmedge.registry import Registry
from mmedge.runtime import user_inputs as _inputs
from mmedge.runtime import wire as _wire
from mmedge.runtime.limits import DEFAULT_LIMITS, Limits
from mmedge.runtime.specs import AudioSpec, ImageSpec, TextSpec
from mmedge.runtime.waveform import FRONT_ENDS, audio_input_name

__all__ = ["Modality", "DataFormat", "InputOptions", "PreprocessContext", "HFFrontEnd", "TensorSpec", "Preprocess", "MODALITIES",
           "register_modality", "get_modality", "modality_names", "modalities", "encoder_feed", "check_given"]

Preprocess = Callable[[Sequence[Any]], dict[str, np.ndarray]]  # loaded samples -> encoder input arrays (B, ...)

_TRITON_DTYPES = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32",
                  np.dtype(np.int64): "INT64", np.dtype(object): "BYTES", np.dtype(np.float16): "FP16",
                  np.dtype(np.int8): "INT8", np.dtype(np.float64): "FP64", np.dtype(np.bool_): "BOOL"}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the serving contract: name, numpy dtype (``object`` for BYTES) and dims without batch."""

    name: str
    dtype: Any
    dims: tuple[int, ...]

    @property
    def triton_dtype(self) -> str:
        """The Triton wire type (``FP32``, ``BYTES``...)."""
        return _TRITON_DTYPES[np.dtype(self.dtype)]


@dataclass(frozen=True)
class InputOptions:
    """How to read the raw inputs of one call (``Session.predict``'s reading options).

    Attributes:
        image_color_order: ``"RGB"`` or ``"BGR"``, for image arrays.
        audio_rate: Sample rate (Hz) of audio arrays.
        audio_layout: Where the channels of 2-D audio arrays are (None: 1-D clips only).
    """

    image_color_order: str = "RGB"
    audio_rate: Any = None
    audio_layout: Any = None

    def __post_init__(self) -> None:
        _inputs.check_color_order(self.image_color_order)


@dataclass(frozen=True)
class PreprocessContext:
    """What building a modality's preprocessing needs besides its spec.

    Attributes:
        read_file: Reads a file the spec names (a bundle's verified bytes); None: read it from ``folder``.
        folder: Where the spec's files are (named in messages).
        length_bucket: Pad variable-length inputs to the batch's longest, rounded up to a multiple
            of this (0: to the spec's full length; only when every graph takes any length).
    """

    read_file: Callable[[str], bytes] | None = None
    folder: Path | None = None
    length_bucket: int = 0


@dataclass(frozen=True)
class HFFrontEnd:
    """How a local Hugging Face folder of this modality is recognised and fed (``mmedge.hf_folder``).

    Attributes:
        model_input: The ``AutoModel``'s main input (its ``main_input_name``).
        encoder_inputs: The mmedge encoder's inputs (the first one feeds ``model_input``).
        processor_keys: Keys of ``preprocessor_config.json`` that mark a folder of this modality.
        files: Files that mark a folder of this modality when no processor config does.
    """

    model_input: str
    encoder_inputs: tuple[str, ...]
    processor_keys: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataFormat:
    """How dataset rows (JSONL, users' sample dicts) and calibration folders hold a modality.

    Attributes:
        in_file: A JSONL row names a file (relative to the JSONL file) rather than holding the value.
        suffixes: File suffixes of this modality in a calibration folder.
        read: ``read(value, rate) -> sample``: a row's value (a path when ``in_file``, or the value as a
            user gave it) as datasets hold it; ``rate`` is the audio rate datasets keep. Raises
            ``InputError`` saying what was wrong.
        read_file: ``read_file(path, rate) -> samples``: the samples of one calibration-folder file.
    """

    in_file: bool
    suffixes: tuple[str, ...]
    read: Callable[[Any, int], Any]
    read_file: Callable[[Path, int], list]


def _read_text(value: Any, rate: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"text must be a non-empty string, got {type(value).__name__} {str(value)[:40]!r}")
    return value


def _read_wave(value: Any, rate: int) -> np.ndarray:
    """A file, a ``(wave, rate)`` tuple, or a wave already at ``rate``: mono float32 at ``rate``."""
    from mmedge.runtime.audio import load_audio, resample

    wave, sr = (load_audio(value[0], sample_rate=value[1]) if isinstance(value, tuple) and len(value) == 2 else
                load_audio(value, sample_rate=None if isinstance(value, (str, os.PathLike)) else rate))
    return resample(wave, sr, rate)


def _read_image(value: Any, rate: int) -> np.ndarray:
    from mmedge.runtime.preprocess import load_image

    return load_image(value)


def _text_lines(path: Path, rate: int) -> list[str]:
    return [t.strip() for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]


IMAGE_DATA = DataFormat(True, (".png", ".jpg", ".jpeg", ".bmp"), _read_image, lambda p, r: [_read_image(p, r)])
TEXT_DATA = DataFormat(False, (".txt",), _read_text, _text_lines)
AUDIO_DATA = DataFormat(True, (".wav", ".flac"), _read_wave, lambda p, r: [_read_wave(p, r)])


@dataclass(frozen=True)
class Modality:
    """One kind of input, end to end.

    Attributes:
        name: The ``Session.predict`` keyword, the manifest key and the component suffix (``encoder.<name>``).
        spec_class: Its preprocessing spec (``mmedge.runtime.specs``; the fields' ``metadata["check"]``
            are its manifest schema; ``from_hf`` derives one from a Hugging Face folder).
        split: ``split(argument, options, limits) -> items``: one item or a batch, checked and limited.
        load: ``load(items, options, limits) -> samples``: decoded (files read, rates and colours known).
        preprocessor: ``preprocessor(spec, context) -> preprocess``: samples -> encoder input arrays.
        encoder_inputs: ``encoder_inputs(spec)``: the names of the arrays that preprocessing gives.
        blank: ``blank(spec)``: one blank sample (the graph checks run it through preprocessing).
        wire: Its tensors of the serving contract (``mmedge.serve.protocol``).
        from_wire: ``from_wire(tensors, limits) -> samples`` for a request.
        to_wire: ``to_wire(samples) -> tensors`` (the client).
        hf: How a Hugging Face folder of this modality is read (None: no ``hf:PATH`` encoders).
        cli_help: The help of its ``mmedge run`` option.
        cacheable: Equal items always give equal encoder outputs, so a ``Session`` caches them by value.
        data: How dataset rows and calibration folders hold it (None: not in datasets).
    """

    name: str
    spec_class: type
    split: Callable[[Any, InputOptions, Limits], list]
    load: Callable[[list, InputOptions, Limits], list]
    preprocessor: Callable[[Any, PreprocessContext], Preprocess]
    encoder_inputs: Callable[[Any], tuple[str, ...]]
    blank: Callable[[Any], Any]
    wire: tuple[TensorSpec, ...]
    from_wire: Callable[[Mapping[str, np.ndarray], Any], list]
    to_wire: Callable[[Sequence[Any]], dict[str, np.ndarray]]
    hf: HFFrontEnd | None = None
    cli_help: str = ""
    cacheable: bool = False
    data: DataFormat | None = None

    def prepare(self, argument: Any, options: InputOptions = InputOptions(), limits: Limits = DEFAULT_LIMITS) -> list:
        """A user's argument as loaded samples: ``load(split(...))``."""
        return self.load(self.split(argument, options, limits), options, limits)


MODALITIES: Registry[Modality] = Registry("modality")


def register_modality(record: Modality) -> Modality:
    """Registers ``record`` under ``record.name`` (a duplicate is a ``RegistryError``)."""
    return MODALITIES.register(record.name)(record)


def get_modality(name: str) -> Modality:
    """The record of modality ``name``; an unknown name lists the registered ones."""
    return MODALITIES.get(name)


def modality_names() -> tuple[str, ...]:
    """The registered modalities, in registration order (image, text, audio, then plug-ins)."""
    return tuple(MODALITIES)


def modalities() -> tuple[Modality, ...]:
    """Every registered record, in registration order."""
    return tuple(MODALITIES.values())


def encoder_feed(component: str, graph_inputs: Sequence[str], produced: Sequence[str]) -> dict[str, str]:
    """Graph input -> preprocessing array, for an encoder graph: by name, or, for a graph with one input
    under another name (a user's module that named it), the one array preprocessing gives.

    Raises:
        BundleError: the graph takes inputs preprocessing does not give (the bundle's spec and graph disagree).
    """
    if all(n in produced for n in graph_inputs):
        return {n: n for n in graph_inputs}
    if len(graph_inputs) == 1 and len(produced) == 1:
        return {graph_inputs[0]: produced[0]}
    raise BundleError(f"{component} takes inputs {list(graph_inputs)}; its input spec gives {list(produced)}; "
                      "re-export the bundle")


# -- the built-in records --------------------------------------------------------------------


def _image_preprocessor(spec: ImageSpec, context: PreprocessContext) -> Preprocess:
    from mmedge.runtime.preprocess import preprocess_images

    return lambda samples: {"pixel_values": preprocess_images(samples, spec)}  # (B, 3, S, S)


def _text_preprocessor(spec: TextSpec, context: PreprocessContext) -> Preprocess:
    from mmedge.runtime.preprocess import TextTokenizer

    folder = context.folder if context.folder is not None else Path(".")
    data = context.read_file(spec.tokenizer_file) if context.read_file is not None else None
    return TextTokenizer(folder / spec.tokenizer_file, spec, data=data, bucket=context.length_bucket)  # (B, L) int64


def _audio_preprocessor(spec: AudioSpec, context: PreprocessContext) -> Preprocess:
    from mmedge.runtime.audio import preprocess_audio

    name = audio_input_name(spec)
    return lambda samples: {name: preprocess_audio(samples, spec)}  # (B, 1, M, T) log-mel or (B, T) waveform


register_modality(Modality(
    name="image", spec_class=ImageSpec,
    split=lambda value, options, limits: _inputs.image_items(value, limits),
    load=lambda items, options, limits: _inputs.load_images(items, options.image_color_order, limits),
    preprocessor=_image_preprocessor, encoder_inputs=lambda spec: ("pixel_values",),
    blank=lambda spec: np.zeros((spec.size, spec.size, 3), np.uint8),
    wire=(TensorSpec("image", np.uint8, (-1, -1, 3)),), from_wire=_wire.images_from_wire, to_wire=_wire.images_to_wire,
    hf=HFFrontEnd("pixel_values", ("pixel_values",), processor_keys=("image_mean", "image_processor_type")),
    cli_help="Image file (PNG/JPEG).", data=IMAGE_DATA))
register_modality(Modality(
    name="text", spec_class=TextSpec,
    split=lambda value, options, limits: _inputs.text_items(value, limits),
    load=lambda items, options, limits: list(items),
    preprocessor=_text_preprocessor, encoder_inputs=lambda spec: ("input_ids", "attention_mask"),
    blank=lambda spec: "a",
    wire=(TensorSpec("text", object, (1,)),), from_wire=_wire.texts_from_wire, to_wire=_wire.texts_to_wire,
    hf=HFFrontEnd("input_ids", ("input_ids", "attention_mask"), files=("tokenizer.json",)),
    cli_help="Text.", cacheable=True, data=TEXT_DATA))
register_modality(Modality(
    name="audio", spec_class=AudioSpec,
    split=lambda value, options, limits: _inputs.audio_items(value, options.audio_rate, limits, options.audio_layout),
    load=lambda items, options, limits: _inputs.load_waves(items, limits),
    preprocessor=_audio_preprocessor, encoder_inputs=lambda spec: (audio_input_name(spec),),
    blank=lambda spec: (np.zeros(spec.clip_samples, np.float32), spec.sample_rate),
    wire=(TensorSpec("audio", np.float32, (-1,)), TensorSpec("audio_rate", np.int32, (1,))),
    from_wire=_wire.waves_from_wire, to_wire=_wire.waves_to_wire,
    hf=HFFrontEnd("input_values", (FRONT_ENDS["waveform"],), processor_keys=("sampling_rate",)),
    cli_help="Audio file (wav/flac), any sample rate.", data=AUDIO_DATA))


def check_given(names: Sequence[str]) -> None:
    """Every name is a registered modality.

    Raises:
        InputError: an unknown one, with the registered names.
    """
    unknown = [n for n in names if n not in MODALITIES]
    if unknown:
        raise InputError(f"unknown input(s) {unknown}; the modalities are {list(modality_names())}")
