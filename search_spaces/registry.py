"""Registry of search spaces: a decorator for in-tree spaces, entry points for plugins.

A third-party package adds a space without touching this repository by declaring::

    [project.entry-points."nas.search_spaces"]
    my_space = "my_pkg.spaces:MySpace"

``get_space(name, **settings)`` then constructs it like any built-in space.
"""
from __future__ import annotations

import inspect
from typing import Callable

from .architecture import Architecture, ArchitectureError
from .base import SearchSpace
from .errors import InputError

ENTRY_POINT_GROUP = "nas.search_spaces"
_SPACES: dict[str, type[SearchSpace]] = {}
_entry_points_loaded = False
# In-tree spaces, imported on first look-up so that `import search_spaces` stays light
# (the detector space imports torch) and works without the package being installed.
_BUILTIN_MODULES = ("search_spaces.cpu_detector", "search_spaces.nasbench201")


def register_space(name: str) -> Callable[[type[SearchSpace]], type[SearchSpace]]:
    """Class decorator: ``@register_space("my_space")``; sets ``cls.name``."""

    def decorate(cls: type[SearchSpace]) -> type[SearchSpace]:
        existing = _SPACES.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"search space {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
        cls.name = name
        _SPACES[name] = cls
        return cls

    return decorate


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from .plugins import load_plugins

    load_plugins(_BUILTIN_MODULES, ENTRY_POINT_GROUP, _SPACES, register_space)


def list_spaces() -> list[str]:
    _load_entry_points()
    return sorted(_SPACES)


def get_space_class(name: str) -> type[SearchSpace]:
    _load_entry_points()
    try:
        return _SPACES[name]
    except KeyError:
        raise ArchitectureError(
            f"unknown search space {name!r}; registered: {sorted(_SPACES)} "
            f"(plugins register through the entry-point group {ENTRY_POINT_GROUP!r})") from None


def get_space(name: str, **settings) -> SearchSpace:
    """Construct a registered space with its settings (e.g. ``input_size=320``).
    A setting the space does not have, or a value it refuses with :class:`InputError`,
    raises InputError naming the space (a config's ``space.settings``), so the CLI reports
    it without a traceback."""
    cls = get_space_class(name)
    try:
        inspect.signature(cls).bind(**settings)
    except TypeError as exc:  # a setting the space does not have
        raise InputError(f"space {name!r} settings: {exc}; see its docstring for the settings it takes") from None
    try:
        return cls(**settings)
    except InputError as exc:  # a value the space refuses (a space's own check: other errors are bugs)
        raise InputError(f"space {name!r} settings: {exc}") from None


def parse_architecture(text: str, space: SearchSpace | None = None, **settings) -> Architecture:
    """Read an architecture from a JSON file path, a JSON string or a compact string.

    The result is validated against its space. ``space`` may be given to skip the
    registry look-up.
    """
    import os
    import re

    text = text.strip()
    if not text.startswith("{") and os.path.isfile(text):
        with open(text, encoding="utf-8") as f:
            content = f.read()
        try:
            arch = Architecture.from_json(content)
        except ArchitectureError as exc:
            raise ArchitectureError(f"{text}: {exc}") from None
    elif text.startswith("{"):
        arch = Architecture.from_json(text)
    else:
        # Compact strings start with the space name: "cpu_detector|..." or "toy:...".
        name = re.split(r"[:|/]", text, maxsplit=1)[0]
        sp = space if space is not None and space.name == name else get_space(name, **settings)
        return sp.from_string(text)
    sp = space if space is not None and space.name == arch.space else get_space(arch.space, **settings)
    try:
        sp.validate(arch)
    except ArchitectureError as exc:
        where = text if not text.startswith("{") else "architecture JSON"
        raise ArchitectureError(f"{where}: {exc}") from None
    return arch
