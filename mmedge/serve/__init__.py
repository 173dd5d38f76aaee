"""mmedge.serve: bundles on NVIDIA Triton Inference Server.

- ``mmedge triton BUNDLE -o REPO``: a Triton model repository (``model_repository``).
- ``mmedge serve BUNDLE``: a real Triton server through PyTriton (``server``).
- ``mmedge.client``: predictions from either, as ``mmedge.runtime.Prediction``.

The wire contract is ``protocol``. PyTriton and tritonclient are imported lazily (the
``[serve]`` extra); this package imports without them.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ServeConfig", "Server", "serve", "RepositoryConfig", "write_repository", "WireLimits"]

_LAZY = {
    "ServeConfig": "mmedge.serve.serve_config",
    "Server": "mmedge.serve.server",
    "serve": "mmedge.serve.server",
    "RepositoryConfig": "mmedge.serve.model_repository",
    "write_repository": "mmedge.serve.model_repository",
    "WireLimits": "mmedge.serve.protocol",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mmedge.serve' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
