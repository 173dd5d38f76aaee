"""The ``mmedge`` command line (Typer + rich).

``app`` is built here; each command module (one per command group) defines ``register(app)``
and is registered below, one way, in one place. ``python -m mmedge``, ``python -m mmedge.cli``
and the ``mmedge`` script all run ``main()``, so they list the same commands.

| module   | commands                        | side                |
|----------|---------------------------------|---------------------|
| train    | recipes, train                  | workstation         |
| export   | export                          | workstation         |
| device   | inspect, run                    | device (torch-free) |
| build    | build                           | device (TensorRT)   |
| bench    | bench                           | device              |
| demo     | demo                            | both, end to end    |
| triton   | triton (model repository)       | server (torch-free) |
| serve    | serve (Triton via PyTriton)     | server, `[serve]`   |
"""
from __future__ import annotations

import importlib

import typer

__all__ = ["app", "main", "COMMAND_MODULES"]

COMMAND_MODULES: tuple[str, ...] = ("train", "export", "device", "build", "bench", "demo", "triton", "serve")

app = typer.Typer(help="mmedge: multimodal fusion models from PyTorch to the edge.", no_args_is_help=True,
                  pretty_exceptions_enable=False)

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    """Console entry point."""
    app()
