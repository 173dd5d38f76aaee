"""Whether this Linux machine has the device node an accelerator's driver creates, asked before a
backend's library is imported to look for the device.

``auto`` asks OpenVINO for an Intel GPU or NPU before it settles on the CPU, and importing
openvino to ask costs about 35 MiB of resident memory and 0.1-1 s (``benchmarks/startup.py``: a
``mixed`` bundle under ``auto`` held 145 MiB after loading with the import, 108 MiB without). On
Linux, OpenVINO's GPU plugin opens a DRM render node (``/dev/dri/renderD*``; ``/dev/dxg`` under
WSL2) and its NPU plugin an accel node (``/dev/accel/accel*``): where none exists, OpenVINO cannot
see the device either, so the import is skipped. Elsewhere (another OS, a node of any vendor) the
library is asked as before. numpy-free and torch-free.
"""
from __future__ import annotations

import glob
import platform
from typing import Mapping, Sequence

__all__ = ["DEVICE_NODES", "missing_device_node"]

DEVICE_NODES: Mapping[str, Sequence[str]] = {"GPU": ("/dev/dri/renderD*", "/dev/dxg"), "NPU": ("/dev/accel/accel*",)}


def missing_device_node(device: str, nodes: Mapping[str, Sequence[str]] = DEVICE_NODES) -> str | None:
    """Why ``device`` cannot be there (no node its Linux driver would create), or None: a node exists, the
    device kind has no known node, or this is not Linux (then only the backend's library can tell)."""
    patterns = nodes.get(device)
    if platform.system() != "Linux" or not patterns or any(glob.glob(p) for p in patterns):
        return None
    return f"no {device} here: none of the device nodes its driver creates ({', '.join(patterns)})"
