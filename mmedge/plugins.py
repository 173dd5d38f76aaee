"""Plug-ins: code outside mmedge that registers encoders, fusion heads or recipes.

A plug-in is a Python module that calls ``register_encoder`` / ``register_fusion_head`` /
``RECIPES.register`` when imported. The CLI imports those named by ``--plugin MODULE`` (any
command) and every entry point of the ``mmedge.plugins`` group, before the command runs.
Checkpoints record the plug-in modules their encoders and heads come from
(``plugin_records``); loading one whose plug-ins are missing names them (``check_plugins``).
"""
from __future__ import annotations

import importlib
import sys
from importlib import metadata
from typing import Any, Iterable, Mapping, Sequence

from mmedge.errors import CheckpointError, ConfigError

__all__ = ["ENTRY_POINT_GROUP", "load_plugins", "load_entry_points", "split_plugin_args", "plugin_records",
           "check_plugins"]

ENTRY_POINT_GROUP = "mmedge.plugins"
FLAG = "--plugin"


def load_plugins(modules: Iterable[str]) -> list[str]:
    """Imports each plug-in module (once); returns their names.

    Raises:
        ConfigError: a module that cannot be imported (the import error is named).
    """
    loaded = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - any failure while importing a user's module
            raise ConfigError(f"plug-in module {name!r} cannot be imported ({type(e).__name__}: {e}); check the "
                              "name, put its folder on PYTHONPATH or install its package") from e
        loaded.append(name)
    return loaded


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Loads every installed entry point of ``group`` (``[project.entry-points."mmedge.plugins"]``).

    Raises:
        ConfigError: an entry point that fails to load (its name and package are given).
    """
    names = []
    for ep in metadata.entry_points(group=group):
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001
            dist = getattr(ep.dist, "name", "?")
            raise ConfigError(f"mmedge plug-in entry point {ep.name!r} ({ep.value}, package {dist}) failed to load "
                              f"({type(e).__name__}: {e}); fix or uninstall that package") from e
        names.append(ep.name)
    return names


def split_plugin_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Pulls every ``--plugin MODULE`` / ``--plugin=MODULE`` out of a command line.

    Returns:
        (plug-in modules, the other arguments in order).

    Raises:
        ConfigError: a ``--plugin`` without a module name.
    """
    modules, rest, it = [], [], iter(args)
    for arg in it:
        if arg == FLAG:
            value = next(it, None)
            if value is None or value.startswith("-"):
                raise ConfigError(f"{FLAG} needs a module name, e.g. {FLAG} my_package.mmedge_plugin")
            modules.append(value)
        elif arg.startswith(FLAG + "="):
            modules.append(arg[len(FLAG) + 1:])
        else:
            rest.append(arg)
    return modules, rest


def _origin(obj: Any) -> str:
    return getattr(obj, "__module__", "") or ""


def _external(module: str) -> bool:
    return module != "mmedge" and not module.startswith("mmedge.")


def plugin_records(recipe: Any) -> list[dict[str, Any]]:
    """The plug-in modules a recipe's encoders and heads come from, for ``recipe.json``.

    Returns:
        ``[{"module": "my_plugin", "encoders": [...], "heads": [...]}]`` (empty for mmedge's own).
    """
    from mmedge.encoders import ENCODERS
    from mmedge.fusion import FUSION_HEADS
    from mmedge.hf_folder import is_hf_name

    records: dict[str, dict[str, list[str]]] = {}
    for name in sorted(set(recipe.encoders.values())):
        if not is_hf_name(name) and name in ENCODERS and _external(_origin(ENCODERS[name])):
            records.setdefault(_origin(ENCODERS[name]), {"encoders": [], "heads": []})["encoders"].append(name)
    for name in sorted({mb.head for mb in recipe.members}):
        if name in FUSION_HEADS and _external(_origin(FUSION_HEADS[name])):
            records.setdefault(_origin(FUSION_HEADS[name]), {"encoders": [], "heads": []})["heads"].append(name)
    return [{"module": m, **names} for m, names in sorted(records.items())]


def check_plugins(meta: Mapping[str, Any], where: str) -> None:
    """Raises ``CheckpointError`` naming the plug-in to load when a recorded name is not registered.

    Args:
        meta: The checkpoint's ``recipe.json`` (its ``plugins`` list).
        where: The checkpoint folder, for the message.
    """
    from mmedge.encoders import ENCODERS
    from mmedge.fusion import FUSION_HEADS

    for record in meta.get("plugins") or []:
        module = str(record.get("module", "?"))
        missing = [f"encoder {n!r}" for n in record.get("encoders", []) if n not in ENCODERS]
        missing += [f"fusion head {n!r}" for n in record.get("heads", []) if n not in FUSION_HEADS]
        if missing:
            state = "is imported but did not register them" if module in sys.modules else "is not loaded"
            raise CheckpointError(
                f"checkpoint {where} needs {', '.join(missing)} from plug-in module {module!r}, which {state}. "
                f"Pass {FLAG} {module} on the command line (mmedge export {where} {FLAG} {module}), import {module} "
                f"before loading it in Python, or install the package that provides it (entry point group "
                f"{ENTRY_POINT_GROUP!r})")
