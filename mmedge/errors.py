"""Typed errors raised at mmedge's API boundaries.

Every error says what was wrong and what to do about it. They are importable
without torch, so the runtime and the CLI share them.
"""
from __future__ import annotations

__all__ = [
    "MmedgeError",
    "ConfigError",
    "RegistryError",
    "DataError",
    "InputError",
    "CheckpointError",
    "BundleError",
    "ExportError",
    "ParityError",
    "CalibrationError",
    "BackendUnavailable",
    "EngineMismatch",
    "EngineBuildError",
    "CudaError",
    "BagError",
]


class MmedgeError(Exception):
    """Base class of every error mmedge raises on purpose."""


class ConfigError(MmedgeError, ValueError):
    """A recipe, config value or CLI flag is invalid."""


class RegistryError(MmedgeError, KeyError):
    """An unknown or duplicate name in a registry (encoders, fusion heads, recipes...)."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DataError(MmedgeError, ValueError):
    """A dataset file or row is invalid (missing file, unknown label, missing modality)."""


class InputError(MmedgeError, ValueError):
    """An input passed to a model or runtime session is invalid."""


class CheckpointError(MmedgeError):
    """A checkpoint folder is missing, incomplete or of another format version."""


class BundleError(MmedgeError):
    """A bundle is missing, tampered with, or of a format this runtime does not know."""


class ExportError(MmedgeError):
    """Exporting a model to ONNX or quantizing it failed."""


class ParityError(ExportError):
    """An exported graph does not reproduce the PyTorch outputs within tolerance."""


class CalibrationError(MmedgeError, ValueError):
    """Calibration data does not match the model's inputs."""


class BackendUnavailable(MmedgeError, RuntimeError):
    """The requested inference backend (or precision) is not available here."""


class EngineMismatch(MmedgeError):
    """A compiled engine was built for another TensorRT version, GPU or bundle."""


class EngineBuildError(MmedgeError):
    """TensorRT could not parse a bundle graph or build an engine from it."""


class CudaError(MmedgeError, RuntimeError):
    """A CUDA runtime call (through cuda-python) returned an error code on a working GPU."""


class BagError(MmedgeError):
    """A rosbag that cannot be read (missing, truncated, not a bag) or an output bag that cannot be written."""
