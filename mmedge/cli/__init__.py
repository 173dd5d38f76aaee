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
| replay   | replay (rosbag -> predictions)  | device, `[ros]`     |
"""
from __future__ import annotations

import importlib
from typing import List, Optional

import typer
from typer.core import TyperGroup

__all__ = ["app", "main", "COMMAND_MODULES"]

COMMAND_MODULES: tuple[str, ...] = ("train", "export", "device", "build", "bench", "demo", "triton", "serve", "replay")


class PluginGroup(TyperGroup):
    """Imports plug-ins before any command: ``--plugin MODULE`` anywhere on the command line (every
    command takes it, before or after the command name) and the ``mmedge.plugins`` entry points."""

    def parse_args(self, ctx, args):  # noqa: D102 - click's hook
        from mmedge.cli.console import fail
        from mmedge.errors import MmedgeError
        from mmedge.plugins import load_entry_points, load_plugins, split_plugin_args

        try:
            modules, rest = split_plugin_args(args)
            load_entry_points()
            load_plugins(modules)
        except MmedgeError as e:
            fail(e)
        return super().parse_args(ctx, rest)


app = typer.Typer(help="mmedge: multimodal fusion models from PyTorch to the edge.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=PluginGroup)


@app.callback()
def _plugins(plugin: Optional[List[str]] = typer.Option(  # noqa: B008 - Typer's declaration style
        None, "--plugin", metavar="MODULE",
        help="Import MODULE first: a plug-in that registers encoders, fusion heads or recipes (repeatable; "
             "accepted after any command too). Installed `mmedge.plugins` entry points load always.")) -> None:
    """mmedge: multimodal fusion models from PyTorch to the edge."""

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}").register(app)


def main() -> None:
    """Console entry point."""
    app()
