"""What the registries of named classes share (samplers, training steps): registering a class
under its `name`, and merging the options the classes declare."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def register_named(table: dict[str, Any], cls: Any, kind: str) -> Any:
    """Put `cls` in `table` under `cls.name`; a class without a name, or a second class under
    one name, is a ValueError naming the `kind` ("sampler", "step")."""
    if not cls.name:
        raise ValueError(f"{kind} class {cls.__name__} has no name")
    if cls.name in table and table[cls.name] is not cls:
        raise ValueError(f"{kind} name {cls.name!r} registered twice")
    table[cls.name] = cls
    return cls


def declared_options(classes: Iterable[Any], kind: str) -> dict[str, Any]:
    """Every option the `classes` declare (`cls.options`), by name; classes may share an option,
    but one name declared two different ways is a ValueError."""
    options: dict[str, Any] = {}
    for cls in classes:
        for option in cls.options:
            if options.setdefault(option.name, option) != option:
                raise ValueError(f"{kind} option {option.name!r} declared twice, differently")
    return options
